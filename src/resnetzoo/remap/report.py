"""LoadReport: what a checkpoint holds compared with a model, and hints about why.

:func:`build_report` compares a checkpoint already renamed to native names
(:class:`~resnetzoo.remap.conventions.Remapped`) with a model's state dict and
sorts every key into matched, missing, unexpected or shape-mismatched, then adds
hints a person can act on: the nearest model key for a typo, the architecture a
checkpoint was saved from (``layer3 has 23 blocks, the model 6``), a classifier
with another number of classes, BatchNorm statistics that were never saved.

Names and shapes are not all: values that cannot be right (NaN, an integer tensor
where a float belongs, a meta tensor) and recorded settings the model does not
compute (v1 stride placement, another activation) are named too
(:mod:`resnetzoo.remap.checks`), and either makes a strict load refuse.

The work and the report are bounded by the model's and the checkpoint's size: a
key naming ``layer100000000`` is one unexpected key, not a hundred million stages.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from resnetzoo.infer import block_counts, guess_arch
from resnetzoo.remap.checks import InvalidTensor, ModelFacts, config_conflicts, invalid_tensors
from resnetzoo.remap.conventions import WRAPPER_PREFIXES, Remapped

__all__ = [
    "AUDIENCES",
    "LoadReport",
    "Rename",
    "ShapeMismatch",
    "build_report",
]

_NBT = "num_batches_tracked"
# Enough for a reader to see the pattern; the rest is counted ("… and 40 more").
_MAX_LINES = 10
_MAX_NEAR_MISS_HINTS = 5
_MAX_NEAR_MISS_CHECKS = 256  # unexpected keys compared with the missing ones, at most
_MAX_KEY_SHOWN = 120  # characters of a key shown in a report line
_MAX_HEAD_KEYS = 3  # head keys named in the head hint

#: Who reads a report: a Python caller or a shell user of the ``resnetzoo`` command.
#: A hint whose advice is a keyword in Python (``ignore_head=True``) and a flag on the
#: command line (``--ignore-head``) is kept in both wordings; see :meth:`LoadReport.render`.
AUDIENCES = ("python", "cli")
# How each audience is told to leave a differing classifier out.
_IGNORE_HEAD = {"python": "load with ignore_head=True", "cli": "pass --ignore-head"}


@dataclass(frozen=True)
class Rename:
    """A checkpoint key renamed to a native key by the named rule."""

    source: str
    target: str
    rule: str


@dataclass(frozen=True)
class ShapeMismatch:
    """A key present in both whose tensor shapes differ."""

    key: str
    checkpoint_shape: tuple[int, ...]
    model_shape: tuple[int, ...]


# ------------------------------------------------------------------ helpers
def _is_head(key: str, head_prefix: str) -> bool:
    return key.startswith(head_prefix + ".")


def _short(key: str) -> str:
    return key if len(key) <= _MAX_KEY_SHOWN else key[: _MAX_KEY_SHOWN - 1] + "…"


def _truncated(lines: Sequence[str], limit: int = _MAX_LINES) -> list[str]:
    shown = [f"  {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"  … and {len(lines) - limit} more")
    return shown


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("h") else "s")


def _classes(shapes: Mapping[str, tuple[int, ...]], head_prefix: str) -> int | None:
    shape = shapes.get(f"{head_prefix}.weight")
    return shape[0] if shape else None


def _keys(keys: Sequence[str]) -> str:
    shown = ", ".join(_short(k) for k in keys[:_MAX_HEAD_KEYS])
    return shown + (f" and {len(keys) - _MAX_HEAD_KEYS} more" if len(keys) > _MAX_HEAD_KEYS else "")


def _head_keys_differ(
    missing: Sequence[str], unexpected: Sequence[str], mismatched: Sequence[ShapeMismatch], head_prefix: str
) -> str:
    """What differs in a classifier whose class counts agree: the keys, by name."""
    parts = []
    absent = [k for k in missing if _is_head(k, head_prefix)]
    extra = [k for k in unexpected if _is_head(k, head_prefix)]
    other = [m for m in mismatched if _is_head(m.key, head_prefix)]
    if absent:
        parts.append(f"the checkpoint lacks {_keys(absent)}")
    if extra:
        parts.append(f"the model has no {_keys(extra)}")
    parts += [f"{_short(m.key)} is {m.checkpoint_shape} in the checkpoint, {m.model_shape} in the model"
              for m in other[:_MAX_HEAD_KEYS]]
    return "; ".join(parts)


def _head_hint(
    ckpt: Mapping[str, tuple[int, ...]],
    model: Mapping[str, tuple[int, ...]],
    head_prefix: str,
    head_left: bool,
    differing: str,
) -> dict[str, str]:
    """The head hint for each audience (:data:`AUDIENCES`).

    ``differing`` names the head keys that differ (:func:`_head_keys_differ`), for
    when the class counts cannot tell what differs.
    """
    ckpt_w, model_w = ckpt.get(f"{head_prefix}.weight"), model.get(f"{head_prefix}.weight")
    if ckpt_w and model_w and len(ckpt_w) == len(model_w) == 2 and ckpt_w[1] != model_w[1]:
        # Another input width means another network before the head: ignore_head cannot help.
        hint = (
            f"the checkpoint's classifier takes {ckpt_w[1]} features, the model's {model_w[1]}: the whole "
            f"network differs, not only its head (another depth or width); build the architecture the "
            f"checkpoint was saved from"
        )
        return dict.fromkeys(AUDIENCES, hint)
    ckpt_n, model_n = _classes(ckpt, head_prefix), _classes(model, head_prefix)
    if ckpt_n == model_n:  # the same class count (or no weight on either side): name the keys
        count = f"{model_n} classes on both sides" if model_n is not None else "no weight on either side"
        what = f"the classifier ({head_prefix}.*) differs though it has {count}: {differing}"
    elif ckpt_n and model_n:
        what = f"classifier has {ckpt_n} classes, the model {model_n}"
    elif ckpt_n:
        what = f"checkpoint has a {ckpt_n}-class classifier, the model none"
    else:
        what = f"checkpoint has no classifier ({head_prefix}.*), the model a {model_n}-class one"
    if not model_n:
        return {a: f"{what}: " + ("its keys ignored" if head_left else f"{_IGNORE_HEAD[a]} to ignore its keys")
                for a in AUDIENCES}
    if head_left:
        return dict.fromkeys(AUDIENCES, f"{what}: head left at its initialisation")
    return {a: f"{what}: {_IGNORE_HEAD[a]} to leave the model's head at its initialisation" for a in AUDIENCES}


def _arch_hint(
    ckpt: Mapping[str, tuple[int, ...]], model: Mapping[str, tuple[int, ...]], model_arch: str | None
) -> str | None:
    ckpt_blocks, model_blocks = block_counts(ckpt), block_counts(model)
    diffs = [
        f"layer{i} has {c} blocks, the model {m}"
        for i, (c, m) in enumerate(zip(ckpt_blocks, model_blocks, strict=False), start=1)
        if c != m
    ]
    if len(ckpt_blocks) != len(model_blocks):
        diffs.append(f"{len(ckpt_blocks)} stages, the model {len(model_blocks)}")
    # A checkpoint with a key or two missing is still recognisably its architecture.
    name = guess_arch(ckpt)
    if name is not None and name != model_arch:
        detail = "; ".join(diffs) if diffs else "same blocks per stage, other widths or stem"
        return f"this checkpoint looks like {name} ({detail})" + (f", the model is {model_arch}" if model_arch else "")
    if diffs:
        return f"the checkpoint has {ckpt_blocks} blocks per stage, the model {model_blocks}: " + "; ".join(diffs)
    return None


def _module_of(key: str) -> str:
    # "layer3.6.bn1.weight" -> "layer3.6"; "conv1.0.weight" -> "conv1"
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0].startswith("layer") else parts[0]


def _near_miss_hints(missing: Sequence[str], unexpected: Sequence[str]) -> list[str]:
    # Only within one block or top-level module: a typo or renamed layer keeps its place,
    # while a key of an extra block (layer3.6 in a 6-block stage) is explained by the
    # architecture hint, not by its resemblance to some other block's key. Bounded: a
    # string comparison costs the product of the lengths, so only keys of a real
    # length, and a few hundred of them, are compared.
    by_module: dict[str, list[str]] = {}
    for m in missing:
        by_module.setdefault(_module_of(m), []).append(m)
    hints = []
    candidates_checked = 0
    for key in unexpected:
        if len(key) > _MAX_KEY_SHOWN or candidates_checked >= _MAX_NEAR_MISS_CHECKS:
            continue
        candidates = by_module.get(_module_of(key), [])
        if not candidates:
            continue
        candidates_checked += 1
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.85)
        if close:
            hints.append(f"unexpected {key!r} is close to missing {close[0]!r}: a typo or a renamed layer?")
            if len(hints) == _MAX_NEAR_MISS_HINTS:
                break
    return hints


def _norms(shapes: Mapping[str, tuple[int, ...]]) -> tuple[set[str], set[str]]:
    """``(norm modules with running statistics, norm-like modules without)``, from names and shapes.

    A norm-like module has a 1-d ``weight`` (a conv or linear weight has more dimensions).
    """
    with_stats = {k[: -len(".running_mean")] for k in shapes if k.endswith(".running_mean")}
    affine = {k[: -len(".weight")] for k, s in shapes.items() if k.endswith(".weight") and len(s) == 1}
    return with_stats, affine - with_stats


def _norm_hint(
    ckpt: Mapping[str, tuple[int, ...]], model: Mapping[str, tuple[int, ...]], facts: ModelFacts
) -> str | None:
    ckpt_stats, ckpt_plain = _norms(ckpt)
    model_stats, model_plain = _norms(model)
    # BatchNorm checkpoint, norms without statistics in the model (GroupNorm): the weights fit.
    trained_bn = sorted(ckpt_stats & model_plain)
    if trained_bn:
        kinds = sorted({facts.module_type(m + ".weight") or "" for m in trained_bn} - {""}) or ["a norm without statistics"]
        return (
            f"the checkpoint was trained with BatchNorm (it has running statistics for {len(ckpt_stats)} norm "
            f"layers, e.g. {_short(trained_bn[0])}), the model uses {', '.join(kinds)}: the weights fit but the "
            f"outputs would differ; build the model with norm='bn' (the default)"
        )
    # Norms with weights but no statistics, where the model keeps statistics.
    absent = sorted(ckpt_plain & model_stats)
    if not absent:
        return None
    kinds = sorted({facts.module_type(m + ".weight") or "" for m in absent} - {""}) or ["BatchNorm"]
    if not ckpt_stats:
        return (
            f"the checkpoint has no running statistics for any of its {len(absent)} norm layers, which the "
            f"model's {', '.join(kinds)} layers keep: it was trained with GroupNorm or another norm that keeps "
            f"none (then build the model with norm='gn'), or saved from parameters() rather than state_dict() "
            f"(then in eval mode these layers would use mean 0, var 1)"
        )
    return (
        f"BatchNorm running statistics (running_mean/running_var) are absent for {len(absent)} "
        f"layers (e.g. {_short(absent[0])}) though their weights are there: the checkpoint was probably "
        f"saved from parameters() rather than state_dict(); in eval mode those layers would use "
        f"mean 0, var 1"
    )


def _in_chans_hint(mismatched: Sequence[ShapeMismatch]) -> str | None:
    for m in mismatched:
        if m.key in ("conv1.weight", "conv1.0.weight") and m.checkpoint_shape[0] == m.model_shape[0]:
            return (
                f"the checkpoint's stem takes {m.checkpoint_shape[1]} input channels, the model "
                f"{m.model_shape[1]}: build the model with in_chans={m.checkpoint_shape[1]}"
            )
    return None


def _metadata_hints(metadata: Mapping[str, str], model_arch: str | None) -> list[str]:
    hints = []
    saved_arch = metadata.get("arch")
    if saved_arch and model_arch and saved_arch != model_arch:
        hints.append(f"the file was saved from {saved_arch}, the model is {model_arch}")
    return hints


# ----------------------------------------------------------------- the report
@dataclass
class LoadReport:
    """How a checkpoint fits a model, key by key.

    Attributes:
        origin: where the checkpoint came from (path, URL, ``hf-hub:…`` or ``<state dict>``).
        convention: name of the detected (or forced) naming convention.
        model_arch: the model's architecture name, when it has one.
        unwrapped: container keys descended into, outermost first.
        stripped_prefixes: ``(prefix, number of keys)`` per wrapper prefix removed.
        rules: rule name → number of keys it renamed.
        matched: model keys found in the checkpoint with the right shape and usable values.
        renamed: every renamed key.
        missing: model keys absent from the checkpoint (``num_batches_tracked`` excluded).
        unexpected: checkpoint keys (native names) the model does not have.
        mismatched: keys in both with different shapes.
        invalid: keys whose name and shape fit but whose values cannot be right (NaN or
            infinite values, an integer or complex tensor where the model holds floats, a
            meta-device or sparse tensor); never loaded.
        conflicts: settings recorded with the checkpoint that the model does not compute
            (v1 vs v1.5, the activation, a downsampling first stage), each with the fix.
        filled: ``num_batches_tracked`` buffers absent from the checkpoint, filled with zeros.
        hints: sentences explaining likely causes, with advice worded for Python.
        cli_hints: the command line's wording of the hints whose advice differs there
            (``--ignore-head`` for ``ignore_head=True``), keyed by the Python wording;
            :meth:`hints_for` and :meth:`render` use it.
        metadata: the checkpoint file's metadata.
        head_prefix: module name of the classifier (``fc``).
        same_names_as: other conventions whose names are identical for this checkpoint
            (``["timm"]`` for a torchvision ResNet-50): it may come from either.
        recovered: Python objects other than tensors found with ``unsafe_objects="stub"``,
            by their place in the checkpoint, as plain data (nothing of them ran).
        loaded: whether weights were copied into the model.
    """

    origin: str
    convention: str
    model_arch: str | None = None
    unwrapped: list[str] = field(default_factory=list)
    stripped_prefixes: list[tuple[str, int]] = field(default_factory=list)
    rules: dict[str, int] = field(default_factory=dict)
    matched: list[str] = field(default_factory=list)
    renamed: list[Rename] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[ShapeMismatch] = field(default_factory=list)
    invalid: list[InvalidTensor] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    cli_hints: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    head_prefix: str = "fc"
    same_names_as: list[str] = field(default_factory=list)
    recovered: dict[str, Any] = field(default_factory=dict)
    loaded: bool = False

    def problem_keys(self, *, ignore_head: bool = False) -> list[str]:
        """Keys that stop a strict load: missing, unexpected, shape-mismatched, invalid values.

        With ``ignore_head=True`` the classifier's keys are left out.
        """
        keys = [*self.missing, *self.unexpected, *(m.key for m in self.mismatched), *(i.key for i in self.invalid)]
        return [k for k in keys if not (ignore_head and _is_head(k, self.head_prefix))]

    @property
    def ok(self) -> bool:
        """``True`` when a strict load holds: every key fits with usable values, and no setting conflicts."""
        return not self.problem_keys() and not self.conflicts

    @property
    def head_mismatch(self) -> bool:
        """``True`` when the classifier differs (other class count, or present on one side only)."""
        return any(_is_head(k, self.head_prefix) for k in self.problem_keys())

    @property
    def convention_label(self) -> str:
        """The convention as shown: ``"torchvision = timm"`` when the names cannot tell the two apart."""
        return " = ".join([self.convention, *self.same_names_as])

    @property
    def summary(self) -> str:
        """One line: how many model tensors matched, what is wrong, and what was (or would be) loaded."""
        total = len(self.matched) + len(self.missing) + len(self.mismatched) + len(self.invalid) + len(self.filled)
        problems = []
        for count, word in (
            (len(self.missing), "missing"),
            (len(self.unexpected), "unexpected"),
            (len(self.invalid), "unusable"),
        ):
            if count:
                problems.append(f"{count} {word}")
        if self.mismatched:
            problems.append(_plural(len(self.mismatched), "shape mismatch"))
        if self.head_mismatch:
            problems.append("classifier differs")
        if self.conflicts:
            problems.append(_plural(len(self.conflicts), "setting") + " the model does not compute")
        # Model tensors that keep their initial values: everything not matched or filled.
        kept = [*self.missing, *(m.key for m in self.mismatched), *(i.key for i in self.invalid)]
        if not self.loaded:
            verdict = "loads strictly" if self.ok else "does not load strictly"
        elif not kept:
            verdict = "loaded"
            if self.unexpected:
                verdict += f" every model tensor; {_plural(len(self.unexpected), 'checkpoint tensor')} not used"
        elif all(_is_head(k, self.head_prefix) for k in kept):
            verdict = "loaded except the classifier"
        else:
            verdict = "partly loaded: " + (
                "1 model tensor keeps its initial value" if len(kept) == 1 else f"{len(kept)} model tensors keep their initial values"
            )
        if self.loaded and self.conflicts:
            verdict += ", but the outputs will differ (see conflicts)"
        what = f"{len(self.matched)}/{total} model tensors matched"
        if self.filled:
            what += f" (+{len(self.filled)} {_NBT} filled)"
        return f"{self.model_arch or 'model'} <- {self.origin} [{self.convention_label}]: {what}" + (
            f"; {', '.join(problems)}" if problems else ""
        ) + f" — {verdict}"

    def hints_for(self, audience: str = "python") -> list[str]:
        """The hints worded for ``audience``: ``"python"`` (as :attr:`hints`) or ``"cli"``.

        Raises:
            ValueError: ``audience`` is not one of :data:`AUDIENCES`.
        """
        if audience not in AUDIENCES:
            raise ValueError(f"audience must be one of {', '.join(AUDIENCES)}, got {audience!r}")
        if audience == "python":
            return list(self.hints)
        return [self.cli_hints.get(h, h) for h in self.hints]

    def to_dict(self, *, audience: str = "python") -> dict[str, Any]:
        """Return a JSON-ready dict of every field plus ``ok``, ``head_mismatch`` and ``summary``.

        Args:
            audience: ``"python"`` or ``"cli"``: the wording of ``hints`` (see :meth:`hints_for`).
        """
        hints = self.hints_for(audience)
        data = asdict(self)
        del data["cli_hints"]
        data["hints"] = hints
        data["stripped_prefixes"] = [{"prefix": p, "keys": n} for p, n in self.stripped_prefixes]
        data["mismatched"] = [
            {"key": m.key, "checkpoint_shape": list(m.checkpoint_shape), "model_shape": list(m.model_shape)}
            for m in self.mismatched
        ]
        data["invalid"] = [{"key": i.key, "problem": i.problem} for i in self.invalid]
        data.update(ok=self.ok, head_mismatch=self.head_mismatch, summary=self.summary)
        return data

    def __str__(self) -> str:
        return self.render()

    def render(self, *, audience: str = "python") -> str:
        """The report as text: the summary line, then the details, then the hints.

        Args:
            audience: ``"python"`` (``str(report)``) or ``"cli"``: who is told what to
                do in the hints (``ignore_head=True`` or ``--ignore-head``).
        """
        hints = self.hints_for(audience)

        def mark(key: str) -> str:
            return f"{_short(key)}  (head)" if _is_head(key, self.head_prefix) else _short(key)

        lines = [self.summary, f"  source      {self.origin}", f"  convention  {self.convention}"]
        if self.same_names_as:
            verb = "uses" if len(self.same_names_as) == 1 else "use"
            lines[-1] += f" ({' and '.join(self.same_names_as)} {verb} the same names here: the file may come from either)"
        if self.model_arch:
            lines.append(f"  model       {self.model_arch}")
        if self.unwrapped:
            lines.append("  unwrapped   checkpoint" + "".join(f"[{k!r}]" for k in self.unwrapped))
        for prefix, count in self.stripped_prefixes:
            lines.append(f"  stripped    {prefix!r} from {count} keys ({WRAPPER_PREFIXES.get(prefix, 'wrapper')})")
        if self.rules:
            width = max(map(len, self.rules))
            lines += ["Rules applied (keys renamed):", *(f"  {n:<{width}}  {c}" for n, c in self.rules.items())]
        if self.renamed:
            lines.append(f"Renamed ({len(self.renamed)}):")
            lines += _truncated([f"{_short(r.source)} -> {r.target}" for r in self.renamed])
        if self.missing:
            lines.append(f"Missing from the checkpoint ({len(self.missing)}):")
            lines += _truncated([mark(k) for k in self.missing])
        if self.unexpected:
            lines.append(f"Unexpected (in the checkpoint, not in the model) ({len(self.unexpected)}):")
            lines += _truncated([mark(k) for k in self.unexpected])
        if self.mismatched:
            rows = [("key", "checkpoint", "model")] + [
                (m.key, str(tuple(m.checkpoint_shape)), str(tuple(m.model_shape)))
                for m in self.mismatched[:_MAX_LINES]
            ]
            rows = [(_short(k), _short(c), m) for k, c, m in rows]
            widths = [max(len(row[i]) for row in rows) for i in range(3)]
            table = [
                f"{k:<{widths[0]}}  {c:<{widths[1]}}  {m:<{widths[2]}}"
                + ("  (head)" if _is_head(k, self.head_prefix) else "")
                for k, c, m in rows
            ]
            if len(self.mismatched) > _MAX_LINES:
                table.append(f"… and {len(self.mismatched) - _MAX_LINES} more")
            lines.append(f"Shape mismatches ({len(self.mismatched)}):")
            lines += [f"  {t.rstrip()}" for t in table]
        if self.invalid:
            lines.append(f"Unusable values (not loaded) ({len(self.invalid)}):")
            lines += _truncated([f"{mark(i.key)}: {i.problem}" for i in self.invalid])
        if self.conflicts:
            lines.append("Conflicts (the checkpoint computes differently from the model):")
            lines += [f"  - {c}" for c in self.conflicts]
        if self.filled:
            lines.append(f"Filled with zeros ({len(self.filled)} {_NBT} absent from the checkpoint; harmless)")
        if self.recovered:
            lines.append("Recovered as plain data (unsafe_objects='stub'; nothing from the file ran):")
            lines += _truncated([f"{where}: {_describe(view)}" for where, view in self.recovered.items()])
        if hints:
            lines.append("Hints:")
            lines += [f"  - {h}" for h in hints]
        return "\n".join(lines)


def _describe(view: Any) -> str:
    text = json.dumps(view, ensure_ascii=False, default=str)
    return text if len(text) <= 200 else text[:199] + "…"


def build_report(
    remapped: Remapped,
    model_state: Mapping[str, torch.Tensor],
    *,
    origin: str,
    metadata: Mapping[str, str] | None = None,
    model_arch: str | None = None,
    head_prefix: str = "fc",
    head_left: bool = False,
    stride_in_1x1: bool | None = None,
    facts: ModelFacts | None = None,
    recovered: Mapping[str, Any] | None = None,
) -> LoadReport:
    """Compare a remapped checkpoint with a model's state dict.

    Args:
        remapped: the checkpoint in native names (:func:`~resnetzoo.remap.conventions.to_native`).
        model_state: the model's ``state_dict()`` (tensors may live on the meta device).
        origin: where the checkpoint came from, for the report.
        metadata: the checkpoint file's metadata (safetensors header, config fields), if any.
        model_arch: the model's architecture name, if known.
        head_prefix: module name of the model's classifier.
        head_left: the caller leaves a differing classifier at its initialisation
            (``ignore_head=True`` or ``strict=False``); only changes the hint's wording.
        stride_in_1x1: the model's stride placement (``True`` for v1), if known and
            ``facts`` is not given; ``None`` is taken as v1.5, the default everywhere.
        facts: what else is known of the model (:func:`~resnetzoo.remap.checks.model_facts`):
            its activations and norms, for the settings and norm checks.
        recovered: objects recovered with ``unsafe_objects="stub"``, for the report.

    Returns:
        the :class:`LoadReport`, with ``loaded=False``.
    """
    if facts is None:
        facts = ModelFacts(stride_in_1x1=stride_in_1x1)
    ckpt = {k: tuple(v.shape) for k, v in remapped.state_dict.items()}
    model = {k: tuple(v.shape) for k, v in model_state.items()}
    matched, missing, mismatched, filled = [], [], [], []
    for key, shape in model.items():
        if key not in ckpt:
            # A counter absent next to its norm's statistics is harmless (zero-filled);
            # absent with the whole norm it is just one more missing key.
            norm = key[: -len(_NBT)]
            (filled if key.endswith(_NBT) and norm + "running_mean" in ckpt else missing).append(key)
        elif ckpt[key] != shape:
            mismatched.append(ShapeMismatch(key, ckpt[key], shape))
        else:
            matched.append(key)
    unexpected = [k for k in ckpt if k not in model]
    invalid = invalid_tensors(remapped.state_dict, model_state, matched)
    unusable = {i.key for i in invalid}
    matched = [k for k in matched if k not in unusable]

    hints = list(remapped.notes)
    hints += _metadata_hints(metadata or {}, model_arch)
    problems = [*missing, *unexpected, *(m.key for m in mismatched)]
    head_problem = any(_is_head(k, head_prefix) for k in problems)
    cli_hints = {}
    if head_problem:
        differing = _head_keys_differ(missing, unexpected, mismatched, head_prefix)
        head = _head_hint(ckpt, model, head_prefix, head_left, differing)
        hints.append(head["python"])
        if head["cli"] != head["python"]:
            cli_hints[head["python"]] = head["cli"]
    body_problem = any(not _is_head(k, head_prefix) for k in problems)
    norm_hint = _norm_hint(ckpt, model, facts)
    if body_problem:
        arch_hint = _arch_hint(ckpt, model, model_arch)
        hints += [h for h in (arch_hint, _in_chans_hint(mismatched), norm_hint) if h]
        if arch_hint is None and norm_hint is None:  # keys of another architecture are not typos
            hints += _near_miss_hints(missing, unexpected)
    if invalid:
        hints.append(
            f"{_plural(len(invalid), 'tensor')} of the checkpoint cannot be right (see Unusable values): the "
            f"file is damaged, or was saved from a model that diverged in training (NaN) or was never "
            f"materialised (meta); such tensors are never loaded"
        )
    if filled:
        hints.append(f"{len(filled)} {_NBT} buffers absent from the checkpoint: filled with zeros (harmless)")

    return LoadReport(
        origin=origin,
        convention=remapped.convention.name,
        model_arch=model_arch,
        unwrapped=list(remapped.unwrapped),
        stripped_prefixes=list(remapped.stripped),
        rules=remapped.rule_counts(),
        matched=matched,
        renamed=[Rename(*r) for r in remapped.renames],
        missing=missing,
        unexpected=unexpected,
        mismatched=mismatched,
        invalid=invalid,
        conflicts=config_conflicts(metadata or {}, facts),
        filled=filled,
        hints=hints,
        cli_hints=cli_hints,
        metadata=dict(metadata or {}),
        head_prefix=head_prefix,
        same_names_as=list(remapped.same_names_as),
        recovered=dict(recovered or {}),
    )
