"""``resnet18(pretrained=True)`` end to end: the real weight record, the real Hub code path.

The Hub cache is laid out by hand in a temp dir and read by a fresh interpreter with
``HF_HUB_OFFLINE=1`` set before import, exactly as an offline user with a warm cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save as safetensors_bytes

import resnetzoo

_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, torch, resnetzoo

    x = torch.load(sys.argv[1], weights_only=True)
    out = {}
    model = resnetzoo.resnet18(pretrained=True).eval()
    with torch.no_grad():
        out["logits"] = model(x).tolist()
    out["cfg"] = model.weight_spec.name
    out["report_ok"] = model.load_report.ok

    finetune = resnetzoo.create_model("resnet18.tv_in1k", pretrained=True, num_classes=200)
    out["head_mismatch"] = finetune.load_report.head_mismatch
    out["head_hint"] = " ".join(finetune.load_report.hints)
    out["backbone_equal"] = torch.equal(finetune.conv1.weight, model.conv1.weight)
    out["fc_shape"] = list(finetune.fc.weight.shape)

    gray = resnetzoo.resnet18(pretrained=True, in_chans=1)
    out["gray_conv1"] = torch.allclose(gray.conv1.weight, model.conv1.weight.sum(1, keepdim=True))
    four = resnetzoo.resnet18(pretrained=True, in_chans=4)
    out["four_conv1"] = list(four.conv1.weight.shape)

    start = time.perf_counter()
    try:
        resnetzoo.resnet50(pretrained=True)
    except resnetzoo.WeightsUnavailableError as exc:
        out["missing"] = str(exc)
    out["missing_seconds"] = time.perf_counter() - start
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory, make_hub_repo):
    root = tmp_path_factory.mktemp("pretrained")
    reference = torchvision.models.resnet18().eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in reference.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.1 + 0.01)
    weights = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    spec = resnetzoo.get_weights("resnet18")
    make_hub_repo(
        root / "hub",
        spec.hf_hub_id,
        {spec.hf_filename: safetensors_bytes(weights)},
        commit="1111111111111111111111111111111111111111",
    )
    x = torch.randn(2, 3, 64, 64, generator=gen)
    torch.save(x, root / "x.pt")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(root / "hub"),
        "RESNETZOO_CACHE": str(root / "empty-cache"),
        "PYTHONPATH": str(Path(resnetzoo.__file__).parents[1]),
    }
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(root / "x.pt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    with torch.no_grad():
        expected = reference(x)
    return json.loads(done.stdout.strip().splitlines()[-1]), expected


def test_pretrained_true_loads_the_default_record_from_the_hub_cache(offline_run):
    out, expected = offline_run
    assert out["cfg"] == "resnet18.tv_in1k"
    assert out["report_ok"]
    torch.testing.assert_close(torch.tensor(out["logits"]), expected, rtol=1e-5, atol=1e-5)


def test_pretrained_with_other_num_classes_keeps_a_fresh_head(offline_run):
    out, _ = offline_run
    assert out["head_mismatch"] and out["backbone_equal"]
    assert out["fc_shape"] == [200, 512]
    assert "1000" in out["head_hint"] and "200" in out["head_hint"]


def test_pretrained_stem_adapts_to_other_input_channels(offline_run):
    out, _ = offline_run
    assert out["gray_conv1"]
    assert out["four_conv1"] == [64, 4, 7, 7]


def test_offline_and_uncached_weights_fail_fast_with_guidance(offline_run):
    out, _ = offline_run
    assert out["missing_seconds"] < 5
    assert "resnet50.tv_in1k" in out["missing"]
    assert "load_weights" in out["missing"]


@pytest.mark.parametrize("word, meaning", [("true", "default"), ("True", "default"), (" TRUE ", "default"),
                                           ("false", None), ("False", None), ("none", None), ("NONE", None)])
def test_the_words_true_false_and_none_are_read_in_any_case(word, meaning):
    source = resnetzoo.weights.pretrained_source("resnet50", word)
    if meaning is None:
        assert source is None
    else:
        assert source is resnetzoo.weights.get_weights("resnet50")


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_pretrained_is_refused_in_one_line(empty):
    with pytest.raises(ValueError) as info:
        resnetzoo.resnet18(pretrained=empty)
    assert str(info.value) == (
        f"pretrained={empty!r} is empty; pass None or 'none' for no weights, True or 'true' for the default "
        f"weights, a tag, a checkpoint path, an hf-hub: reference or a URL"
    )


def test_pretrained_must_be_bool_or_tag():
    with pytest.raises(TypeError, match="pretrained must be"):
        resnetzoo.resnet18(pretrained=1)
    with pytest.raises(ValueError, match="tv_in1k"):
        resnetzoo.resnet18(pretrained="no_such_tag")
    with pytest.raises(ValueError, match="names tag"):
        resnetzoo.create_model("resnet18.tv_in1k", pretrained="tv2_in1k")


_NO_NETWORK = textwrap.dedent(
    """
    import json, socket, sys, time

    real = socket.getaddrinfo

    def lookup(host, *args, **kwargs):  # a machine without network: no name resolves
        if host in ("127.0.0.1", "localhost", "::1"):
            return real(host, *args, **kwargs)
        if sys.argv[1] == "hang":
            time.sleep(120)  # ... or a resolver that never answers
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    socket.getaddrinfo = lookup
    import huggingface_hub, resnetzoo.models  # importing is not what is measured

    start = time.perf_counter()
    try:
        resnetzoo.models.resnet50(pretrained=True)
        out = {"error": None}
    except Exception as exc:
        out = {"error": type(exc).__name__, "message": str(exc)}
    out["seconds"] = time.perf_counter() - start
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_offline_without_any_variable_fails_within_five_seconds(tmp_path):
    # No RESNETZOO_OFFLINE/HF_HUB_OFFLINE: the machine simply has no network. huggingface_hub
    # would retry five times with back-off (30-40 s); one probe per host settles it.
    env = {k: v for k, v in os.environ.items() if k not in ("RESNETZOO_OFFLINE", "HF_HUB_OFFLINE")}
    env.update(
        HF_HUB_CACHE=str(tmp_path / "hub"),
        HF_HOME=str(tmp_path / "hf-home"),
        RESNETZOO_CACHE=str(tmp_path / "cache"),
        PYTHONPATH=str(Path(resnetzoo.__file__).parents[1]),
    )
    runs = {
        mode: subprocess.Popen([sys.executable, "-c", _NO_NETWORK, mode], env=env, stdout=subprocess.PIPE, text=True)
        for mode in ("fail", "hang")
    }
    for mode, run in runs.items():
        stdout, _ = run.communicate(timeout=180)
        out = json.loads(stdout.strip().splitlines()[-1])
        assert out["error"] == "WeightsUnavailableError", (mode, out)
        assert out["seconds"] < 5, (mode, out["seconds"])
        message = out["message"]
        assert "1. Hugging Face Hub" in message and "2. URL" in message
        assert "cannot reach huggingface.co" in message and "cannot reach download.pytorch.org" in message
        assert message.rstrip().endswith(
            "If this machine is offline, set RESNETZOO_OFFLINE=1 (or HF_HUB_OFFLINE=1): then only the caches "
            "are used, and nothing waits for the network."
        )


def test_a_mistyped_keyword_fails_before_any_weights_are_fetched(monkeypatch, tmp_path):
    # The weights are fetched before the model is built; a typo must still be the first error.
    monkeypatch.setenv("RESNETZOO_OFFLINE", "1")
    monkeypatch.setenv("RESNETZOO_CACHE", str(tmp_path))
    with pytest.raises(TypeError, match=r"resnet18\(\) got an unexpected keyword argument 'num_clases'"):
        resnetzoo.resnet18(pretrained=True, num_clases=3)
    with pytest.raises(resnetzoo.WeightsUnavailableError):
        resnetzoo.resnet18(pretrained=True, num_classes=3)
