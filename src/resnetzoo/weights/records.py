"""Pretrained weight records: one :class:`WeightSpec` per published weight set.

Weights are data. Each record says where a weight file lives (a URL and, where
timm mirrors it, a Hugging Face Hub repository), how to check it (a sha256 or
the 8-hex sha256 prefix torchvision and timm put in their file names), which key
naming convention the file uses, and the facts needed to use it well: input
size, resize/crop, interpolation, normalisation, accuracy, size and licence.

The facts were copied from the installed packages, not read at run time:
torchvision 0.29 ``torchvision/models/resnet.py`` (``*_Weights`` enums) and
timm 1.0 ``timm/models/resnet.py`` (``default_cfgs``); timm accuracies from
timm's ``results/results-imagenet.csv``. ``tests/test_weights_records.py``
compares the table with the installed packages so it stays honest.

Names are ``"<arch>.<tag>"`` like timm's: ``tv_in1k`` is torchvision's
``IMAGENET1K_V1`` (what ``pretrained=True`` means to torchvision users and the
default here), ``tv2_in1k`` is ``IMAGENET1K_V2``.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from resnetzoo.architectures import natural_key

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "WeightSpec",
    "default_tag",
    "get_weights",
    "imagenet_categories",
    "list_pretrained",
    "register_weights",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_HEX = re.compile(r"[0-9a-f]+")
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k category names in class-index order.

    Read once from the package data file ``imagenet_classes.txt`` (generated
    from torchvision's ``_IMAGENET_CATEGORIES``), so records stay small.

    Returns:
        A tuple of 1000 strings; index ``i`` names logit ``i``.
    """
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text("utf-8")
    return tuple(text.splitlines())


def _check_hex(value: str | None, *, field: str, min_len: int) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _HEX.fullmatch(value) or not min_len <= len(value) <= 64:
        raise ValueError(
            f"WeightSpec.{field} must be {min_len} to 64 lower-case hex digits, got {value!r}"
        )


@dataclass(frozen=True)
class WeightSpec:
    """Where one pretrained weight set lives and how to use it.

    Attributes:
        arch: architecture name as in :func:`resnetzoo.list_models`, e.g. ``"resnet50"``.
        tag: weight-set tag, e.g. ``"tv_in1k"``; the full name is ``f"{arch}.{tag}"``.
        url: direct download URL, or None.
        hf_hub_id: Hugging Face Hub repository (``"org/name"``) holding the weights, or None.
        hf_filename: file inside ``hf_hub_id`` to fetch.
        hf_revision: Hub branch, tag or commit to pin, or None for the default branch.
        sha256: full sha256 hex digest of the file at ``url``, when known.
        sha256_prefix: leading hex digits of that digest (torchvision's and timm's
            ``name-<8 hex>.pth`` convention), when the full digest is not known.
            The Hub file is verified separately, against its content address.
        convention: key naming the file uses (``"torchvision"``, ``"timm"`` …), for the
            remap module.
        dataset: the label set of the classifier, e.g. ``"imagenet-1k"``.
        num_classes: classifier width in the file.
        input_size: ``(C, H, W)`` the weights were evaluated (torchvision) or trained
            (timm) at.
        test_input_size: larger ``(C, H, W)`` timm evaluates at, when it has one.
        resize_size: shorter-side resize before the centre crop (torchvision style), or None.
        crop_pct: centre-crop fraction at ``input_size`` (``crop / resize``).
        test_crop_pct: crop fraction at ``test_input_size``.
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"`` resize.
        mean: per-channel normalisation mean (RGB, 0..1 scale).
        std: per-channel normalisation std.
        top1: published ImageNet-1k validation top-1 accuracy in percent, measured at
            ``test_input_size``/``test_crop_pct`` when those are set, else at
            ``input_size``/``crop_pct``; None if unknown.
        top5: the matching top-5 accuracy.
        num_params: number of parameters of the model with this head.
        gflops: GFLOPs of one forward pass at ``input_size`` as published, or None.
        license: licence of the weights (SPDX-like id).
        recipe: URL describing how the weights were trained.
    """

    arch: str
    tag: str
    url: str | None = None
    hf_hub_id: str | None = None
    hf_filename: str = "model.safetensors"
    hf_revision: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    convention: str = "torchvision"
    dataset: str = "imagenet-1k"
    num_classes: int = 1000
    input_size: tuple[int, int, int] = (3, 224, 224)
    test_input_size: tuple[int, int, int] | None = None
    resize_size: int | None = None
    crop_pct: float = 0.875
    test_crop_pct: float | None = None
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    top1: float | None = None
    top5: float | None = None
    num_params: int | None = None
    gflops: float | None = None
    license: str | None = None
    recipe: str | None = None

    def __post_init__(self) -> None:
        for field in ("arch", "tag"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value or "." in value:
                raise ValueError(f"WeightSpec.{field} must be a non-empty string without '.', got {value!r}")
        if self.url is None and self.hf_hub_id is None:
            raise ValueError(f"WeightSpec {self.name}: give a url, an hf_hub_id, or both")
        _check_hex(self.sha256, field="sha256", min_len=64)
        _check_hex(self.sha256_prefix, field="sha256_prefix", min_len=8)
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"WeightSpec {self.name}: interpolation must be one of {_INTERPOLATIONS}, "
                f"got {self.interpolation!r}"
            )
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"WeightSpec {self.name}: num_classes must be a positive int, got {self.num_classes!r}")

    @property
    def name(self) -> str:
        """The full name, ``f"{arch}.{tag}"``."""
        return f"{self.arch}.{self.tag}"

    @property
    def categories(self) -> tuple[str, ...] | None:
        """Class names in logit order, or None when the label set is not built in.

        Loaded lazily from package data, so records stay small.
        """
        return imagenet_categories() if self.dataset == "imagenet-1k" else None

    def eval_sizes(self, *, use_test_size: bool = True) -> tuple[int | tuple[int, int], tuple[int, int]]:
        """``(resize, crop)`` of the evaluation preprocessing, as :meth:`transforms` uses them.

        Args:
            use_test_size: evaluate at ``test_input_size``/``test_crop_pct`` when the record
                has them (what timm's published accuracies were measured at), else at
                ``input_size``/``crop_pct``.

        Returns:
            ``resize``: the shorter-side size (an int; ``(H, W)`` for a non-square input),
            ``resize_size`` when given, else ``floor(size / crop_pct)`` as timm computes it;
            ``crop``: the centre crop ``(H, W)``.
        """
        test = use_test_size and self.test_input_size is not None
        height, width = (self.test_input_size if test else self.input_size)[1:]
        crop_pct = (self.test_crop_pct or self.crop_pct) if test else self.crop_pct
        if self.resize_size is not None and not test:
            return self.resize_size, (height, width)
        resize = (math.floor(height / crop_pct), math.floor(width / crop_pct))
        return (resize[0] if height == width else resize), (height, width)

    def transforms(self, *, use_test_size: bool = True) -> Callable[[Any], Any]:
        """The evaluation preprocessing of these weights, like torchvision's ``Weights.transforms()``.

        Resize the shorter side (:meth:`eval_sizes`, with the record's
        ``interpolation`` and antialiasing), centre-crop, convert to ``float32`` in
        ``[0, 1]``, and normalise with ``mean``/``std``: a ``torchvision.transforms.v2``
        pipeline that takes a PIL image or a ``uint8``/float tensor image
        (``(C, H, W)`` or batched ``(N, C, H, W)``) and returns a float tensor
        ``(…, 3, crop_h, crop_w)``. torchvision is imported here, on first use.

        Args:
            use_test_size: as for :meth:`eval_sizes`.

        Example::

            spec = get_weights("resnet50.tv2_in1k")
            batch = spec.transforms()(image).unsqueeze(0)  # Resize(232), CenterCrop(224), Normalize
        """
        import torch
        from torchvision.transforms import InterpolationMode, v2

        resize, crop = self.eval_sizes(use_test_size=use_test_size)
        return v2.Compose(
            [
                v2.Resize(resize, interpolation=InterpolationMode(self.interpolation), antialias=True),
                v2.CenterCrop(crop),
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(self.mean), list(self.std)),
            ]
        )

    def to_dict(self, *, include_categories: bool = False) -> dict[str, Any]:
        """A JSON-ready dict of every field plus ``name``.

        Args:
            include_categories: also include the class names (1000 strings for ImageNet).

        Returns:
            A dict of plain str/int/float/list/None values.
        """
        out: dict[str, Any] = {"name": self.name}
        for key, value in dataclasses.asdict(self).items():
            out[key] = list(value) if isinstance(value, tuple) else value
        if include_categories:
            categories = self.categories
            out["categories"] = None if categories is None else list(categories)
        return out


_REGISTRY: dict[str, WeightSpec] = {}
_DEFAULT_TAGS: dict[str, str] = {}


def register_weights(spec: WeightSpec, *, default: bool = False) -> WeightSpec:
    """Add a weight record to the table.

    The first record registered for an architecture becomes its default tag.

    Args:
        spec: the record to add.
        default: make ``spec.tag`` the architecture's default (what ``pretrained=True`` loads).

    Returns:
        ``spec``, so the call can be used as an expression.

    Raises:
        TypeError: ``spec`` is not a WeightSpec.
        ValueError: a record with the same name is already registered.
    """
    if not isinstance(spec, WeightSpec):
        raise TypeError(f"register_weights expects a WeightSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY:
        raise ValueError(
            f"weights {spec.name!r} are already registered; pick another tag for the new record"
        )
    _REGISTRY[spec.name] = spec
    if default or spec.arch not in _DEFAULT_TAGS:
        _DEFAULT_TAGS[spec.arch] = spec.tag
    return spec


def _archs_with_weights() -> list[str]:
    return sorted(_DEFAULT_TAGS, key=natural_key)


def _tags_of(arch: str) -> list[str]:
    return sorted((spec.tag for spec in _REGISTRY.values() if spec.arch == arch), key=natural_key)


def _unknown_arch_error(arch: str) -> ValueError:
    archs = _archs_with_weights()
    close = difflib.get_close_matches(arch, archs, n=3)
    hint = f" Did you mean {', '.join(repr(a) for a in close)}?" if close else ""
    return ValueError(
        f"architecture {arch!r} has no pretrained weights.{hint} "
        f"Architectures with weights: {', '.join(archs)}."
    )


def default_tag(arch: str) -> str:
    """The tag ``pretrained=True`` loads for ``arch``.

    Args:
        arch: architecture name, e.g. ``"resnet50"``.

    Returns:
        The default tag, e.g. ``"tv_in1k"``.

    Raises:
        ValueError: ``arch`` has no registered weights (lists the ones that do).
    """
    if arch not in _DEFAULT_TAGS:
        raise _unknown_arch_error(arch)
    return _DEFAULT_TAGS[arch]


def get_weights(name_or_arch: str, tag: str | None = None) -> WeightSpec:
    """Look up a weight record.

    Accepts ``"resnet50"`` (the default tag), ``"resnet50.tv2_in1k"``, or
    ``("resnet50", "tv2_in1k")``.

    Args:
        name_or_arch: an architecture name or a full ``"arch.tag"`` name.
        tag: the tag, when ``name_or_arch`` is an architecture; None for the default.

    Returns:
        The matching :class:`WeightSpec`.

    Raises:
        TypeError: an argument is not a string.
        ValueError: the architecture or tag is unknown (the message lists the known
            ones), or a tag is given twice with different values.
    """
    if not isinstance(name_or_arch, str):
        raise TypeError(f"weights name must be a string like 'resnet50.tv_in1k', got {type(name_or_arch).__name__}")
    if tag is not None and not isinstance(tag, str):
        raise TypeError(f"weights tag must be a string like 'tv_in1k' or None, got {type(tag).__name__}")
    arch, dot, name_tag = name_or_arch.partition(".")
    if dot and not name_tag:
        raise ValueError(f"{name_or_arch!r} ends with '.'; write 'arch' or 'arch.tag', e.g. 'resnet50.tv_in1k'")
    if name_tag and tag is not None and tag != name_tag:
        raise ValueError(f"conflicting tags: {name_or_arch!r} names tag {name_tag!r} but tag={tag!r} was given")
    tag = name_tag or tag
    if arch not in _DEFAULT_TAGS:
        raise _unknown_arch_error(arch)
    if tag is None:
        tag = _DEFAULT_TAGS[arch]
    spec = _REGISTRY.get(f"{arch}.{tag}")
    if spec is None:
        raise ValueError(
            f"architecture {arch!r} has no weights tagged {tag!r}; "
            f"known tags: {', '.join(_tags_of(arch))} (default: {_DEFAULT_TAGS[arch]})."
        )
    return spec


def list_pretrained(pattern: str | None = None) -> list[WeightSpec]:
    """All weight records in natural order (``resnet18.*`` before ``resnet101.*``), optionally filtered.

    Args:
        pattern: an :mod:`fnmatch` pattern matched against full names or architecture
            names, e.g. ``"resnet50"`` (its weight sets), ``"resnet50*"`` or
            ``"*.tv2_in1k"``; None for all.

    Returns:
        The matching records.
    """
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f"pattern must be a string like 'resnet50*' or None, got {type(pattern).__name__}")
    names = sorted(_REGISTRY, key=natural_key)
    if pattern is not None:
        names = [
            n
            for n in names
            if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(_REGISTRY[n].arch, pattern)
        ]
    return [_REGISTRY[n] for n in names]


# ----------------------------------------------------------------------------------------------
# The table.

def _tv(
    arch: str,
    tag: str,
    sha256_prefix: str,
    *,
    top1: float,
    top5: float,
    num_params: int,
    gflops: float,
    resize_size: int,
    recipe: str,
) -> WeightSpec:
    # torchvision names every file "<arch>-<sha256[:8]>.pth"; timm mirrors each one
    # on the Hub as timm/<arch>.<tag> with the same keys, saved as safetensors.
    return WeightSpec(
        arch=arch,
        tag=tag,
        url=f"https://download.pytorch.org/models/{arch}-{sha256_prefix}.pth",
        hf_hub_id=f"timm/{arch}.{tag}",
        sha256_prefix=sha256_prefix,
        convention="torchvision",
        resize_size=resize_size,
        crop_pct=224 / resize_size,
        top1=top1,
        top5=top5,
        num_params=num_params,
        gflops=gflops,
        license="bsd-3-clause",
        recipe=recipe,
    )


def _timm(
    arch: str,
    tag: str,
    url: str,
    *,
    top1: float,
    top5: float,
    num_params: int,
    input_size: int,
    test_input_size: int,
    crop_pct: float,
    test_crop_pct: float,
) -> WeightSpec:
    # timm's clean_checkpoint.py names files "<name>-<sha256[:8]>.pth" like torchvision.
    sha256_prefix = url.rsplit("-", 1)[1].split(".", 1)[0]
    return WeightSpec(
        arch=arch,
        tag=tag,
        url=url,
        hf_hub_id=f"timm/{arch}.{tag}",
        sha256_prefix=sha256_prefix,
        convention="timm",
        input_size=(3, input_size, input_size),
        test_input_size=(3, test_input_size, test_input_size),
        crop_pct=crop_pct,
        test_crop_pct=test_crop_pct,
        interpolation="bicubic",
        top1=top1,
        top5=top5,
        num_params=num_params,
        license="apache-2.0",
        recipe=f"https://huggingface.co/timm/{arch}.{tag}",
    )


_TV_RESNET = "https://github.com/pytorch/vision/tree/main/references/classification#resnet"
_TV_RESNEXT = "https://github.com/pytorch/vision/tree/main/references/classification#resnext"
_TV_WIDE = "https://github.com/pytorch/vision/pull/912#issue-445437439"
_TV2 = "https://github.com/pytorch/vision/issues/3995#new-recipe"
_TV2_FIXRES = "https://github.com/pytorch/vision/issues/3995#new-recipe-with-fixres"
_TIMM_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download"
_TIMM_RELEASES_HF = "https://github.com/huggingface/pytorch-image-models/releases/download"

_TABLE: tuple[WeightSpec, ...] = (
    # torchvision: V1 (tv_in1k, the default) and V2 (tv2_in1k) for every ResNet it ships.
    _tv("resnet18", "tv_in1k", "f37072fd", top1=69.758, top5=89.078, num_params=11_689_512,
        gflops=1.814, resize_size=256, recipe=_TV_RESNET),
    _tv("resnet34", "tv_in1k", "b627a593", top1=73.314, top5=91.420, num_params=21_797_672,
        gflops=3.664, resize_size=256, recipe=_TV_RESNET),
    _tv("resnet50", "tv_in1k", "0676ba61", top1=76.130, top5=92.862, num_params=25_557_032,
        gflops=4.089, resize_size=256, recipe=_TV_RESNET),
    _tv("resnet50", "tv2_in1k", "11ad3fa6", top1=80.858, top5=95.434, num_params=25_557_032,
        gflops=4.089, resize_size=232,
        recipe="https://github.com/pytorch/vision/issues/3995#issuecomment-1013906621"),
    _tv("resnet101", "tv_in1k", "63fe2227", top1=77.374, top5=93.546, num_params=44_549_160,
        gflops=7.801, resize_size=256, recipe=_TV_RESNET),
    _tv("resnet101", "tv2_in1k", "cd907fc2", top1=81.886, top5=95.780, num_params=44_549_160,
        gflops=7.801, resize_size=232, recipe=_TV2),
    _tv("resnet152", "tv_in1k", "394f9c45", top1=78.312, top5=94.046, num_params=60_192_808,
        gflops=11.514, resize_size=256, recipe=_TV_RESNET),
    _tv("resnet152", "tv2_in1k", "f82ba261", top1=82.284, top5=96.002, num_params=60_192_808,
        gflops=11.514, resize_size=232, recipe=_TV2),
    _tv("resnext50_32x4d", "tv_in1k", "7cdf4587", top1=77.618, top5=93.698, num_params=25_028_904,
        gflops=4.23, resize_size=256, recipe=_TV_RESNEXT),
    _tv("resnext50_32x4d", "tv2_in1k", "1a0047aa", top1=81.198, top5=95.340, num_params=25_028_904,
        gflops=4.23, resize_size=232, recipe=_TV2),
    _tv("resnext101_32x8d", "tv_in1k", "8ba56ff5", top1=79.312, top5=94.526, num_params=88_791_336,
        gflops=16.414, resize_size=256, recipe=_TV_RESNEXT),
    _tv("resnext101_32x8d", "tv2_in1k", "110c445d", top1=82.834, top5=96.228, num_params=88_791_336,
        gflops=16.414, resize_size=232, recipe=_TV2_FIXRES),
    # torchvision's only resnext101_64x4d weights were trained with the new recipe.
    _tv("resnext101_64x4d", "tv_in1k", "173b62eb", top1=83.246, top5=96.454, num_params=83_455_272,
        gflops=15.46, resize_size=232, recipe="https://github.com/pytorch/vision/pull/5935"),
    _tv("wide_resnet50_2", "tv_in1k", "95faca4d", top1=78.468, top5=94.086, num_params=68_883_240,
        gflops=11.398, resize_size=256, recipe=_TV_WIDE),
    _tv("wide_resnet50_2", "tv2_in1k", "9ba9bcbe", top1=81.602, top5=95.758, num_params=68_883_240,
        gflops=11.398, resize_size=232, recipe=_TV2_FIXRES),
    _tv("wide_resnet101_2", "tv_in1k", "32ee1156", top1=78.848, top5=94.284, num_params=126_886_696,
        gflops=22.753, resize_size=256, recipe=_TV_WIDE),
    _tv("wide_resnet101_2", "tv2_in1k", "d733dc28", top1=82.510, top5=96.020, num_params=126_886_696,
        gflops=22.753, resize_size=232, recipe=_TV2),
    # timm: ResNet-D sets (RandAugment "ra2" recipe; the defaults for resnet*d) ...
    _timm("resnet18d", "ra2_in1k", f"{_TIMM_RELEASES}/v0.1-weights/resnet18d_ra2-48a79e06.pth",
          top1=73.794, top5=91.838, num_params=11_708_744, input_size=224, test_input_size=288,
          crop_pct=0.875, test_crop_pct=0.95),
    _timm("resnet34d", "ra2_in1k", f"{_TIMM_RELEASES}/v0.1-weights/resnet34d_ra2-f8dcfcaf.pth",
          top1=78.436, top5=94.344, num_params=21_816_904, input_size=224, test_input_size=288,
          crop_pct=0.875, test_crop_pct=0.95),
    _timm("resnet50d", "ra2_in1k", f"{_TIMM_RELEASES}/v0.1-weights/resnet50d_ra2-464e36ba.pth",
          top1=81.356, top5=95.738, num_params=25_576_264, input_size=224, test_input_size=288,
          crop_pct=0.875, test_crop_pct=0.95),
    _timm("resnet101d", "ra2_in1k", f"{_TIMM_RELEASES}/v0.1-weights/resnet101d_ra2-2803ffab.pth",
          top1=83.016, top5=96.452, num_params=44_568_392, input_size=256, test_input_size=320,
          crop_pct=0.95, test_crop_pct=1.0),
    _timm("resnet152d", "ra2_in1k", f"{_TIMM_RELEASES}/v0.1-weights/resnet152d_ra2-5cac0439.pth",
          top1=83.684, top5=96.740, num_params=60_212_040, input_size=256, test_input_size=320,
          crop_pct=0.95, test_crop_pct=1.0),
    # ... and "ResNet strikes back" A1 sets (LAMB + BCE, 600 epochs; arXiv:2110.00476).
    _timm("resnet50d", "a1_in1k", f"{_TIMM_RELEASES_HF}/v0.1-rsb-weights/resnet50d_a1_0-e20cff14.pth",
          top1=81.450, top5=95.218, num_params=25_576_264, input_size=224, test_input_size=288,
          crop_pct=0.95, test_crop_pct=1.0),
    _timm("resnet50", "a1_in1k", f"{_TIMM_RELEASES}/v0.1-rsb-weights/resnet50_a1_0-14fe96d1.pth",
          top1=81.214, top5=95.102, num_params=25_557_032, input_size=224, test_input_size=288,
          crop_pct=0.95, test_crop_pct=1.0),
)

for _spec in _TABLE:
    register_weights(_spec)
del _spec
