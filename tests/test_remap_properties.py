"""Property tests: random corruptions of a real resnet18 state dict are classified exactly."""

from __future__ import annotations

import json

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resnetzoo
from resnetzoo.errors import CheckpointError
from resnetzoo.remap import diagnose

NBT = "num_batches_tracked"
MODEL = resnetzoo.resnet18()
BASE = MODEL.state_dict()
KEYS = [k for k in BASE if not k.endswith(NBT)]
WRAPPERS = ["", "module.", "_orig_mod.", "model.", "module._orig_mod."]
CONTAINERS = [None, "state_dict", "model", "state_dict_ema", "model_state_dict"]
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reshaped(t: torch.Tensor) -> torch.Tensor:
    shape = list(t.shape) or [1]
    shape[0] += 1
    return torch.zeros(shape, dtype=t.dtype)


@st.composite
def corruptions(draw):
    chosen = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=12))
    kinds = draw(st.lists(st.sampled_from(["delete", "reshape", "rename"]), min_size=len(chosen), max_size=len(chosen)))
    suffixes = draw(st.lists(st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True), min_size=len(chosen), max_size=len(chosen)))
    junk = draw(st.lists(st.from_regex(r"junk_[a-z0-9_]{0,6}(\.[a-z0-9_]{1,6}){0,3}", fullmatch=True), unique=True, max_size=4))
    return {
        "plan": list(zip(chosen, kinds, suffixes, strict=True)),
        "junk": junk,
        "wrapper": draw(st.sampled_from(WRAPPERS)),
        "container": draw(st.sampled_from(CONTAINERS)),
        "drop_nbt": draw(st.booleans()),
    }


@SETTINGS
@given(corruptions())
def test_corruptions_are_classified(case):
    sd = {k: v for k, v in BASE.items() if not (case["drop_nbt"] and k.endswith(NBT))}
    deleted, reshaped, renamed_from, renamed_to = set(), set(), set(), set()
    for key, kind, suffix in case["plan"]:
        if kind == "delete":
            del sd[key]
            deleted.add(key)
        elif kind == "reshape":
            sd[key] = _reshaped(sd[key])
            reshaped.add(key)
        else:
            sd[f"{key}_{suffix}"] = sd.pop(key)
            renamed_from.add(key)
            renamed_to.add(f"{key}_{suffix}")
    for name in case["junk"]:
        sd[name] = torch.zeros(2)
    source = {case["wrapper"] + k: v for k, v in sd.items()}
    if case["container"]:
        source = {case["container"]: source, "epoch": 5, "optimizer": {"lr": 0.1}}

    report = diagnose(MODEL, source)

    gone = deleted | renamed_from
    # A counter is harmless when only it is absent; with its norm's statistics gone it is missing.
    nbt_missing = {k[: -len("running_mean")] + NBT for k in gone if k.endswith("running_mean")} if case["drop_nbt"] else set()
    assert report.convention == "torchvision"
    assert set(report.missing) == gone | nbt_missing
    assert {m.key for m in report.mismatched} == reshaped
    assert set(report.unexpected) == renamed_to | set(case["junk"])
    all_nbt = {k for k in BASE if k.endswith(NBT)}
    assert set(report.filled) == (all_nbt - nbt_missing if case["drop_nbt"] else set())
    assert set(report.matched) == set(BASE) - set(report.missing) - reshaped - set(report.filled)
    assert [p for p, _ in report.stripped_prefixes] == [p + "." for p in case["wrapper"].split(".") if p]
    assert report.unwrapped == ([case["container"]] if case["container"] else [])
    assert report.ok == (not gone and not reshaped and not case["junk"])
    assert str(report).startswith(report.summary)
    json.dumps(report.to_dict())


tensors = st.builds(
    lambda shape: torch.zeros(shape),
    st.lists(st.integers(min_value=0, max_value=3), max_size=4),
)
values = st.one_of(tensors, st.integers(), st.text(max_size=5), st.none())
mappings = st.recursive(
    st.dictionaries(st.text(max_size=30), values, max_size=8),
    lambda children: st.dictionaries(
        st.one_of(st.sampled_from(["state_dict", "model", "module", "ema"]), st.text(max_size=10)), children, max_size=4
    ),
    max_leaves=20,
)


@SETTINGS
@given(mappings)
def test_arbitrary_objects_never_crash(obj):
    try:
        report = diagnose(MODEL, obj)
    except CheckpointError as exc:
        assert str(exc)
        return
    assert not report.matched or set(report.matched) <= set(BASE)
    assert str(report) and json.dumps(report.to_dict())
