"""Architecture inference: which ResNet a state dict holds, from its tensor names and shapes.

A ResNet checkpoint describes its network completely, except for what has no weights.
The shapes say how many blocks each stage has (``layer3.22`` is the 23rd block of
stage 3), basic or bottleneck blocks (a ``conv3``), the width and groups of each 3x3
convolution (ResNeXt, Wide ResNet), the stem (one 7x7 ``conv1`` or three 3x3
``conv1.{0,3,6}``), the shortcut (a 1x1 ``downsample.0``, or ``downsample.1`` after an
average pool), the input channels (the stem kernel's second dimension), the classes
(``fc.weight``'s rows) and the norms (BatchNorm keeps ``running_mean``; GroupNorm has
only ``weight`` and ``bias``). :func:`infer_architecture` reads all of it from the
names and shapes alone, without building a single candidate network.

What the weights cannot show is reported as an :class:`Ambiguity` with the choice made
and why, never guessed in silence. The main one is where a bottleneck puts its stride
(v1: the first 1x1 convolution; v1.5: the 3x3): the tensors are identical, the outputs
are not. A ``config.json`` (transformers' ``downsample_in_bottleneck``), mmpretrain's
``style``, or the convention's own default decides, and the report says which.

The input is in native names (torchvision's, and timm's for the ResNet-D family);
:func:`resnetzoo.remap.conventions.to_native` renames the other libraries' checkpoints
first. Everything here is bounded by the number of keys: an untrusted key such as
``layer100000000.0.conv1.weight`` is a problem to report, not a loop to run.

>>> import torch, resnetzoo
>>> from resnetzoo.infer import infer_architecture
>>> with torch.device("meta"):  # shapes only
...     model = resnetzoo.ResNet(layers=(1, 1), block="basic", widths=(64, 128), num_classes=10, in_chans=1)
>>> infer_architecture({k: v.shape for k, v in model.state_dict().items()}).call()
'resnetzoo.ResNet(layers=(1, 1), block="basic", widths=(64, 128), num_classes=10, in_chans=1)'
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from resnetzoo.architectures import ARCHITECTURES, SPEC_FIELDS
from resnetzoo.errors import ArchitectureError
from resnetzoo.stems import deep_stem

__all__ = [
    "NOT_IN_THE_WEIGHTS",
    "Ambiguity",
    "InferredArchitecture",
    "block_counts",
    "guess_arch",
    "infer_architecture",
    "is_resnet_key",
]

#: What no checkpoint's tensors show, said with every inferred architecture: the network is
#: built with resnetzoo's defaults for these, and outputs differ if it was trained otherwise.
NOT_IN_THE_WEIGHTS = (
    "weights cannot show anti-aliasing (timm's resnetblur/resnetaa), dilation, the global pooling or the "
    "activation: this model has none, output stride 32, average pooling and ReLU; a network trained "
    "otherwise needs them set in Python (output_stride=, global_pool=, act=) or the library that made it"
)
# timm variants whose tensors are those of a plain ResNet but which compute otherwise:
# anti-aliased downsampling (a fixed blur filter, a non-persistent buffer).
_ANTI_ALIASED = re.compile(r"blur|resnetaa")
# Unknown keys inside the stem, a block or the head change what the network computes (a
# squeeze-excitation, attention): never built around. Others, up to this share of the
# checkpoint (a loss's weight beside the network), are left to the report as unexpected.
_INSIDE_THE_NETWORK = re.compile(r"(conv1|bn1|fc)(\.|$)|layer\d{1,6}\.\d{1,6}\.")
_MAX_STRAY_SHARE = 0.05
_NORM_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
#: One native ResNet key: stem, block part, or head, then the tensor's leaf name.
#: Numbers have at most six digits: a longer one is no real stage or block (and ``int()`` of
#: thousands of digits is slow, or refused by Python), so such a key is not a ResNet's.
_KEY = re.compile(
    r"(?:(?P<stem>conv1(?:\.\d{1,6})?|bn1)"
    r"|layer(?P<stage>\d{1,6})\.(?P<block>\d{1,6})\.(?P<part>conv\d{1,6}|bn\d{1,6}|downsample\.\d{1,6})"
    r"|(?P<head>fc(?:\.\d{1,6})?))"
    r"\.(?P<leaf>weight|bias|running_mean|running_var|num_batches_tracked)"
)
_BLOCK_KEY = re.compile(r"layer(\d{1,6})\.(\d{1,6})\.")
_DEFAULT_WIDTHS = (64, 128, 256, 512)
# Enough of a key list for a reader to recognise it.
_SHOWN_KEYS = 6

# Other networks, told by names that a ResNet never has: (description, key pattern).
_FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("a Vision Transformer (ViT/DeiT)", r"(^|\.)(cls_token|pos_embed|patch_embed\.|blocks\.\d+\.attn\.)"),
        ("a Swin Transformer", r"(^|\.)layers\.\d+\.blocks\.\d+\.attn\.relative_position"),
        ("a Hugging Face ViT", r"(^|\.)encoder\.layer\.\d+\.attention\."),
        ("an EfficientNet or MobileNet (timm)", r"(^|\.)(conv_stem\.|conv_head\.|blocks\.\d+\.\d+\.conv_(dw|pw|pwl)\.)"),
        ("an EfficientNet (efficientnet_pytorch)", r"(^|\.)_blocks\.\d+\._depthwise_conv\."),
        ("a ConvNeXt", r"(^|\.)(stages\.\d+\.blocks\.\d+\.conv_dw\.|downsample_layers\.)"),
        ("a DenseNet", r"(^|\.)features\.denseblock\d+\."),
        ("a MobileNet or VGG (torchvision features.N)", r"(^|\.)features\.\d+\."),
        ("a ResNet v2 (pre-activation; timm's resnetv2)", r"(^|\.)stages\.\d+\.blocks\.\d+\.(norm\d|conv\d)"),
        ("a language model", r"(^|\.)(embed_tokens|wte|word_embeddings|lm_head)\."),
    )
)


def is_resnet_key(key: str, shape: Sequence[int]) -> bool:
    """Tell whether a native key and its shape can belong to a ResNet.

    The name must be a native ResNet name (``conv1.weight``, ``layer2.0.downsample.1.bias``,
    ``fc.weight`` …) and the tensor of the right rank for it: 4-d convolution weights,
    1-d norm parameters and statistics, a 2-d classifier weight, a 0-d counter. Used to
    score how well a sub-tree of a checkpoint forms a ResNet.
    """
    match = _KEY.fullmatch(key)
    if match is None:
        return False
    ndim, leaf = len(shape), match["leaf"]
    if leaf == "num_batches_tracked":
        return ndim == 0
    if leaf != "weight":
        return ndim == 1
    if match["head"]:
        return ndim == 2
    part = match["part"] or match["stem"] or ""
    if part.startswith("bn"):
        return ndim == 1
    if re.fullmatch(r"conv\d+", part):
        return ndim == 4
    return ndim in (1, 4)  # conv1.N or downsample.N: a convolution or a norm


def block_counts(keys: Sequence[str] | Mapping[str, Any]) -> tuple[int, ...]:
    """Count residual blocks per stage from native keys (``layer{s}.{b}.…``).

    A stage or block number larger than the number of keys cannot be real (each block
    has several tensors); such keys are left out, so that a hostile key such as
    ``layer100000000.0.x`` costs nothing.

    Returns:
        blocks in ``layer1``, ``layer2`` …, e.g. ``(3, 4, 23, 3)`` for ResNet-101;
        ``()`` when no key names a block; 0 for a stage with no keys before a later one.
    """
    limit = len(keys)
    last: dict[int, int] = {}
    for key in keys:
        match = _BLOCK_KEY.match(key)
        if match:
            stage, index = int(match[1]), int(match[2])
            if stage <= limit and index < limit:
                last[stage] = max(last.get(stage, -1), index)
    return tuple(last.get(s, -1) + 1 for s in range(1, max(last, default=0) + 1))


# ------------------------------------------------------------------ the result
@dataclass(frozen=True)
class Ambiguity:
    """Something the weights cannot tell, the choice made, and why.

    Attributes:
        what: the question, e.g. ``"stride placement of the bottlenecks"``.
        choice: what was chosen, as a constructor keyword where there is one.
        why: where the choice comes from (a ``config.json``, the checkpoint's metadata,
            the naming convention's default).
        alternative: the other answer, and how to ask for it.
    """

    what: str
    choice: str
    why: str
    alternative: str

    def __str__(self) -> str:
        return f"{self.what}: {self.choice}, since {self.why} (otherwise: {self.alternative})"


@dataclass(frozen=True)
class InferredArchitecture:
    """A ResNet described by a checkpoint: the keywords that build it, and what is uncertain.

    Attributes:
        name: the matching architecture of :data:`~resnetzoo.architectures.ARCHITECTURES`
            (``"resnet50d"``), or ``None`` for a network that is none of them.
        block: ``"basic"`` or ``"bottleneck"``.
        layers: blocks per stage.
        widths: ``planes`` per stage (output channels are ``widths[i] * expansion``).
        groups: groups of the 3x3 convolutions.
        width_per_group: channels per group at ``planes=64``.
        stem: ``"classic"`` (7x7) or ``"deep"`` (three 3x3).
        stem_width: channels out of the stem.
        stem_mid: channels between the deep stem's convolutions (``None`` for classic).
        shortcut: ``"conv"``, ``"avgpool"`` (ResNet-D) or ``"zero_pad"`` (no weights).
        norm: ``"batchnorm"``, ``"groupnorm"`` or ``"frozen_bn"``.
        in_chans: input channels.
        num_classes: classifier outputs; 0 for none.
        stride_in_1x1: ``True`` for v1 bottlenecks (stride on the first 1x1).
        ambiguities: what the weights cannot tell, with the choices made.
        notes: other facts for the reader (a projection head left out …).
        left_out: native keys that are not part of the network built (a projection
            head, an empty classifier); a loader ignores them as classifier keys.
        prefix: the prefix the network's keys had in the checkpoint (``"module.encoder_q."``).
        alternatives: prefixes of other sub-trees that fit equally well.
        convention: the naming convention the checkpoint used.
    """

    name: str | None
    block: str
    layers: tuple[int, ...]
    widths: tuple[int, ...] = _DEFAULT_WIDTHS
    groups: int = 1
    width_per_group: int = 64
    stem: str = "classic"
    stem_width: int = 64
    stem_mid: int | None = None
    shortcut: str = "conv"
    norm: str = "batchnorm"
    in_chans: int = 3
    num_classes: int = 1000
    stride_in_1x1: bool = False
    ambiguities: tuple[Ambiguity, ...] = ()
    notes: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()
    prefix: str = ""
    alternatives: tuple[str, ...] = ()
    convention: str = "torchvision"

    def _extras(self) -> dict[str, Any]:
        """Keywords beyond the architecture table's, where they differ from the defaults."""
        extras: dict[str, Any] = {}
        if self.num_classes != 1000:
            extras["num_classes"] = self.num_classes
        if self.in_chans != 3:
            extras["in_chans"] = self.in_chans
        if self.norm != "batchnorm":
            extras["norm"] = self.norm
        if self.stride_in_1x1:
            extras["stride_in_1x1"] = True
        return extras

    def _custom(self) -> dict[str, Any]:
        """All :class:`~resnetzoo.ResNet` keywords of a network no named architecture builds."""
        kwargs: dict[str, Any] = {"layers": self.layers, "block": self.block}
        if self.widths != _DEFAULT_WIDTHS[: len(self.widths)] or len(self.widths) != 4:
            kwargs["widths"] = self.widths
        for key, value, default in (
            ("stem", self.stem, "classic"),
            ("stem_width", self.stem_width, 64),
            ("shortcut", self.shortcut, "conv"),
            ("groups", self.groups, 1),
            ("width_per_group", self.width_per_group, 64),
        ):
            if value != default:
                kwargs[key] = value
        return kwargs

    def _custom_stem_mid(self) -> bool:
        return self.stem == "deep" and self.stem_mid is not None and self.stem_mid != self.stem_width // 2

    def kwargs(self) -> dict[str, Any]:
        """The :class:`~resnetzoo.ResNet` keyword arguments that build this network.

        A deep stem whose middle width is not half its output (timm's ``resnet50s``)
        is given as ``functools.partial(deep_stem, mid_chs=...)``.
        """
        base = ARCHITECTURES[self.name].kwargs() if self.name else self._custom()
        kwargs = {**base, **self._extras()}
        if self._custom_stem_mid():
            kwargs["stem"] = functools.partial(deep_stem, mid_chs=self.stem_mid)
        if self.name:
            kwargs["arch"] = self.name
        return kwargs

    def call(self) -> str:
        """The constructor call that builds this network, as Python source.

        ``resnetzoo.resnet50d(num_classes=37)`` for a named architecture, else
        ``resnetzoo.ResNet(layers=..., ...)`` with every keyword that differs from the default.
        """
        if self.name:
            head, kwargs = f"resnetzoo.{self.name}", self._extras()
        else:
            head, kwargs = "resnetzoo.ResNet", {**self._custom(), **self._extras()}
        parts = [f"{k}={_literal(v)}" for k, v in kwargs.items()]
        if self._custom_stem_mid():
            parts = [p for p in parts if not p.startswith("stem=")]
            parts.append(f"stem=functools.partial(resnetzoo.stems.deep_stem, mid_chs={self.stem_mid})")
        return f"{head}({', '.join(parts)})"

    @property
    def expansion(self) -> int:
        """Output channels per ``plane``: 4 for bottlenecks, 1 for basic blocks."""
        return 4 if self.block == "bottleneck" else 1

    @property
    def num_features(self) -> int:
        """Channels of the last stage: the classifier's input."""
        return self.widths[-1] * self.expansion

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: every field, the constructor ``call`` and the ``kwargs`` as data."""
        data = {
            "name": self.name,
            "call": self.call(),
            "block": self.block,
            "layers": list(self.layers),
            "widths": list(self.widths),
            "groups": self.groups,
            "width_per_group": self.width_per_group,
            "stem": self.stem,
            "stem_width": self.stem_width,
            "stem_mid": self.stem_mid,
            "shortcut": self.shortcut,
            "norm": self.norm,
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "stride_in_1x1": self.stride_in_1x1,
            "ambiguous": [
                {"what": a.what, "choice": a.choice, "why": a.why, "alternative": a.alternative}
                for a in self.ambiguities
            ],
            "notes": list(self.notes),
            "left_out": list(self.left_out),
            "prefix": self.prefix,
            "alternatives": list(self.alternatives),
            "convention": self.convention,
        }
        return data

    def __str__(self) -> str:
        lines = [f"Architecture: {self.call()}"]
        where = f"under {self.prefix!r}" if self.prefix else "at the top level"
        lines.append(f"  keys        {where}, {self.convention} names")
        if self.alternatives:
            others = ", ".join(repr(a) for a in self.alternatives)
            lines.append(f"  also fits   {others} (choose with prefix=…, or --prefix)")
        for ambiguity in self.ambiguities:
            lines.append(f"  ambiguous   {ambiguity}")
        for note in self.notes:
            lines.append(f"  note        {note}")
        lines.append(f"  unseen      {NOT_IN_THE_WEIGHTS}")
        return "\n".join(lines)


def _literal(value: Any) -> str:
    # Strings with double quotes, as the docs write them; tuples as tuples.
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        inner = ", ".join(_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


# ------------------------------------------------------------------ parsing
@dataclass
class _Module:
    """The tensors of one module (``layer1.0.conv2``): leaf name → shape."""

    leaves: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def weight(self) -> tuple[int, ...] | None:
        return self.leaves.get("weight")

    @property
    def is_conv(self) -> bool:
        return self.weight is not None and len(self.weight) == 4

    @property
    def is_norm(self) -> bool:
        weight = self.weight
        return "running_mean" in self.leaves or (weight is not None and len(weight) == 1)


@dataclass
class _Parsed:
    """A native state dict sorted into stem, stages, head and the rest."""

    stem: dict[str, _Module] = field(default_factory=dict)
    stages: dict[int, dict[int, dict[str, _Module]]] = field(default_factory=dict)
    head: dict[str, _Module] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)

    def modules(self) -> dict[str, _Module]:
        """Every stem and block module by its name (the head excluded)."""
        out = dict(self.stem)
        for s, blocks in self.stages.items():
            for b, parts in blocks.items():
                out.update({f"layer{s}.{b}.{p}": m for p, m in parts.items()})
        return out

    def norms(self) -> dict[str, _Module]:
        """Every norm module by its name: stem, blocks and shortcuts."""
        return {name: m for name, m in self.modules().items() if m.is_norm}


def _parse(shapes: Mapping[str, Sequence[int]]) -> _Parsed:
    parsed = _Parsed()
    for key, shape in shapes.items():
        match = _KEY.fullmatch(key)
        if match is None:
            parsed.other.append(key)
            continue
        leaf, shape = match["leaf"], tuple(int(d) for d in shape)
        if match["stem"]:
            module = parsed.stem.setdefault(match["stem"], _Module())
        elif match["head"]:
            module = parsed.head.setdefault(match["head"], _Module())
        else:
            blocks = parsed.stages.setdefault(int(match["stage"]), {})
            module = blocks.setdefault(int(match["block"]), {}).setdefault(match["part"], _Module())
        module.leaves[leaf] = shape
    return parsed


def _short(key: str, limit: int = 80) -> str:
    # A crafted key can be thousands of characters long; a message shows its ends.
    return key if len(key) <= limit else f"{key[: limit - 20]}…{key[-19:]}"


def _show(keys: Sequence[str]) -> str:
    shown = ", ".join(_short(k) for k in keys[:_SHOWN_KEYS])
    return shown + (f", … ({len(keys)} keys)" if len(keys) > _SHOWN_KEYS else "")


def _not_a_resnet(shapes: Mapping[str, Sequence[int]]) -> ArchitectureError:
    keys = list(shapes)
    families = Counter(
        name for key in keys for name, pattern in _FAMILIES if pattern.search(key)
    )
    if families:
        family = families.most_common(1)[0][0]
        example = [k for k in keys if any(p.search(k) for n, p in _FAMILIES if n == family)]
        what = f"its keys look like {family}: {_show(example)}"
    elif keys:
        what = f"its keys look like: {_show(keys)}"
    else:
        what = "it holds no tensors"
    return ArchitectureError(
        f"this is not a ResNet: {what}. resnetzoo builds ResNets (a stem conv1, stages "
        f"layer1…layerN of residual blocks, a classifier fc, in any convention it reads); load "
        f"this checkpoint with the library that made it"
    )


@dataclass(frozen=True)
class _Body:
    """What the stages say: block kind, blocks, widths, groups, shortcut, and the channels out."""

    block: str
    layers: tuple[int, ...]
    widths: tuple[int, ...]
    groups: int
    width_per_group: int
    shortcut: str
    num_features: int


def _numbered_from(numbers: Sequence[int], start: int) -> bool:
    """Whether ``numbers`` are exactly ``start, start + 1, …`` (in any order)."""
    return sorted(numbers) == list(range(start, start + len(numbers)))


# ------------------------------------------------------------------ the inference
class _Inference:
    """One inference over a parsed state dict: collects facts, problems, notes and ambiguities."""

    def __init__(self, shapes: Mapping[str, Sequence[int]], convention: str, info: Mapping[str, str]) -> None:
        self.shapes = shapes
        self.parsed = _parse(shapes)
        self.convention = convention
        self.info = info
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.ambiguities: list[Ambiguity] = []
        self.left_out: list[str] = []

    # --------------------------------------------------------------- stem
    def stem(self) -> tuple[str, int, int | None, int] | None:
        """``(kind, width, mid, in_chans)`` of the stem, or ``None`` when it cannot be read."""
        stem = self.parsed.stem
        if "conv1" in stem and stem["conv1"].is_conv:
            out, in_chans, kh, kw = stem["conv1"].weight  # type: ignore[misc]
            if (kh, kw) != (7, 7):
                self.problems.append(
                    f"the stem convolution conv1 is {kh}x{kw} (a CIFAR-style stem?); resnetzoo's "
                    f"classic stem is 7x7 with a max-pool, so this network cannot be rebuilt as it was trained"
                )
            return "classic", out, None, in_chans
        convs = {i: stem.get(f"conv1.{i}") for i in (0, 3, 6)}
        if all(m is not None and m.is_conv for m in convs.values()):
            (mid, in_chans, *_), (mid2, *_), (width, *_) = (m.weight for m in convs.values())  # type: ignore[union-attr, misc]
            if mid != mid2:
                self.problems.append(
                    f"the deep stem's middle convolutions have {mid} and {mid2} channels (timm's "
                    f"'tiered' stem); resnetzoo's deep stem has one middle width"
                )
            return "deep", width, mid, in_chans
        if stem:
            self.problems.append(f"the stem is incomplete or unknown: it has {_show(sorted(stem))}")
        else:
            self.problems.append("there is no stem (conv1): the checkpoint is truncated or is only part of a network")
        return None

    # --------------------------------------------------------------- stages
    def stages(self) -> list[dict[int, dict[str, _Module]]] | None:
        stages = self.parsed.stages
        numbers = sorted(stages)
        if not numbers:
            self.problems.append("there are no residual stages (layer1, layer2 …)")
            return None
        if not _numbered_from(numbers, 1):
            have = ", ".join(f"layer{n}" for n in numbers[:8]) + (" …" if len(numbers) > 8 else "")
            missing = next((n for n in range(1, len(numbers) + 2) if n not in stages), None)
            self.problems.append(
                f"stage layer{missing} is missing (the checkpoint has {have}): the file is truncated "
                f"or was filtered; re-export it from the network, or load it into an explicit model "
                f"with strict=False"
            )
            return None
        for n in numbers:
            blocks = sorted(stages[n])
            if not _numbered_from(blocks, 0):
                missing = next((b for b in range(len(blocks) + 1) if b not in stages[n]), None)
                self.problems.append(
                    f"block layer{n}.{missing} is missing (layer{n} has blocks {_show([str(b) for b in blocks])}): "
                    f"the file is truncated or was filtered"
                )
                return None
        return [stages[n] for n in numbers]

    def _block_kind(self, stages: list[dict[int, dict[str, _Module]]]) -> str | None:
        """The blocks' kind (a ``conv3`` anywhere makes them bottlenecks); each block must have its parts."""
        bottleneck = any("conv3" in parts for blocks in stages for parts in blocks.values())
        kind, count = ("bottleneck", 3) if bottleneck else ("basic", 2)
        expected = {f"{part}{j}" for j in range(1, count + 1) for part in ("conv", "bn")}
        for s, blocks in enumerate(stages, start=1):
            for b, parts in blocks.items():
                own = {p for p in parts if not p.startswith("downsample.")}
                convs_ok = all(parts[f"conv{j}"].is_conv for j in range(1, count + 1) if f"conv{j}" in parts)
                if own != expected or not convs_ok:
                    missing = sorted(expected - own)
                    extra = sorted(own - expected)
                    what = "; ".join(
                        [*([f"{', '.join(missing)} missing"] if missing else []),
                         *([f"{', '.join(extra)} extra"] if extra else [])]  # fmt: skip
                    ) or "a convolution that is not 4-d"
                    self.problems.append(
                        f"block layer{s}.{b} is incomplete ({what}): a {kind} block has "
                        f"{', '.join(sorted(expected))}"
                    )
                    return None
        return kind

    def _block_shapes(self, kind: str, parts: dict[str, _Module]) -> tuple[int, int, int, int, int] | None:
        """``(in_chs, planes, width, groups, out_chs)`` of one block."""
        w1, w2 = parts["conv1"].weight, parts["conv2"].weight
        assert w1 is not None and w2 is not None  # checked by _block_kind
        if kind == "basic":
            planes, in_chs = w1[0], w1[1]
            if w1[2:] != (3, 3) or w2 != (planes, planes, 3, 3):
                return None
            return in_chs, planes, planes, 1, planes
        w3 = parts["conv3"].weight
        assert w3 is not None
        width, in_chs, out = w1[0], w1[1], w3[0]
        if w1[2:] != (1, 1) or w3[1:] != (width, 1, 1) or w2[0] != width or w2[2:] != (3, 3):
            return None
        if w2[1] == 0 or width % w2[1] or out % 4:
            return None
        return in_chs, out // 4, width, width // w2[1], out

    def body(self, stem_width: int) -> _Body | None:
        stages = self.stages()
        if stages is None:
            return None
        kind = self._block_kind(stages)
        if kind is None or self.problems:
            return None
        layers, planes_per_stage, widths, groups_per_stage, shortcuts = [], [], [], [], []
        in_chs = stem_width
        for s, blocks in enumerate(stages, start=1):
            first = self._block_shapes(kind, blocks[0])
            if first is None:
                self.problems.append(f"layer{s}.0 has convolution shapes no ResNet block has")
                return None
            block_in, planes, width, groups, out = first
            if block_in != in_chs:
                self.problems.append(f"layer{s}.0 takes {block_in} channels but the layer before gives {in_chs}")
                return None
            for b in range(1, len(blocks)):
                if self._block_shapes(kind, blocks[b]) != (out, planes, width, groups, out):
                    self.problems.append(f"layer{s}.{b} does not have the shapes of layer{s}'s other blocks")
                    return None
                if any(p.startswith("downsample") for p in blocks[b]):
                    self.problems.append(f"layer{s}.{b} has a shortcut projection; only a stage's first block may")
                    return None
            layers.append(len(blocks))
            planes_per_stage.append(planes)
            widths.append(width)
            groups_per_stage.append(groups)
            shortcuts.append((s, self._shortcut(s, blocks[0], block_in, out), s > 1 or block_in != out))
            in_chs = out
        # The 3x3 width is int(planes * width_per_group / 64) * groups (torchvision's formula).
        groups_seen = set(groups_per_stage)
        per_group = {
            Fraction(w, g) * 64 / p for w, g, p in zip(widths, groups_per_stage, planes_per_stage, strict=True)
        }
        if len(groups_seen) > 1 or len(per_group) > 1:
            self.problems.append(
                f"the stages disagree on groups {sorted(groups_seen)} or width per group "
                f"{sorted(str(w) for w in per_group)}; resnetzoo uses one value for the whole network"
            )
            return None
        groups, wpg = groups_seen.pop(), per_group.pop()
        if wpg.denominator != 1:
            self.problems.append(f"the 3x3 convolutions' widths fit no integer width_per_group (got {wpg})")
            return None
        shortcut = self._shortcut_kind(shortcuts)
        if shortcut is None:
            return None
        return _Body(kind, tuple(layers), tuple(planes_per_stage), groups, int(wpg), shortcut, in_chs)

    def _shortcut(self, stage: int, parts: dict[str, _Module], in_chs: int, out: int) -> str | None:
        """``"conv"``, ``"avgpool"``, ``None`` (no projection), or ``"?"`` for an unknown one."""
        down = {p.split(".")[1]: m for p, m in parts.items() if p.startswith("downsample.")}
        if not down:
            return None
        if set(down) == {"0", "1"} and down["0"].is_conv and down["1"].is_norm:
            conv = down["0"]
            kind = "conv"
        elif set(down) == {"1", "2"} and down["1"].is_conv and down["2"].is_norm:
            conv = down["1"]
            kind = "avgpool"
        else:
            self.problems.append(f"layer{stage}.0's shortcut has {_show(sorted('downsample.' + d for d in down))}: not a known shortcut")
            return "?"
        if conv.weight != (out, in_chs, 1, 1):
            self.problems.append(f"layer{stage}.0's shortcut convolution has shape {conv.weight}, expected {(out, in_chs, 1, 1)}")
            return "?"
        return kind

    def _shortcut_kind(self, shortcuts: list[tuple[int, str | None, bool]]) -> str | None:
        if any(kind == "?" for _, kind, _ in shortcuts):
            return None
        kinds = {kind for _, kind, _ in shortcuts if kind is not None}
        if len(kinds) > 1:
            self.problems.append(f"the stages use different shortcuts ({sorted(kinds)}); resnetzoo uses one kind")
            return None
        unneeded = [s for s, kind, needed in shortcuts if kind is not None and not needed]
        if unneeded:
            self.problems.append(
                f"layer{unneeded[0]}.0 has a shortcut projection where its input and output have the "
                f"same shape; resnetzoo's networks have none there"
            )
            return None
        missing = [s for s, kind, needed in shortcuts if kind is None and needed]
        if kinds and missing:
            self.problems.append(
                f"layer{missing[0]}.0 has no shortcut projection (downsample) although its shape "
                f"changes: the file is truncated or was filtered"
            )
            return None
        if not kinds:
            if missing:
                self.notes.append("no shortcut has weights: parameter-free zero-padding shortcuts (option A)")
                return "zero_pad"
            return "conv"
        return kinds.pop()

    # --------------------------------------------------------------- norms
    def norm(self) -> str | None:
        norms = self.parsed.norms()
        if not norms:
            self.problems.append("the network has no normalisation layers; resnetzoo's blocks always have one")
            return None
        stats = {"weight", "bias", "running_mean", "running_var"}
        with_stats = {n for n, m in norms.items() if stats <= set(m.leaves) <= {*stats, "num_batches_tracked"}}
        affine_only = {n for n, m in norms.items() if set(m.leaves) - {"num_batches_tracked"} == {"weight", "bias"}}
        odd = set(norms) - with_stats - affine_only
        if odd:
            self.problems.append(
                f"{_show(sorted(odd))}: norms without the usual tensors (weight, bias and, for "
                f"BatchNorm, running_mean and running_var); the file was edited or damaged"
            )
        if with_stats and affine_only:
            fewer_lack = len(affine_only) <= len(with_stats)
            fewer = sorted(affine_only if fewer_lack else with_stats)
            self.problems.append(
                f"{_show(fewer)} {'lack' if fewer_lack else 'have'} the running statistics that the other "
                f"norms {'have' if fewer_lack else 'lack'}: the file was edited or damaged"
            )
        counters = any("num_batches_tracked" in norms[n].leaves for n in with_stats)
        detectron2 = self.convention.startswith("detectron2")
        if len(with_stats) >= len(affine_only):
            if detectron2 and not counters:
                self.notes.append(
                    "detectron2 freezes its backbone's BatchNorms (FrozenBatchNorm2d, no num_batches_tracked): "
                    "built with norm='frozen_bn'; pass norm='batchnorm' to fine-tune them"
                )
                return "frozen_bn"
            return "batchnorm"
        if detectron2:
            self.ambiguities.append(Ambiguity(
                "norms with weight and bias only",
                "norm='frozen_bn' (statistics folded into weight and bias: mean 0 and variance 1 are filled in)",
                "detectron2 freezes BatchNorm and folds the statistics in its older checkpoints",
                "norm='groupnorm', for a model trained with MODEL.RESNETS.NORM='GN'",
            ))
            return "frozen_bn"
        self.ambiguities.append(Ambiguity(
            "norms with weight and bias only",
            "norm='groupnorm' (32 groups, as timm's resnet50_gn; the group count is not stored)",
            "GroupNorm has no running statistics",
            "BatchNorm saved from parameters() instead of state_dict(), whose lost statistics no "
            "choice can restore: re-save it from the model",
        ))
        return "groupnorm"

    # --------------------------------------------------------------- head
    def head(self, num_features: int) -> int | None:
        head = self.parsed.head
        if not head:
            return 0
        if set(head) == {"fc"}:
            fc = head["fc"]
            weight, bias = fc.weight, fc.leaves.get("bias")
            if weight is None or len(weight) != 2 or set(fc.leaves) != {"weight", "bias"}:
                self.problems.append(f"the classifier fc has {_show(sorted(fc.leaves))}; expected weight (2-d) and bias")
                return None
            classes, features = weight
            if bias != (classes,):
                self.problems.append(f"the classifier's bias has shape {bias}, its weight {weight}")
                return None
            if features != num_features:
                stages = len(self.parsed.stages)
                if features > num_features and stages < len(_DEFAULT_WIDTHS):
                    # The classifier was trained on a stage that is not in the file.
                    self.problems.append(
                        f"stage layer{stages + 1} is missing: the classifier fc takes {features} features, but "
                        f"the last stage in the checkpoint (layer{stages}) gives {num_features}; the file is "
                        f"truncated or was filtered: re-export it from the network, or load it into an explicit "
                        f"model with strict=False"
                    )
                else:
                    self.problems.append(
                        f"the classifier fc takes {features} features but the last stage gives {num_features}"
                    )
                return None
            if classes == 0:
                self.left_out += [k for k in self.shapes if k.startswith("fc.")]
                self.notes.append(
                    f"the classifier fc has 0 classes (a weight of shape {weight}): built without a "
                    f"classifier (num_classes=0); its empty tensors are not loaded"
                )
            return classes
        # fc.0, fc.2 …: an MLP where the classifier would be (MoCo v2, SimCLR, BYOL projection).
        layers = [head[n].weight for n in sorted(head, key=lambda n: int(n.split(".")[1]) if "." in n else -1)]
        dims = " → ".join(str(w[1]) for w in layers if w and len(w) == 2)
        last = layers[-1]
        out = f" → {last[0]}" if last and len(last) == 2 else ""
        self.left_out += [k for k in self.shapes if k.startswith("fc.")]
        self.notes.append(
            f"{', '.join(sorted(head))} form a projection head (an MLP {dims}{out}, as in MoCo v2, SimCLR "
            f"or BYOL), not a classifier: built without a classifier (num_classes=0) and the head is not loaded"
        )
        return 0

    # --------------------------------------------------------------- stride
    def stride(self, kind: str) -> bool:
        if kind != "bottleneck":
            return False
        what = "v1 or v1.5 bottlenecks (same weights, other outputs)"
        v15 = "v1.5 (stride_in_1x1=False, stride on the 3x3)"
        v1 = "v1 (stride_in_1x1=True, stride on the first 1x1)"
        info = {k: str(v).strip().strip("'\"").lower() for k, v in self.info.items()}
        decided: tuple[bool, str] | None = None
        if info.get("stride_in_1x1") in ("true", "false"):
            decided = info["stride_in_1x1"] == "true", f"the file says stride_in_1x1={info['stride_in_1x1']}"
        elif info.get("downsample_in_bottleneck") in ("true", "false"):
            value = info["downsample_in_bottleneck"]
            decided = value == "true", f"its config.json says downsample_in_bottleneck={value}"
        elif info.get("style") in ("caffe", "pytorch"):
            decided = info["style"] == "caffe", f"its mmpretrain config says style='{info['style']}'"
        elif self.convention.startswith("detectron2"):
            if info.get("__author__") == "torchvision":
                decided = False, "it was converted from torchvision (__author__='torchvision'), which is v1.5"
            else:
                decided = True, "detectron2's default is MODEL.RESNETS.STRIDE_IN_1X1=True (its MSRA weights)"
        elif self.convention.startswith("mmpretrain"):
            decided = False, "mmpretrain's default is style='pytorch'"
        else:
            library = {"transformers": "transformers' default is downsample_in_bottleneck=False"}.get(
                self.convention.split("-")[0], "torchvision, timm and transformers default to it"
            )
            decided = False, library
        v1_chosen, why = decided
        self.ambiguities.insert(0, Ambiguity(what, v1 if v1_chosen else v15, why, v15 if v1_chosen else v1))
        return v1_chosen

    def fewer_stages(self, body: _Body, stem_width: int) -> None:
        """Flag standard stages that stop early: a backbone cut on purpose, or a truncated file."""
        n = len(body.layers)
        if n >= len(_DEFAULT_WIDTHS) or body.widths != _DEFAULT_WIDTHS[:n] or stem_width != 64:
            return
        missing = ", ".join(f"layer{i}" for i in range(n + 1, len(_DEFAULT_WIDTHS) + 1))
        self.ambiguities.append(Ambiguity(
            f"{n} stage{'s' if n > 1 else ''} of a standard ResNet's {len(_DEFAULT_WIDTHS)}",
            f"built with the {n} the checkpoint holds (layers={body.layers})",
            f"a backbone cut after layer{n} (e.g. a detectron2 C4 backbone) has no {missing}",
            f"the file is truncated or was filtered ({missing} missing): re-export it from the network",
        ))  # fmt: skip

    # --------------------------------------------------------------- the whole
    def run(self) -> InferredArchitecture:
        # Mostly other keys, or no residual stage at all: another kind of network.
        if not self.parsed.stages or 2 * len(self.parsed.other) > len(self.shapes):
            raise _not_a_resnet(self.shapes)
        stem = self.stem()
        body = self.body(stem[1]) if stem is not None else None
        norm = self.norm() if body is not None else None
        num_classes = self.head(body.num_features) if body is not None and not self.problems else None
        unknown = [k for k in self.parsed.other if not k.endswith("num_batches_tracked")]
        stray = [k for k in unknown if not _INSIDE_THE_NETWORK.match(k)]
        if unknown and stray == unknown and len(stray) <= _MAX_STRAY_SHARE * len(self.shapes):
            # A few tensors beside the network (a loss's weight): build the network from the
            # rest; the report lists them as unexpected, so the load is not strict.
            self.notes.append(
                f"{len(stray)} {'tensor has' if len(stray) == 1 else 'tensors have'} no place in a ResNet and "
                f"{'is' if len(stray) == 1 else 'are'} not part of the network built: {_show(stray)}; a strict "
                f"load reports {'it' if len(stray) == 1 else 'them'} as unexpected"
            )
        elif unknown:
            self.problems.append(
                f"{len(unknown)} {'tensor has' if len(unknown) == 1 else 'tensors have'} no place in a ResNet: "
                f"{_show(unknown)} (a squeeze-excitation "
                f"or attention module, or another network's keys?); resnetzoo cannot rebuild this network. "
                f"To load what fits, name the architecture (resnetzoo inspect FILE --arch NAME; in Python, "
                f"load_weights(model, source, strict=False))"
            )
        biased = [f"{name}.bias" for name, m in self.parsed.modules().items() if m.is_conv and "bias" in m.leaves]
        if biased:
            self.problems.append(
                f"convolutions with a bias ({_show(biased)}); resnetzoo's convolutions have none (a norm follows each)"
            )
        if self.problems or stem is None or body is None or norm is None or num_classes is None:
            raise ArchitectureError("cannot tell the architecture: " + "; ".join(dict.fromkeys(self.problems)))
        kind, stem_width, stem_mid, in_chans = stem
        stride_in_1x1 = self.stride(body.block)
        self.fewer_stages(body, stem_width)
        inferred = InferredArchitecture(
            name=None,
            block=body.block,
            layers=body.layers,
            widths=body.widths,
            groups=body.groups,
            width_per_group=body.width_per_group,
            stem=kind,
            stem_width=stem_width,
            stem_mid=stem_mid,
            shortcut=body.shortcut,
            norm=norm,
            in_chans=in_chans,
            num_classes=num_classes,
            stride_in_1x1=stride_in_1x1,
            ambiguities=tuple(self.ambiguities),
            notes=tuple(self.notes),
            left_out=tuple(self.left_out),
            convention=self.convention,
        )
        claimed = self.info.get("arch")
        if isinstance(claimed, str) and _ANTI_ALIASED.search(claimed):
            raise ArchitectureError(
                f"the checkpoint says arch={claimed!r}: timm's anti-aliased ResNet, whose blur-pool filters are "
                f"not saved with the weights. Its tensors fit {inferred.call()}, but resnetzoo has no "
                f"anti-aliasing, so its outputs would differ: load it with timm.create_model({claimed!r}), or "
                f"into an explicit resnetzoo model with load_weights if you accept other outputs"
            )
        name = _name_of(inferred)
        notes = inferred.notes
        if claimed and claimed in ARCHITECTURES and claimed != name:
            notes += (f"the checkpoint says arch={claimed!r}, but its tensors are those of {name or 'another network'}",)
        return replace(inferred, name=name, notes=notes)


def _name_of(inferred: InferredArchitecture) -> str | None:
    """The named architecture whose keywords and default widths build exactly this network."""
    if inferred.widths != _DEFAULT_WIDTHS or inferred.stem_width != 64:
        return None
    if inferred.stem == "deep" and inferred.stem_mid != 32:
        return None
    spec = {field: getattr(inferred, field) for field in SPEC_FIELDS}
    return next((arch.name for arch in ARCHITECTURES.values() if arch.kwargs() == spec), None)


# ------------------------------------------------------------------ public API
def infer_architecture(
    shapes: Mapping[str, Sequence[int]],
    *,
    convention: str = "torchvision",
    info: Mapping[str, str] | None = None,
) -> InferredArchitecture:
    """Describe the ResNet whose tensors a native state dict holds.

    Args:
        shapes: native key → tensor shape (``{k: v.shape for k, v in state_dict.items()}``).
        convention: the naming convention the checkpoint was saved in; it decides the
            defaults for what shapes cannot tell (detectron2 uses v1 bottlenecks and frozen
            BatchNorm unless its file says otherwise).
        info: what the file says about itself, as strings: a ``config.json``'s
            ``downsample_in_bottleneck``, mmpretrain's ``style``, detectron2's
            ``__author__``, an ``arch`` entry, resnetzoo's ``stride_in_1x1``.

    Returns:
        the :class:`InferredArchitecture`: its ``kwargs()`` build the network, its
        ``call()`` is the same as source code, its ``ambiguities`` say what was chosen.

    Raises:
        ArchitectureError: the keys are not a ResNet's ("this is not a ResNet: its keys look
            like a Vision Transformer …"), or a ResNet with a stage or block missing, mixed
            block kinds, norms of two kinds, or modules resnetzoo has no place for; the
            message says what was found.
    """
    return _Inference(shapes, convention, dict(info or {})).run()


def guess_arch(shapes: Mapping[str, Sequence[int]]) -> str | None:
    """Name the architecture whose tensors a (possibly damaged) native state dict holds.

    Tolerant where :func:`infer_architecture` is strict: a tensor or two missing, or
    norms of two kinds, still name the architecture, since the blocks per stage, widths,
    stem and shortcut are what tell one architecture from another.

    Returns:
        the name (``"resnet101"``), or ``None`` when no named architecture fits.
    """
    inference = _Inference(shapes, "torchvision", {})
    if not inference.parsed.stages:
        return None
    stem = inference.stem()
    if stem is None:
        return None
    inference.problems.clear()  # an odd stem kernel still has its width
    body = inference.body(stem[1])
    if body is None:
        return None
    candidate = InferredArchitecture(
        name=None,
        block=body.block,
        layers=body.layers,
        widths=body.widths,
        groups=body.groups,
        width_per_group=body.width_per_group,
        stem=stem[0],
        stem_width=stem[1],
        stem_mid=stem[2],
        shortcut=body.shortcut,
    )
    return _name_of(candidate)
