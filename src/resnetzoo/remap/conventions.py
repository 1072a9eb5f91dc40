"""Checkpoint naming conventions as data: rename rules, wrapper discovery, and detection.

A checkpoint saved by another library names the same tensors differently
(``resnet.encoder.stages.0.layers.0.layer.0.convolution.weight`` in Hugging Face
transformers is ``layer1.0.conv1.weight`` here). Each :class:`Convention` is a list
of named :class:`RenameRule` s (regular expression → template) that turn one
library's names into resnetzoo's native names, which are torchvision's (and timm's,
for the ResNet-D variants). Renaming is by name only, never by key order:
transformers registers ``shortcut`` before ``layer``, so orders differ. The same
rules run backwards (:meth:`Convention.reverse`) to write another library's names.

:func:`to_native` is the whole pipeline: unwrap a training checkpoint
(``{"state_dict": …, "epoch": …}``), find the sub-tree of keys that best forms a
ResNet under some prefix and convention (``module.encoder_q.`` in a MoCo checkpoint,
``backbone.bottom_up.`` in detectron2's; :func:`discover`), strip the prefix, rename,
and say what else the checkpoint held. Wrappers are found by how well their
contents fit, not from a list, so a prefix nobody listed still unwraps.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from resnetzoo.errors import ArchitectureError, CheckpointError
from resnetzoo.infer import is_resnet_key

__all__ = [
    "CONTAINER_KEYS",
    "CONVENTIONS",
    "NATIVE",
    "TIMM",
    "TWIN_DEFAULTS",
    "WRAPPER_PREFIXES",
    "Convention",
    "Discovery",
    "Remapped",
    "RenameRule",
    "checkpoint_info",
    "discover",
    "get_convention",
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

#: Common prefixes of a network's keys inside a checkpoint, with who adds them. Used to
#: describe a stripped prefix in reports; any prefix is found by :func:`discover`.
WRAPPER_PREFIXES: dict[str, str] = {
    "module.": "DataParallel / DistributedDataParallel",
    "_orig_mod.": "torch.compile",
    "model.": "a Lightning module (self.model = network)",
    "net.": "a training wrapper (self.net = network)",
    "encoder.": "an encoder wrapper",
    "backbone.": "a backbone inside a larger model",
    "bottom_up.": "detectron2's FPN (the ResNet is its bottom-up path)",
    "encoder_q.": "MoCo's query encoder",
    "encoder_k.": "MoCo's key (momentum) encoder",
    "base_encoder.": "MoCo v3's base encoder",
    "momentum_encoder.": "MoCo v3's momentum encoder",
    "teacher.": "DINO's teacher",
    "student.": "DINO's student",
    "online_network.": "BYOL's online network",
    "target_network.": "BYOL's target network",
}

#: Twin sub-networks of self-supervised checkpoints: when both fit equally, the first is
#: taken (with the reason) and the other named as the alternative; ``prefix=`` chooses.
TWIN_DEFAULTS: tuple[tuple[str, str, str], ...] = (
    ("encoder_q", "encoder_k", "MoCo evaluates and transfers the query encoder"),
    ("base_encoder", "momentum_encoder", "MoCo v3 evaluates and transfers the base encoder"),
    ("teacher", "student", "DINO evaluates and transfers the teacher"),
    ("online_network", "target_network", "BYOL keeps the online network's encoder"),
)

# Training checkpoints are rarely nested deeper than this; the limit stops cycles.
_MAX_NESTING = 4
_MAX_DIGITS = 6
# A network sits at most this many names deep in a checkpoint (module.model.backbone.bottom_up.);
# bounds the prefixes tried per key.
_MAX_PREFIX_DEPTH = 8
# First names of a network's keys in any convention: where a wrapper prefix can end.
_ROOTS = re.compile(r"conv1|bn1|layer\d+|fc|resnet|embedder|encoder|classifier|backbone|head|stem|res\d+|linear")
# Shown in a note about what else a checkpoint holds.
_MAX_LISTED = 8


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

    def inverse(self) -> RenameRule:
        """The same rename run backwards: native names back into this rule's names.

        Raises:
            ValueError: the pattern uses regular-expression features other than literal
                text and ``(?P<name>\\d+)`` groups, so it has no single inverse.
        """
        template = _pattern_to_template(self.pattern)
        if template is None:
            raise ValueError(f"rule {self.name!r} cannot run backwards: its pattern {self.pattern!r} is not literal")
        return RenameRule(
            f"reverse of {self.name}",
            _template_to_pattern(self.template),
            template,
            {name: -offset for name, offset in self.offsets.items()},
        )


_GROUP = re.compile(r"\(\?P<(\w+)>\\d\+\)")


def _pattern_to_template(pattern: str) -> str | None:
    """``r"res(?P<n>\\d+)\\.conv"`` → ``"res{n}.conv"``; ``None`` for anything but literals and digit groups."""
    out, i = [], 0
    while i < len(pattern):
        group = _GROUP.match(pattern, i)
        if group:
            out.append("{" + group[1] + "}")
            i = group.end()
        elif pattern[i] == "\\" and i + 1 < len(pattern) and not pattern[i + 1].isalnum():
            out.append(pattern[i + 1])
            i += 2
        elif pattern[i] in ".^$*+?()[]{}|\\":
            return None
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


def _template_to_pattern(template: str) -> str:
    """``"layer{s}.{b}."`` → ``r"layer(?P<s>\\d+)\\.(?P<b>\\d+)\\."``."""
    parts = re.split(r"\{(\w+)\}", template)
    return "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>\\d+)" for i, part in enumerate(parts))


@dataclass(frozen=True)
class Convention:
    """A library's naming of ResNet tensors: rules tried in order, the first match wins.

    Keys that no rule matches keep their names.

    Attributes:
        name: the convention's name (``"transformers-ResNetModel"``).
        description: who writes it, in words.
        rules: the renames, in order.
        same_names_as: other conventions whose names are identical for the usual
            architectures, so that a checkpoint that fits may come from either.
        folded_norms: the library may save frozen BatchNorms with their statistics folded
            into weight and bias (detectron2); loading fills mean 0 and variance 1 where
            the model has running statistics and the checkpoint none.
    """

    name: str
    description: str
    rules: tuple[RenameRule, ...] = ()
    same_names_as: tuple[str, ...] = ()
    folded_norms: bool = False

    def rename(self, key: str) -> tuple[str, RenameRule | None]:
        """Return ``(new_key, rule)``; ``rule`` is ``None`` when no rule matched."""
        for rule in self.rules:
            new_key = rule.apply(key)
            if new_key is not None:
                return new_key, rule
        return key, None

    def reverse(self) -> Convention:
        """This convention run backwards: rules from native names to this library's names.

        Raises:
            ValueError: a rule cannot run backwards (see :meth:`RenameRule.inverse`).
        """
        return Convention(self.name, f"native names → {self.description}", tuple(r.inverse() for r in self.rules))


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

# detectron2's ResNet (detectron2/modeling/backbone/resnet.py): stem.conv1 with its norm
# inside the conv (conv*.norm), stages res2…res5, shortcut (+ shortcut.norm), head linear.
# The more specific .norm rules come first: the first matching rule wins.
_DETECTRON2 = (
    RenameRule("detectron2 stem.conv1.norm → bn1", r"stem\.conv1\.norm\.", "bn1."),
    RenameRule("detectron2 stem.conv1 → conv1", r"stem\.conv1\.", "conv1."),
    RenameRule(
        "detectron2 shortcut.norm → downsample.1",
        r"res(?P<s>\d+)\.(?P<b>\d+)\.shortcut\.norm\.",
        "layer{s}.{b}.downsample.1.",
        {"s": -1},
    ),
    RenameRule(
        "detectron2 shortcut → downsample.0",
        r"res(?P<s>\d+)\.(?P<b>\d+)\.shortcut\.",
        "layer{s}.{b}.downsample.0.",
        {"s": -1},
    ),
    RenameRule(
        "detectron2 conv{j}.norm → bn{j}",
        r"res(?P<s>\d+)\.(?P<b>\d+)\.conv(?P<j>\d+)\.norm\.",
        "layer{s}.{b}.bn{j}.",
        {"s": -1},
    ),
    RenameRule(
        "detectron2 res{s} → layer{s-1}",
        r"res(?P<s>\d+)\.(?P<b>\d+)\.conv(?P<j>\d+)\.",
        "layer{s}.{b}.conv{j}.",
        {"s": -1},
    ),
    RenameRule("detectron2 linear → fc", r"linear\.", "fc."),
    # detectron2's convert-torchvision-to-d2.py puts torchvision's classifier under the stem.
    RenameRule("detectron2 converted stem.fc → fc", r"stem\.fc\.", "fc."),
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
    Convention(
        "detectron2",
        "detectron2 ResNet (stem.conv1, res2…res5, conv*.norm, shortcut)",
        _DETECTRON2,
        folded_norms=True,
    ),
)


# ------------------------------------------------------------------- the pipeline
def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _describe_keys(obj: Collection[Any], limit: int = _MAX_LISTED) -> str:
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


def _flatten(obj: Mapping[Any, Any], prefix: str = "", depth: int = 0) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Tensors of nested mappings under dotted names, and the names of what is not a tensor."""
    tensors: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            tensors[name] = value
        elif isinstance(value, Mapping) and depth < _MAX_NESTING:
            inner, inner_skipped = _flatten(value, name + ".", depth + 1)
            tensors.update(inner)
            skipped += inner_skipped if inner else [name]
        else:
            skipped.append(name)
    return tensors, skipped


def unwrap(obj: Any) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Find the state dict inside a checkpoint object.

    A training checkpoint nests the weights under one of :data:`CONTAINER_KEYS`
    (``{"state_dict": …, "optimizer": …, "epoch": 3}``); the first one present is used,
    and the other entries are named in a note (an EMA copy, for instance, is not loaded).
    Without such a key, the tensors of every nested dict are returned under dotted names
    (DINO's ``{"teacher": …, "student": …}`` becomes ``teacher.…`` and ``student.…``), for
    :func:`discover` to find the network among them.

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
            where = "checkpoint" + "".join(f"[{k!r}]" for k in [*path, containers[0]])
            unused = [repr(k) for k in containers[1:]]
            if unused:
                notes.append(f"{where} was used; also present, not used: {', '.join(unused)}")
            others = [k for k in obj if k not in containers]
            if others:
                notes.append(f"beside {where}, the checkpoint holds {_describe_keys(others)} (not loaded)")
            path.append(containers[0])
            obj = obj[containers[0]]
            continue
        # No known container: the tensors may sit in dicts of any name (DINO's "teacher" and
        # "student"); join the names with dots and let discover() find the network in them.
        tensors, skipped = _flatten(obj)
        if tensors:
            if skipped:
                notes.append(f"ignored {len(skipped)} entries that are not tensors: {_describe_keys(skipped)}")
            return tensors, path, notes
        break
    where = "checkpoint" + "".join(f"[{k!r}]" for k in path)
    raise CheckpointError(
        f"no tensors found in {where}; its keys are {_describe_keys(list(obj))}. Expected a state dict "
        f"or a training checkpoint with the weights under one of {list(CONTAINER_KEYS)}"
    )


# What checkpoints say about the network beside its tensors, and where.
_INFO_KEYS = ("arch", "__author__", "stride_in_1x1", "downsample_in_bottleneck", "style")
_STYLE_IN_CONFIG = re.compile(r"""style\s*=\s*['"](caffe|pytorch)['"]""")
# A config text is searched only this far: enough for any model config, bounded for any file.
_MAX_CONFIG_CHARS = 200_000


def checkpoint_info(obj: Any) -> dict[str, str]:
    """What a checkpoint says about its network beside the tensors, as strings.

    Read from the checkpoint's top level and its ``meta`` dict (mmpretrain/mmengine):
    ``arch`` (torchvision's and MoCo's training scripts), ``__author__`` (detectron2's
    converted models), ``stride_in_1x1``, ``downsample_in_bottleneck``, and ``style``
    (mmpretrain; also found in the config text that mmengine stores as ``meta["cfg"]``).
    These decide what the shapes cannot: v1 or v1.5 bottlenecks.

    Returns:
        name → value, only for what the checkpoint holds; ``{}`` for a plain state dict.
    """
    info: dict[str, str] = {}
    if not isinstance(obj, Mapping):
        return info
    meta = obj.get("meta")
    for source in (meta, obj):
        if not isinstance(source, Mapping):
            continue
        for key in _INFO_KEYS:
            value = source.get(key)
            if isinstance(value, (str, bool, int)):
                info[key] = str(value)
    if isinstance(meta, Mapping) and "style" not in info:
        for key in ("cfg", "config"):
            text = meta.get(key)
            if isinstance(text, str) and (match := _STYLE_IN_CONFIG.search(text[:_MAX_CONFIG_CHARS])):
                info["style"] = match[1]
                break
    return info


# ------------------------------------------------------------- wrapper discovery
@dataclass(frozen=True)
class Discovery:
    """Which sub-tree of a checkpoint holds the network, and in which convention.

    Attributes:
        prefix: what the network's keys start with (``""``, ``"module.encoder_q."``).
        convention: the convention that renames them best.
        score: keys of the sub-tree that land on a ResNet's (or the model's) names.
        size: keys under the prefix.
        alternatives: prefixes of other sub-trees that fit equally well (a momentum
            encoder, a DINO student), to pass as ``prefix=`` instead.
        mixed: ``(names, count)`` of keys that follow another convention than the rest.
        notes: sentences for the report: the prefix taken and why, what else was there.
    """

    prefix: str
    convention: Convention
    score: int
    size: int
    alternatives: tuple[str, ...] = ()
    mixed: tuple[tuple[str, int], ...] = ()
    notes: tuple[str, ...] = ()


Fit = Callable[[str, Sequence[int]], bool]


def _sub_trees(keys: Collection[str], is_root: Callable[[str], bool]) -> dict[str, list[str]]:
    """Each prefix at which a network's keys could start → the keys under it.

    A prefix is a candidate when some key has a name any convention begins with right
    after it (``module.encoder_q.`` before ``layer1``); ``""`` always is. Two passes over
    the keys, each at most ``_MAX_PREFIX_DEPTH`` names deep: the work grows with the
    number of keys, not with its square.
    """
    split = [(key, key.split(".", _MAX_PREFIX_DEPTH)) for key in keys]
    candidates = {""}
    for _, parts in split:
        for i in range(1, len(parts) - 1):
            if is_root(parts[i]):
                candidates.add(".".join(parts[:i]) + ".")
    trees: dict[str, list[str]] = {p: [] for p in candidates}
    trees[""] = list(keys)
    for key, parts in split:
        for i in range(1, len(parts) - 1):
            prefix = ".".join(parts[:i]) + "."
            if prefix in trees:
                trees[prefix].append(key)
    return trees


def _nested(a: str, b: str) -> bool:
    return a.startswith(b) or b.startswith(a)


def _twin_default(prefixes: Sequence[str]) -> tuple[str, str] | None:
    """The documented default among two equal sub-trees (``encoder_q`` over ``encoder_k`` …), and why."""
    for first, second, why in TWIN_DEFAULTS:
        for prefix in prefixes:
            parts = prefix.split(".")
            if first in parts:
                twin = ".".join(second if part == first else part for part in parts)
                if set(prefixes) == {prefix, twin}:
                    return prefix, why
    return None


def _outside(state_dict: Mapping[str, Any], prefix: str) -> Counter[str]:
    """Keys not under ``prefix``, grouped by the first name where they leave it.

    A group of one key is that key (``'module.queue'``); a larger one ends with a dot
    (``'module.encoder_k.'``).
    """
    wanted = prefix.split(".")[:-1]
    groups: Counter[str] = Counter()
    first: dict[str, str] = {}
    for key in state_dict:
        if key.startswith(prefix):
            continue
        parts = key.split(".", len(wanted) + 1)
        common = next((i for i, (a, b) in enumerate(zip(parts, wanted, strict=False)) if a != b), len(wanted))
        group = ".".join(parts[: common + 1]) + ("." if len(parts) > common + 1 else "")
        groups[group] += 1
        first.setdefault(group, key)
    return Counter({(group if count > 1 else first[group]): count for group, count in groups.items()})


def _mixed(sub: Mapping[str, Any], convention: Convention, fit: Fit) -> tuple[tuple[str, int], ...]:
    """Keys that fit only because they already have native names, in a non-native checkpoint."""
    if not convention.rules:
        return ()
    renamed = native = 0
    for key, value in sub.items():
        new_key, rule = convention.rename(key)
        if fit(new_key, value.shape):
            if rule is None:
                native += 1
            else:
                renamed += 1
    return ((convention.name, renamed), (NATIVE.name, native)) if renamed and native else ()


def _mixed_message(mixed: Sequence[tuple[str, int]]) -> str:
    (theirs, n_theirs), (ours, n_ours) = mixed
    return (
        f"the checkpoint mixes naming conventions: {n_theirs} keys have {theirs} names and {n_ours} "
        f"{ours} names; it was assembled from more than one source: check that its parts belong to "
        f"one network, or convert each part separately"
    )


_STEM_KEY = re.compile(r"conv1(\.\d+)?\.weight")
_STAGE_KEY = re.compile(r"layer\d+\.\d+\.")


def _has_body(native_keys: Collection[str]) -> bool:
    """Whether native keys hold a stem convolution and a block of a stage: the least a ResNet has."""
    return any(_STEM_KEY.fullmatch(k) for k in native_keys) and any(_STAGE_KEY.match(k) for k in native_keys)


def discover(
    state_dict: Mapping[str, Any],
    *,
    target_keys: Collection[str] | None = None,
    prefix: str | None = None,
    convention: str | None = None,
) -> Discovery:
    """Find the sub-tree of a state dict whose keys best form a ResNet, and its convention.

    Every prefix at which some key could begin a network (before a ``conv1``,
    ``layer1``, ``res2``, ``backbone`` … name) is tried with every convention; the score
    is the number of keys under it whose renamed name and shape fit: a ResNet's native
    names with tensors of the right rank, or ``target_keys`` when a model is given. A
    sub-tree with a stem and a stage among them ranks above any without. The best score
    wins; among equal scores the tighter sub-tree (fewer keys that do not fit), then the
    reading that renames fewer keys, then the shorter prefix, then the earlier convention. Two sub-trees that
    fit equally and do not overlap are twins: the documented default of
    :data:`TWIN_DEFAULTS` is taken (MoCo's ``encoder_q``, DINO's ``teacher``) and the
    other named; for other twins ``prefix=`` must choose.

    The work is bounded by the number of keys: at most eight prefixes per key, and a
    prefix whose sub-tree is smaller than the best score so far is not scored.

    Args:
        state_dict: name → tensor (anything with a ``.shape``).
        target_keys: a model's keys; ``None`` scores against ResNet names in general.
        prefix: take the keys under this prefix (``"module.encoder_k."``; ``""`` for the
            top level) instead of searching.
        convention: use this convention (see :data:`CONVENTIONS`) instead of detecting one.

    Returns:
        the :class:`Discovery`.

    Raises:
        ArchitectureError: two sub-trees fit equally and none is a documented default;
            or ``prefix`` holds no key.
        ValueError: unknown ``convention``.
    """
    conventions = [get_convention(convention)] if convention is not None else list(CONVENTIONS)
    if target_keys is None:
        fit: Fit = is_resnet_key
        is_root: Callable[[str], bool] = lambda name: _ROOTS.fullmatch(name) is not None  # noqa: E731
    else:
        targets = set(target_keys)
        first_names = {key.split(".", 1)[0] for key in targets}
        fit = lambda key, shape: key in targets  # noqa: E731
        is_root = lambda name: name in first_names or _ROOTS.fullmatch(name) is not None  # noqa: E731

    if prefix is not None:
        prefix = prefix if prefix == "" or prefix.endswith(".") else prefix + "."
        if not any(key.startswith(prefix) for key in state_dict):
            raise ArchitectureError(
                f"no key of the checkpoint starts with prefix={prefix!r}; its keys start with "
                f"{_describe_keys(sorted(_outside(state_dict, '.')))}"
            )
        trees = {prefix: [key for key in state_dict if key.startswith(prefix)]}
    else:
        trees = _sub_trees(state_dict, is_root)

    # A sub-tree with a stem and a stage among the keys that fit ranks above any without:
    # residual-looking blocks alone (an EfficientNet's blocks.N.M.conv1/bn1) are no ResNet.
    # Not asked of a model that has no stem or no stage itself.
    needs_body = target_keys is None or _has_body(targets)
    ranked: list[tuple[tuple[bool, int, int, int, int, str, int], str, Convention, int]] = []
    best = 0
    for p in sorted(trees, key=lambda p: (-len(trees[p]), p)):
        size = len(trees[p])
        if size < best:
            continue  # cannot beat the best: fewer keys than it already fits
        sub = [(key[len(p) :], state_dict[key].shape) for key in trees[p]]
        for index, candidate in enumerate(conventions):
            renamed = [(candidate.rename(key)[0], key, shape) for key, shape in sub]
            fitting = [name for name, _, shape in renamed if fit(name, shape)]
            score = len(fitting)
            partial = needs_body and not _has_body(fitting)
            if not partial:
                best = max(best, score)
            # Among equal fits, the reading that renames least: DINO's teacher.backbone.conv1 is
            # torchvision's names under 'teacher.backbone.', not mmpretrain's under 'teacher.'.
            changed = sum(name != key for name, key, _ in renamed)
            ranked.append(((partial, -score, size, changed, len(p), p, index), p, candidate, score))
    ranked.sort(key=lambda item: item[0])
    _, chosen, chosen_convention, score = ranked[0]
    if ranked[0][0][0] and prefix is None and 2 * score < len(state_dict):
        # No sub-tree has a stem and a stage, and the best fits a minority of the keys
        # (an EfficientNet's residual-looking blocks): read everything as it is, and let
        # the inference say what it is by its keys. A partial tree that is most of the
        # checkpoint (a ResNet without its stem) is kept, for the inference to name the gap.
        ranked = [item for item in ranked if item[1] == ""] or ranked[:1]
        _, chosen, chosen_convention, score = ranked[0]
        ranked = ranked[:1]
    if score == 0:  # nothing fits anywhere: read everything as it is, and let the report say so
        chosen = prefix or ""
        chosen_convention = conventions[0]
    alternatives: list[str] = []
    for _, p, _, s in ranked[1:]:
        if s < score or not score or len(alternatives) == _MAX_LISTED:
            break  # ranked by score: no more equal fits (and a few are enough to name)
        if not any(_nested(p, q) for q in (chosen, *alternatives)):
            alternatives.append(p)

    notes: list[str] = []
    if alternatives:
        default = _twin_default([chosen, *alternatives])
        if default is None:
            every = ", ".join(repr(p) for p in (chosen, *alternatives))
            count = len(alternatives) + 1
            raise ArchitectureError(
                f"{'at least ' if len(alternatives) == _MAX_LISTED else ''}{count} sub-trees of the checkpoint "
                f"fit a ResNet equally well ({every}, "
                f"{score} tensors each) and none is a known default; choose one with prefix=… "
                f"(resnetzoo CLI: --prefix), e.g. prefix={chosen!r}"
            )
        chosen, why = default
        alternatives = [p for p in (ranked[0][1], *alternatives) if p != chosen]
        chosen_convention = next(c for _, p, c, s in ranked if p == chosen and s == score)
        notes.append(
            f"took the sub-tree {chosen!r} ({why}); {', '.join(repr(a) for a in alternatives)} fits "
            f"equally well: pass prefix={alternatives[0]!r} to load it instead"
        )

    outside = _outside(state_dict, chosen) if chosen else Counter()
    if outside:
        listed = ", ".join(
            f"{group!r} ({count} tensor{'s' if count > 1 else ''})" for group, count in outside.most_common(_MAX_LISTED)
        )
        more = f" and {len(outside) - _MAX_LISTED} more" if len(outside) > _MAX_LISTED else ""
        notes.append(f"also in the checkpoint, not loaded: {listed}{more}")

    sub_tree = {key[len(chosen) :]: value for key, value in state_dict.items() if key.startswith(chosen)}
    mixed = _mixed(sub_tree, chosen_convention, fit)
    if mixed:
        notes.append(_mixed_message(mixed))
    return Discovery(
        prefix=chosen,
        convention=chosen_convention,
        score=score,
        size=len(sub_tree),
        alternatives=tuple(alternatives),
        mixed=mixed,
        notes=tuple(notes),
    )


# ------------------------------------------------------------------- renaming
def get_convention(name: str) -> Convention:
    """Return the convention called ``name`` (see :data:`CONVENTIONS`).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    for convention in CONVENTIONS:
        if convention.name == name:
            return convention
    raise ValueError(f"unknown convention {name!r}; known: {[c.name for c in CONVENTIONS]}")


def _prefix_pieces(prefix: str, count: int) -> list[tuple[str, int]]:
    """``"module.encoder_q."`` → ``[("module.", n), ("encoder_q.", n)]``: known wrappers one by one."""
    pieces: list[str] = []
    pending = ""
    for name in prefix.split(".")[:-1]:
        if name + "." in WRAPPER_PREFIXES:
            pieces += [pending] if pending else []
            pieces.append(name + ".")
            pending = ""
        else:
            pending += name + "."
    pieces += [pending] if pending else []
    return [(piece, count) for piece in pieces]


def _fill_folded_norms(state_dict: dict[str, torch.Tensor], target_keys: Collection[str]) -> list[str]:
    """Give norms saved without statistics (folded, as detectron2's) mean 0 and variance 1."""
    filled = []
    for key in target_keys:
        if not key.endswith(".running_mean"):
            continue
        base = key[: -len("running_mean")]
        weight = state_dict.get(base + "weight")
        if (
            isinstance(weight, torch.Tensor)
            and weight.ndim == 1
            and base + "running_mean" not in state_dict
            and base + "running_var" not in state_dict
        ):
            state_dict[base + "running_mean"] = torch.zeros_like(weight)
            state_dict[base + "running_var"] = torch.ones_like(weight)
            filled.append(base[:-1])
    if not filled:
        return []
    return [
        f"{len(filled)} norms (e.g. {filled[0]}) have no running statistics: detectron2 folds them into "
        f"weight and bias, so they were filled with mean 0 and variance 1, as its FrozenBatchNorm2d does"
    ]


@dataclass
class Remapped:
    """A checkpoint turned into native names, and how it got there.

    Attributes:
        state_dict: native key → tensor.
        convention: the convention applied.
        unwrapped: container keys descended into, outermost first (``["state_dict"]``).
        stripped: ``(prefix, number of keys)`` for each wrapper prefix removed.
        renames: ``(checkpoint key, native key, rule name)`` for each renamed key.
        notes: anything else the reader should know (ignored entries, unused EMA weights,
            the sub-tree taken and what else was there).
        prefix: the whole prefix removed (``"module.encoder_q."``).
        alternatives: other prefixes whose sub-trees fit equally well.
        mixed: ``(names, count)`` per convention when the keys mix conventions.
        info: what the checkpoint says about its network (see :func:`checkpoint_info`).
        same_names_as: conventions that name this checkpoint's keys identically: when
            the convention was detected, the file may come from any of them.
    """

    state_dict: dict[str, torch.Tensor]
    convention: Convention
    unwrapped: list[str] = field(default_factory=list)
    stripped: list[tuple[str, int]] = field(default_factory=list)
    renames: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    prefix: str = ""
    alternatives: list[str] = field(default_factory=list)
    mixed: list[tuple[str, int]] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)
    same_names_as: tuple[str, ...] = ()

    def rule_counts(self) -> dict[str, int]:
        """Return rule name → number of keys it renamed, in rule order."""
        counts = Counter(rule for _, _, rule in self.renames)
        return {rule.name: counts[rule.name] for rule in self.convention.rules if counts[rule.name]}

    def check_one_convention(self) -> None:
        """Raise :class:`~resnetzoo.ArchitectureError` when the keys mix conventions.

        A loader reports the mix as a hint; building a network from such a file is refused,
        since its parts may come from two networks.
        """
        if self.mixed:
            raise ArchitectureError(f"cannot tell the architecture: {_mixed_message(self.mixed)}")


def to_native(
    obj: Any,
    *,
    target_keys: Collection[str] | None = None,
    convention: str | None = None,
    prefix: str | None = None,
) -> Remapped:
    """Turn a checkpoint object into a state dict with native (torchvision/timm) names.

    Steps: :func:`unwrap` nested containers, :func:`discover` the sub-tree that holds
    the network and its convention, strip its prefix and rename its keys. Keys outside
    the sub-tree are not returned; a note names them (a MoCo ``queue``, the other
    encoder, a detector's heads).

    Args:
        obj: a state dict or training checkpoint, as read from a file.
        target_keys: the model's state-dict keys, used to score prefixes and
            conventions; ``None`` scores against ResNet names in general (to infer the
            architecture before there is a model).
        convention: force a convention by name instead of detecting one.
        prefix: take the keys under this prefix instead of searching (``""``: all keys).

    Returns:
        A :class:`Remapped` with the renamed state dict and the steps taken.

    Raises:
        CheckpointError: no state dict in ``obj``.
        ArchitectureError: two sub-trees fit equally and ``prefix`` does not choose.
        ValueError: unknown ``convention``.
    """
    state_dict, path, notes = unwrap(obj)
    found = discover(state_dict, target_keys=target_keys, prefix=prefix, convention=convention)
    sub = {key[len(found.prefix) :]: value for key, value in state_dict.items() if key.startswith(found.prefix)}
    renamed, renames, collisions = _apply(found.convention, sub)
    filled = []
    if found.convention.folded_norms and target_keys is not None:
        filled = _fill_folded_norms(renamed, target_keys)
    chosen, same_names_as = found.convention, ()
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
        stripped=_prefix_pieces(found.prefix, len(sub)),
        renames=renames,
        notes=[*notes, *found.notes, *collisions, *filled],
        prefix=found.prefix,
        alternatives=list(found.alternatives),
        mixed=list(found.mixed),
        info=checkpoint_info(obj),
        same_names_as=same_names_as,
    )
