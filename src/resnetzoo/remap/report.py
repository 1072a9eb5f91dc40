"""LoadReport: what a checkpoint holds compared with a model, and hints about why.

:func:`build_report` compares a checkpoint already renamed to native names
(:class:`~resnetzoo.remap.conventions.Remapped`) with a model's state dict and
sorts every key into matched, missing, unexpected or shape-mismatched, then adds
hints a person can act on: the nearest model key for a typo, the architecture a
checkpoint was saved from (``layer3 has 23 blocks, the model 6``), a classifier
with another number of classes, BatchNorm statistics that were never saved.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from resnetzoo.remap.conventions import WRAPPER_PREFIXES, Remapped

__all__ = [
    "LoadReport",
    "Rename",
    "ShapeMismatch",
    "block_counts",
    "build_report",
    "catalog_keys",
    "guess_arch",
]

_NBT = "num_batches_tracked"
_BLOCK_KEY = re.compile(r"layer(\d+)\.(\d+)\.")
# Enough for a reader to see the pattern; the rest is counted ("… and 40 more").
_MAX_LINES = 10
_MAX_NEAR_MISS_HINTS = 5


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


def _truncated(lines: Sequence[str], limit: int = _MAX_LINES) -> list[str]:
    shown = [f"  {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"  … and {len(lines) - limit} more")
    return shown


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("h") else "s")


def block_counts(keys: Sequence[str] | Mapping[str, Any]) -> tuple[int, ...]:
    """Count residual blocks per stage from native keys (``layer{s}.{b}.…``).

    Returns:
        blocks in ``layer1``, ``layer2`` …, e.g. ``(3, 4, 23, 3)`` for ResNet-101;
        ``()`` when no key names a block.
    """
    last: dict[int, int] = {}
    for key in keys:
        match = _BLOCK_KEY.match(key)
        if match:
            stage, index = int(match[1]), int(match[2])
            last[stage] = max(last.get(stage, -1), index)
    return tuple(last.get(s, -1) + 1 for s in range(1, max(last, default=0) + 1))


def _body_shapes(shapes: Mapping[str, tuple[int, ...]], head_prefix: str = "fc") -> dict[str, tuple[int, ...]]:
    """Shapes without the classifier and ``num_batches_tracked``: what defines an architecture."""
    return {k: s for k, s in shapes.items() if not _is_head(k, head_prefix) and not k.endswith(_NBT)}


@functools.cache
def _catalog() -> tuple[tuple[str, dict[str, tuple[int, ...]]], ...]:
    """Body shapes of every registered architecture, built once on the meta device (no memory)."""
    import resnetzoo  # here, not at the top: the package imports remap while it loads

    catalog = []
    for name in resnetzoo.list_models():
        try:
            with torch.device("meta"):
                model = resnetzoo.create_model(name, num_classes=0)
        except Exception:  # a broken registration must not break a report
            continue
        catalog.append((name, _body_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()})))
    return tuple(catalog)


def catalog_keys() -> frozenset[str]:
    """Every key of every registered architecture, without classifier and ``num_batches_tracked``.

    Used to detect a checkpoint's convention before its architecture is known.
    """
    return frozenset(k for _, shapes in _catalog() for k in shapes)


def guess_arch(shapes: Mapping[str, Sequence[int]], *, exact: bool = True) -> str | None:
    """Name the registered architecture whose tensors a checkpoint holds.

    Args:
        shapes: native key → tensor shape of the checkpoint (classifier and
            ``num_batches_tracked`` are ignored).
        exact: only an architecture with exactly these keys and shapes; with
            ``False`` the one sharing the most ``(key, shape)`` pairs, net of
            the pairs either side lacks (at least one pair in common).

    Returns:
        the architecture name (``"resnet101"``), or ``None`` when none fits.
    """
    body = _body_shapes({k: tuple(s) for k, s in shapes.items()})
    if not body:
        return None
    best_name, best_score = None, None
    for name, arch_shapes in _catalog():
        if arch_shapes == body:
            return name
        if not exact:
            common = sum(arch_shapes.get(k) == s for k, s in body.items())
            score = 2 * common - len(body) - len(arch_shapes)
            if common and (best_score is None or score > best_score):
                best_name, best_score = name, score
    return best_name


def _classes(shapes: Mapping[str, tuple[int, ...]], head_prefix: str) -> int | None:
    shape = shapes.get(f"{head_prefix}.weight")
    return shape[0] if shape else None


def _head_hint(
    ckpt: Mapping[str, tuple[int, ...]], model: Mapping[str, tuple[int, ...]], head_prefix: str, head_left: bool
) -> str:
    ckpt_n, model_n = _classes(ckpt, head_prefix), _classes(model, head_prefix)
    if ckpt_n and model_n:
        what = f"classifier has {ckpt_n} classes, the model {model_n}"
    elif ckpt_n:
        what = f"checkpoint has a {ckpt_n}-class classifier, the model none"
    elif model_n:
        what = f"checkpoint has no classifier ({head_prefix}.*), the model a {model_n}-class one"
    else:
        what = f"the classifier ({head_prefix}.*) differs"
    if not model_n:
        action = "its keys ignored" if head_left else "load with ignore_head=True to ignore its keys"
    elif head_left:
        action = "head left at its initialisation"
    else:
        action = "load with ignore_head=True to leave the model's head at its initialisation"
    return f"{what}: {action}"


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
    name = guess_arch(ckpt) or (guess_arch(ckpt, exact=False) if diffs else None)
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
    # architecture hint, not by its resemblance to some other block's key.
    hints = []
    for key in unexpected:
        candidates = [m for m in missing if _module_of(m) == _module_of(key)]
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.85)
        if close:
            hints.append(f"unexpected {key!r} is close to missing {close[0]!r}: a typo or a renamed layer?")
            if len(hints) == _MAX_NEAR_MISS_HINTS:
                break
    return hints


def _bn_stats_hint(missing: Sequence[str], ckpt: Mapping[str, tuple[int, ...]]) -> str | None:
    # A norm whose affine weight was saved but not its running mean: saved from
    # named_parameters() (or a filter) instead of state_dict().
    # Only a 1-d weight is a norm's: in another architecture the same name may be a conv.
    stripped = [
        k[: -len(".running_mean")]
        for k in missing
        if k.endswith(".running_mean") and len(ckpt.get(k[: -len(".running_mean")] + ".weight", ())) == 1
    ]
    if not stripped:
        return None
    return (
        f"BatchNorm running statistics (running_mean/running_var) are absent for {len(stripped)} "
        f"layers (e.g. {stripped[0]}) though their weights are there: the checkpoint was probably "
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


def _metadata_hints(metadata: Mapping[str, str], model_arch: str | None, stride_in_1x1: bool | None) -> list[str]:
    hints = []
    saved_arch = metadata.get("arch")
    if saved_arch and model_arch and saved_arch != model_arch:
        hints.append(f"the file was saved from {saved_arch}, the model is {model_arch}")
    # transformers' config calls v1 downsample_in_bottleneck, mmpretrain style='caffe'; the
    # weights alone cannot tell v1 from v1.5, so only a file that says so gets this hint.
    v1 = metadata.get("downsample_in_bottleneck", "").lower() == "true" or metadata.get("style") == "caffe"
    if v1 and stride_in_1x1 is not True:
        hints.append(
            "the checkpoint is ResNet v1 (stride on the first 1x1 conv); resnetzoo models are v1.5 "
            "(stride on the 3x3) unless built with stride_in_1x1=True: the weights load either way "
            "but the outputs differ"
        )
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
        matched: model keys found in the checkpoint with the right shape.
        renamed: every renamed key.
        missing: model keys absent from the checkpoint (``num_batches_tracked`` excluded).
        unexpected: checkpoint keys (native names) the model does not have.
        mismatched: keys in both with different shapes.
        filled: ``num_batches_tracked`` buffers absent from the checkpoint, filled with zeros.
        hints: sentences explaining likely causes.
        metadata: the checkpoint file's metadata.
        head_prefix: module name of the classifier (``fc``).
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
    filled: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    head_prefix: str = "fc"
    loaded: bool = False

    def problem_keys(self, *, ignore_head: bool = False) -> list[str]:
        """Keys that stop a strict load: missing, unexpected, shape-mismatched.

        With ``ignore_head=True`` the classifier's keys are left out.
        """
        keys = [*self.missing, *self.unexpected, *(m.key for m in self.mismatched)]
        return [k for k in keys if not (ignore_head and _is_head(k, self.head_prefix))]

    @property
    def ok(self) -> bool:
        """``True`` when a strict load holds: nothing missing, unexpected or of another shape."""
        return not self.problem_keys()

    @property
    def head_mismatch(self) -> bool:
        """``True`` when the classifier differs (other class count, or present on one side only)."""
        return any(_is_head(k, self.head_prefix) for k in self.problem_keys())

    @property
    def summary(self) -> str:
        """One line: how many model tensors matched, what is wrong, and whether it loads strictly."""
        total = len(self.matched) + len(self.missing) + len(self.mismatched) + len(self.filled)
        problems = []
        for count, word in (
            (len(self.missing), "missing"),
            (len(self.unexpected), "unexpected"),
        ):
            if count:
                problems.append(f"{count} {word}")
        if self.mismatched:
            problems.append(_plural(len(self.mismatched), "shape mismatch"))
        if self.head_mismatch:
            problems.append("classifier differs")
        if not self.loaded:
            verdict = "loads strictly" if self.ok else "does not load strictly"
        elif self.ok:
            verdict = "loaded"
        elif not self.problem_keys(ignore_head=True):
            verdict = "loaded except the classifier"
        else:
            verdict = "partly loaded: the rest keeps its initial values"
        what = f"{len(self.matched)}/{total} model tensors matched"
        if self.filled:
            what += f" (+{len(self.filled)} {_NBT} filled)"
        return f"{self.model_arch or 'model'} <- {self.origin} [{self.convention}]: {what}" + (
            f"; {', '.join(problems)}" if problems else ""
        ) + f" — {verdict}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of every field plus ``ok``, ``head_mismatch`` and ``summary``."""
        data = asdict(self)
        data["stripped_prefixes"] = [{"prefix": p, "keys": n} for p, n in self.stripped_prefixes]
        data["mismatched"] = [
            {"key": m.key, "checkpoint_shape": list(m.checkpoint_shape), "model_shape": list(m.model_shape)}
            for m in self.mismatched
        ]
        data.update(ok=self.ok, head_mismatch=self.head_mismatch, summary=self.summary)
        return data

    def __str__(self) -> str:
        def mark(key: str) -> str:
            return f"{key}  (head)" if _is_head(key, self.head_prefix) else key

        lines = [self.summary, f"  source      {self.origin}", f"  convention  {self.convention}"]
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
            lines += _truncated([f"{r.source} -> {r.target}" for r in self.renamed])
        if self.missing:
            lines.append(f"Missing from the checkpoint ({len(self.missing)}):")
            lines += _truncated([mark(k) for k in self.missing])
        if self.unexpected:
            lines.append(f"Unexpected (in the checkpoint, not in the model) ({len(self.unexpected)}):")
            lines += _truncated([mark(k) for k in self.unexpected])
        if self.mismatched:
            rows = [("key", "checkpoint", "model")] + [
                (m.key, str(tuple(m.checkpoint_shape)), str(tuple(m.model_shape)))
                for m in self.mismatched
            ]
            widths = [max(len(row[i]) for row in rows[: _MAX_LINES + 1]) for i in range(3)]
            table = [
                f"{k:<{widths[0]}}  {c:<{widths[1]}}  {m:<{widths[2]}}"
                + ("  (head)" if _is_head(k, self.head_prefix) else "")
                for k, c, m in rows
            ]
            lines.append(f"Shape mismatches ({len(self.mismatched)}):")
            lines += _truncated([t.rstrip() for t in table], _MAX_LINES + 1)
        if self.filled:
            lines.append(f"Filled with zeros ({len(self.filled)} {_NBT} absent from the checkpoint; harmless)")
        if self.hints:
            lines.append("Hints:")
            lines += [f"  - {h}" for h in self.hints]
        return "\n".join(lines)


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
) -> LoadReport:
    """Compare a remapped checkpoint with a model's state dict.

    Args:
        remapped: the checkpoint in native names (:func:`~resnetzoo.remap.conventions.to_native`).
        model_state: the model's ``state_dict()`` (tensors may live on the meta device).
        origin: where the checkpoint came from, for the report.
        metadata: the checkpoint file's metadata (safetensors header), if any.
        model_arch: the model's architecture name, if known.
        head_prefix: module name of the model's classifier.
        head_left: the caller leaves a differing classifier at its initialisation
            (``ignore_head=True`` or ``strict=False``); only changes the hint's wording.
        stride_in_1x1: the model's stride placement (``True`` for v1), if known; ``None``
            is taken as v1.5, the default everywhere.

    Returns:
        the :class:`LoadReport`, with ``loaded=False``.
    """
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

    hints = list(remapped.notes)
    hints += _metadata_hints(metadata or {}, model_arch, stride_in_1x1)
    head_problem = any(_is_head(k, head_prefix) for k in [*missing, *unexpected, *(m.key for m in mismatched)])
    if head_problem:
        hints.append(_head_hint(ckpt, model, head_prefix, head_left))
    body_problem = any(
        not _is_head(k, head_prefix) for k in [*missing, *unexpected, *(m.key for m in mismatched)]
    )
    if body_problem:
        arch_hint = _arch_hint(ckpt, model, model_arch)
        hints += [h for h in (arch_hint, _in_chans_hint(mismatched), _bn_stats_hint(missing, ckpt)) if h]
        if arch_hint is None:  # keys of another architecture are not typos
            hints += _near_miss_hints(missing, unexpected)
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
        filled=filled,
        hints=hints,
        metadata=dict(metadata or {}),
        head_prefix=head_prefix,
    )
