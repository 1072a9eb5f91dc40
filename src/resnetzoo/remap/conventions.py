"""Checkpoint naming conventions as data: rename rules, wrapper prefixes, and detection.

A checkpoint saved by another library names the same tensors differently
(``resnet.encoder.stages.0.layers.0.layer.0.convolution.weight`` in Hugging Face
transformers is ``layer1.0.conv1.weight`` here). Each :class:`Convention` is a list
of named :class:`RenameRule` s (regular expression → template) that turn one
library's names into resnetzoo's native names, which are torchvision's (and timm's,
for the ResNet-D variants). Renaming is by name only, never by key order:
transformers registers ``shortcut`` before ``layer``, so orders differ.

:func:`to_native` is the whole pipeline: unwrap a training checkpoint
(``{"state_dict": …, "epoch": …}``), strip wrapper prefixes (``module.``,
``_orig_mod.``, ``model.``), then pick the convention that maps the most keys onto
the model's keys and apply it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from resnetzoo.errors import CheckpointError

__all__ = [
    "CONTAINER_KEYS",
    "CONVENTIONS",
    "NATIVE",
    "TIMM",
    "WRAPPER_PREFIXES",
    "Convention",
    "Remapped",
    "RenameRule",
    "get_convention",
    "strip_wrappers",
    "to_native",
    "unwrap",
]

#: Keys under which training checkpoints nest the weights, tried in this order.
CONTAINER_KEYS: tuple[str, ...] = (
    "state_dict",
    "model",
    "model_state_dict",
    "state_dict_ema",
    "model_ema",
    "ema",
    "module",
)

#: Prefixes added by wrappers around the network, with who adds them.
WRAPPER_PREFIXES: dict[str, str] = {
    "module.": "DataParallel / DistributedDataParallel",
    "_orig_mod.": "torch.compile",
    "model.": "a Lightning module (self.model = network)",
}

# Training checkpoints are rarely nested deeper than this; the limit stops cycles.
_MAX_NESTING = 4
_MAX_DIGITS = 6


@dataclass(frozen=True)
class RenameRule:
    """One named rename: keys matching ``pattern`` at their start get ``template`` there.

    Attributes:
        name: what the rule does, in words (shown in reports).
        pattern: regular expression matched at the start of a key; the matched part
            is replaced and the rest (``.weight``, ``.running_mean`` …) kept.
        template: ``str.format`` template filled with the pattern's named groups.
        offsets: integer added to a named group before formatting; other libraries
            count stages or layers from 0 where torchvision counts from 1.
    """

    name: str
    pattern: str
    template: str
    offsets: Mapping[str, int] = field(default_factory=dict)

    def apply(self, key: str) -> str | None:
        """Return ``key`` renamed, or ``None`` when the rule does not match it.

        A number longer than six digits in an offset group is no real stage or layer:
        the rule does not match (and Python's ``int()`` of thousands of digits is never tried).
        """
        match = re.match(self.pattern, key)
        if match is None:
            return None
        if any(len(match[name] or "") > _MAX_DIGITS for name in self.offsets):
            return None
        groups = {
            name: str(int(value) + self.offsets[name]) if name in self.offsets else value
            for name, value in match.groupdict().items()
        }
        return self.template.format(**groups) + key[match.end() :]


@dataclass(frozen=True)
class Convention:
    """A library's naming of ResNet tensors: rules tried in order, the first match wins.

    Keys that no rule matches keep their names.

    Attributes:
        name: the library's name, shown in reports.
        description: what the names look like.
        rules: the rename rules.
        same_names_as: other conventions whose names are identical for the usual
            architectures, so that a checkpoint that fits may come from either.
    """

    name: str
    description: str
    rules: tuple[RenameRule, ...] = ()
    same_names_as: tuple[str, ...] = ()

    def rename(self, key: str) -> tuple[str, RenameRule | None]:
        """Return ``(new_key, rule)``; ``rule`` is ``None`` when no rule matched."""
        for rule in self.rules:
            new_key = rule.apply(key)
            if new_key is not None:
                return new_key, rule
        return key, None


@dataclass
class Remapped:
    """A checkpoint turned into native names, and how it got there.

    Attributes:
        state_dict: native key → tensor.
        convention: the convention applied.
        unwrapped: container keys descended into, outermost first (``["state_dict"]``).
        stripped: ``(prefix, number of keys)`` for each wrapper prefix removed.
        renames: ``(checkpoint key, native key, rule name)`` for each renamed key.
        notes: anything else the reader should know (ignored entries, unused EMA weights).
        same_names_as: conventions that name this checkpoint's keys identically: when
            the convention was detected, the file may come from any of them.
    """

    state_dict: dict[str, torch.Tensor]
    convention: Convention
    unwrapped: list[str] = field(default_factory=list)
    stripped: list[tuple[str, int]] = field(default_factory=list)
    renames: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    same_names_as: tuple[str, ...] = ()

    def rule_counts(self) -> dict[str, int]:
        """Return rule name → number of keys it renamed, in rule order."""
        counts = Counter(rule for _, _, rule in self.renames)
        return {rule.name: counts[rule.name] for rule in self.convention.rules if counts[rule.name]}


# ---------------------------------------------------------------- the conventions
def _transformers_rules(prefix: str) -> tuple[RenameRule, ...]:
    # Same block layout for BasicBlock (layer.0-1) and Bottleneck (layer.0-2):
    # layer.{j} is torchvision's conv{j+1}/bn{j+1}; BasicBlock's stage 0 simply has no shortcut.
    p = re.escape(prefix)
    block = p + r"encoder\.stages\.(?P<s>\d+)\.layers\.(?P<b>\d+)\."
    return (
        RenameRule("transformers stem conv → conv1", p + r"embedder\.embedder\.convolution\.", "conv1."),
        RenameRule("transformers stem norm → bn1", p + r"embedder\.embedder\.normalization\.", "bn1."),
        RenameRule(
            "transformers shortcut conv → downsample.0",
            block + r"shortcut\.convolution\.",
            "layer{s}.{b}.downsample.0.",
            {"s": 1},
        ),
        RenameRule(
            "transformers shortcut norm → downsample.1",
            block + r"shortcut\.normalization\.",
            "layer{s}.{b}.downsample.1.",
            {"s": 1},
        ),
        RenameRule(
            "transformers layer.j conv → conv(j+1)",
            block + r"layer\.(?P<j>\d+)\.convolution\.",
            "layer{s}.{b}.conv{j}.",
            {"s": 1, "j": 1},
        ),
        RenameRule(
            "transformers layer.j norm → bn(j+1)",
            block + r"layer\.(?P<j>\d+)\.normalization\.",
            "layer{s}.{b}.bn{j}.",
            {"s": 1, "j": 1},
        ),
    )


# mmpretrain ResNetV1c/V1d deep stem: three ConvModules (conv + bn) where timm has one
# Sequential conv1 = (conv, bn, act, conv, bn, act, conv) followed by a top-level bn1.
_MMPRETRAIN_DEEP_STEM = tuple(
    RenameRule(f"mmpretrain stem.{i}.{part} → {target}", rf"backbone\.stem\.{i}\.{part}\.", target + ".")
    for i, part, target in (
        (0, "conv", "conv1.0"),
        (0, "bn", "conv1.1"),
        (1, "conv", "conv1.3"),
        (1, "bn", "conv1.4"),
        (2, "conv", "conv1.6"),
        (2, "bn", "bn1"),
    )
)

# mmpretrain puts the avg-pool in a shortcut only where the stride is 2, so layer1's
# shortcut is (conv, bn) = downsample.0/1; timm always has (pool or Identity, conv, bn).
# The later stages already agree (downsample.1 conv, .2 bn). The .1 rule comes first
# because the first matching rule wins and each key is renamed once.
_MMPRETRAIN_V1D_SHORTCUT = (
    RenameRule(
        "mmpretrain layer1 shortcut norm .1 → .2",
        r"backbone\.layer1\.0\.downsample\.1\.",
        "layer1.0.downsample.2.",
    ),
    RenameRule(
        "mmpretrain layer1 shortcut conv .0 → .1",
        r"backbone\.layer1\.0\.downsample\.0\.",
        "layer1.0.downsample.1.",
    ),
)

_MMPRETRAIN_COMMON = (
    RenameRule("mmpretrain head.fc → fc", r"head\.fc\.", "fc."),
    RenameRule("mmpretrain backbone. prefix removed", r"backbone\.", ""),
)

#: Native names: torchvision's, and timm's for the ResNet-D variants (the same for ResNet-50).
NATIVE = Convention("torchvision", "native names (torchvision; timm uses the same)", same_names_as=("timm",))

#: timm's names: torchvision's, plus its deep stems (``conv1.0``, ``conv1.1`` …) and
#: average-pool shortcuts (``downsample.1``/``.2``), which torchvision has no model for.
TIMM = Convention(
    "timm", "timm (torchvision's names, plus deep stems conv1.{0,1,3,4,6} and shortcuts downsample.{1,2})"
)
# Keys only timm's ResNet-C/D/S variants have: a checkpoint with one is timm's, not torchvision's.
_TIMM_ONLY = re.compile(r"conv1\.\d+\.|layer\d+\.\d+\.downsample\.2\.")

#: Every known convention; on a tie in detection the earlier one wins.
CONVENTIONS: tuple[Convention, ...] = (
    NATIVE,
    TIMM,
    Convention(
        "transformers-ResNetForImageClassification",
        "Hugging Face transformers ResNetForImageClassification (resnet. + classifier.1)",
        (
            *_transformers_rules("resnet."),
            RenameRule("transformers classifier.1 → fc", r"classifier\.1\.", "fc."),
        ),
    ),
    Convention(
        "transformers-ResNetModel",
        "Hugging Face transformers ResNetModel / ResNetBackbone (no head)",
        _transformers_rules(""),
    ),
    Convention("mmpretrain", "mmpretrain ResNet (backbone. + head.fc.)", _MMPRETRAIN_COMMON),
    Convention(
        "mmpretrain-v1c",
        "mmpretrain ResNetV1c (deep stem stem.{0,1,2}.{conv,bn})",
        (*_MMPRETRAIN_DEEP_STEM, *_MMPRETRAIN_COMMON),
    ),
    Convention(
        "mmpretrain-v1d",
        "mmpretrain ResNetV1d (deep stem, avg-pool shortcut)",
        (*_MMPRETRAIN_DEEP_STEM, *_MMPRETRAIN_V1D_SHORTCUT, *_MMPRETRAIN_COMMON),
    ),
)


# ------------------------------------------------------------------- the pipeline
def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _describe_keys(obj: Mapping[Any, Any], limit: int = 8) -> str:
    keys = [repr(k) for k in list(obj)[:limit]]
    more = f", … and {len(obj) - limit} more" if len(obj) > limit else ""
    return "[" + ", ".join(keys) + more + "]"


def _apply(
    convention: Convention, state_dict: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[tuple[str, str, str]], list[str]]:
    plan = [(key, *convention.rename(key)) for key in state_dict]
    # Keys that keep their name own it, so a renamed key never displaces one.
    taken = {key for key, _, rule in plan if rule is None}
    out: dict[str, torch.Tensor] = {}
    renames: list[tuple[str, str, str]] = []
    collisions: list[str] = []
    for key, new_key, rule in plan:
        if rule is not None:
            if new_key in taken:
                # Two checkpoint keys for one tensor: keep the first, leave the other
                # under its own name so it shows up as unexpected instead of vanishing.
                collisions.append(f"{key!r} would also become {new_key!r}; kept under its own name")
                new_key = key
            else:
                taken.add(new_key)
                renames.append((key, new_key, rule.name))
        out[new_key] = state_dict[key]
    return out, renames, collisions


def unwrap(obj: Any) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Find the state dict inside a checkpoint object.

    A training checkpoint nests the weights under one of :data:`CONTAINER_KEYS`
    (``{"state_dict": …, "optimizer": …, "epoch": 3}``); the first one present is used,
    and the others are named in a note (an EMA copy, for instance, is not loaded).

    Args:
        obj: what the checkpoint file held: a state dict or a dict nesting one.

    Returns:
        ``(state_dict, path, notes)``: the ``str`` → tensor mapping, the container keys
        descended into (outermost first) and notes for the report.

    Raises:
        CheckpointError: no tensors found; the message lists the top-level keys.
    """
    path: list[str] = []
    notes: list[str] = []
    for _ in range(_MAX_NESTING + 1):
        if not isinstance(obj, Mapping):
            raise CheckpointError(
                f"expected a state dict (a mapping of names to tensors) "
                f"{'under ' + '/'.join(path) + ' ' if path else ''}but found {type(obj).__name__}"
            )
        if _is_state_dict(obj):
            return {str(k): v for k, v in obj.items()}, path, notes
        containers = [k for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping) and obj[k]]
        if containers:
            unused = [repr(k) for k in containers[1:]]
            if unused:
                notes.append(f"checkpoint[{containers[0]!r}] was used; also present, not used: {', '.join(unused)}")
            path.append(containers[0])
            obj = obj[containers[0]]
            continue
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            skipped = [k for k in obj if not isinstance(obj[k], torch.Tensor)]
            notes.append(f"ignored {len(skipped)} entries that are not tensors: {_describe_keys(dict.fromkeys(skipped))}")
            return tensors, path, notes
        break
    where = "checkpoint" + "".join(f"[{k!r}]" for k in path)
    raise CheckpointError(
        f"no tensors found in {where}; its keys are {_describe_keys(obj)}. Expected a state dict "
        f"or a training checkpoint with the weights under one of {list(CONTAINER_KEYS)}"
    )


def strip_wrappers(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[tuple[str, int]]]:
    """Remove wrapper prefixes (:data:`WRAPPER_PREFIXES`) held by most keys, repeatedly.

    ``module._orig_mod.conv1.weight`` becomes ``conv1.weight``. A prefix is removed
    when more than half of the keys carry it, so a Lightning module with a small extra
    submodule (a loss with buffers) still unwraps; keys without it stay as they are.

    Returns:
        ``(state_dict, stripped)``: the renamed mapping and ``(prefix, count)`` per removal.
    """
    sd = dict(state_dict)
    stripped: list[tuple[str, int]] = []
    while True:
        for prefix in WRAPPER_PREFIXES:
            count = sum(k.startswith(prefix) for k in sd)
            if count * 2 > len(sd):
                sd = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in sd.items()}
                stripped.append((prefix, count))
                break
        else:
            return sd, stripped


def get_convention(name: str) -> Convention:
    """Return the convention called ``name`` (see :data:`CONVENTIONS`).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    for convention in CONVENTIONS:
        if convention.name == name:
            return convention
    raise ValueError(f"unknown convention {name!r}; known: {[c.name for c in CONVENTIONS]}")


def to_native(
    obj: Any,
    *,
    target_keys: Collection[str],
    convention: str | None = None,
) -> Remapped:
    """Turn a checkpoint object into a state dict with native (torchvision/timm) names.

    Steps: :func:`unwrap` nested containers, :func:`strip_wrappers`, then apply
    ``convention`` or, when it is ``None``, the convention under which the most keys
    land on ``target_keys`` (ties go to the earlier one in :data:`CONVENTIONS`,
    so a checkpoint that already fits stays native).

    Args:
        obj: a state dict or training checkpoint, as read from a file.
        target_keys: the model's state-dict keys, used to score conventions.
        convention: force a convention by name instead of detecting one.

    Returns:
        A :class:`Remapped` with the renamed state dict and the steps taken.

    Raises:
        CheckpointError: no state dict in ``obj``.
        ValueError: unknown ``convention``.
    """
    state_dict, path, notes = unwrap(obj)
    state_dict, stripped = strip_wrappers(state_dict)
    targets = set(target_keys)
    candidates = [get_convention(convention)] if convention is not None else list(CONVENTIONS)
    scored = []
    for candidate in candidates:
        renamed, renames, collisions = _apply(candidate, state_dict)
        scored.append((sum(k in targets for k in renamed), candidate, renamed, renames, collisions))
    # max() keeps the first of equal scores: native wins ties.
    _, chosen, renamed, renames, collisions = max(scored, key=lambda item: item[0])
    same_names_as: tuple[str, ...] = ()
    if chosen is NATIVE:
        # torchvision and timm name a ResNet identically; only timm's own variants tell.
        if any(_TIMM_ONLY.match(key) for key in renamed):
            chosen = TIMM
        elif convention is None:
            same_names_as = chosen.same_names_as
    return Remapped(
        state_dict=renamed,
        convention=chosen,
        unwrapped=path,
        stripped=stripped,
        renames=renames,
        notes=notes + collisions,
        same_names_as=same_names_as,
    )
