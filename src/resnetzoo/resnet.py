"""The ResNet network: a stem, a list of stages built by a pure function, and a head.

Data flows one way: :class:`ResNet` resolves its factories once
(:func:`resnetzoo.factories.resolve`), builds the stem, calls :func:`make_stages`
(a pure function returning the stage modules and their feature info), and adds
the head. State-dict keys are torchvision's for the default parts
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``), so
torchvision and timm checkpoints load with ``strict=True``.

Where resnetzoo uses a name that timm or torchvision use (``forward_intermediates``,
``feature_info``, ``pretrained_cfg``, ``global_pool``, ``reset_classifier``,
``replace_stride_with_dilation``, ``inplanes`` ...), it keeps their contract, so code
written for them runs unchanged; the "coming from timm" and "coming from torchvision"
guides list what is the same and what differs.

The network is TorchScript-able (``torch.jit.script``), also after ``torch.fx``
tracing, for every architecture and factory default; that is why this module has no
``from __future__ import annotations`` (a string annotation in a traced graph becomes
an unknown type name to TorchScript) and why ``forward`` walks ``named_children()``
(see :meth:`ResNet.forward_features`).
"""

import contextlib
import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.utils.checkpoint import checkpoint

from resnetzoo.factories import resolve
from resnetzoo.features import FeatureInfo, take_indices
from resnetzoo.heads import GlobalPool
from resnetzoo.weights.records import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["FEATURE_CLASSES", "ResNet", "ResNetFeatures", "make_stages"]

_VALID_OUTPUT_STRIDES = (8, 16, 32)
#: ``feature_cls`` values of a ``features_only`` model. Both return the list of feature
#: maps from ``forward_intermediates``; ``"getter"`` is timm's name for that mechanism.
FEATURE_CLASSES = ("list", "getter")
# Preprocessing of a model without a weight record: the ImageNet defaults of timm's ResNets.
_DEFAULT_DATA_CFG: dict[str, Any] = {
    "input_size": (3, 224, 224),
    "interpolation": "bilinear",
    "crop_pct": 0.875,
    "crop_mode": "center",
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
}


def _check_positive_ints(name: str, values: Sequence[int]) -> None:
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {values!r}")


def _one_of(name: str, value: Any, alias: str, alias_value: Any, default: Any) -> Any:
    """Resolve a keyword and its peer-library alias (``zero_init_residual`` for ``zero_init_last``)."""
    if value is not None and alias_value is not None and value != alias_value:
        raise ValueError(f"{name}={value!r} and its alias {alias}={alias_value!r} disagree; give one")
    if value is not None:
        return value
    return default if alias_value is None else alias_value


@contextlib.contextmanager
def _frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Keep BatchNorm running statistics unchanged while a checkpointed block is recomputed.

    Gradient checkpointing runs a block's forward twice in training mode; without this
    the second run would update every running mean/var a second time.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum, m.num_batches_tracked) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
        if m.num_batches_tracked is not None:
            m.num_batches_tracked = m.num_batches_tracked.clone()
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            m.num_batches_tracked = tracked


def _dilated_stages(
    num_stages: int,
    *,
    stem_reduction: int,
    output_stride: int,
    replace_stride_with_dilation: Sequence[bool] | None,
) -> list[bool]:
    """Which stages trade their stride 2 for a dilation: one bool per stage (the first never).

    ``replace_stride_with_dilation`` is torchvision's form (one bool per stage after the
    first); without it, ``output_stride`` dilates every stage that would take the total
    reduction past it (timm's and DeepLab's form).
    """
    if replace_stride_with_dilation is not None:
        flags = list(replace_stride_with_dilation)
        if len(flags) != num_stages - 1 or not all(isinstance(f, bool) for f in flags):
            raise ValueError(
                f"replace_stride_with_dilation must be {num_stages - 1} bools, one per stage after "
                f"the first, got {replace_stride_with_dilation!r}"
            )
        return [False, *flags]
    dilate, reduction = [False], stem_reduction
    for _ in range(num_stages - 1):
        dilate.append(reduction * 2 > output_stride)
        reduction *= 1 if dilate[-1] else 2
    return dilate


def make_stages(
    *,
    block: Callable[..., nn.Module],
    layers: Sequence[int],
    widths: Sequence[int],
    in_chs: int,
    shortcut: Callable[..., nn.Module],
    norm: Callable[[int], nn.Module],
    act: Callable[[], nn.Module],
    groups: int = 1,
    width_per_group: int = 64,
    stride_in_1x1: bool = False,
    stem_reduction: int = 4,
    output_stride: int = 32,
    replace_stride_with_dilation: Sequence[bool] | None = None,
    drop_path_rate: float = 0.0,
) -> tuple[list[nn.Sequential], list[dict[str, Any]]]:
    """Build the residual stages of a ResNet; a pure function of its arguments.

    Stage 1 keeps the stem's resolution, each later stage halves it, until the
    network's total reduction reaches ``output_stride``; from then on strides become
    dilations (the DeepLab trick), so the receptive field keeps growing at a fixed
    resolution. ``replace_stride_with_dilation`` (torchvision's form) chooses the
    dilated stages one by one instead. The stochastic-depth rate grows linearly from
    0 at the first block to ``drop_path_rate`` at the last.

    Args:
        block: block class following the block protocol (see :mod:`resnetzoo.blocks`).
        layers: number of blocks in each stage.
        widths: ``planes`` of each stage (output channels are ``width * block.expansion``).
        in_chs: channels coming out of the stem.
        shortcut: shortcut factory, called where a block changes resolution or width.
        norm: norm factory. act: activation factory.
        groups: groups of the 3x3 convolutions (ResNeXt).
        width_per_group: ``base_width`` of the blocks.
        stride_in_1x1: v1 stride placement for bottlenecks.
        stem_reduction: how much the stem reduces the resolution.
        output_stride: total reduction of the network, 8, 16 or 32.
        replace_stride_with_dilation: one bool per stage after the first: dilate that
            stage instead of striding it (overrides ``output_stride``).
        drop_path_rate: stochastic-depth rate of the last block.

    Returns:
        ``(stages, feature_info)``: one ``nn.Sequential`` of blocks per stage, and per
        stage a dict ``{"module": "layer{i}", "num_chs": int, "reduction": int}``.
    """
    dilate = _dilated_stages(
        len(layers),
        stem_reduction=stem_reduction,
        output_stride=output_stride,
        replace_stride_with_dilation=replace_stride_with_dilation,
    )
    total_blocks = sum(layers)
    stages: list[nn.Sequential] = []
    feature_info: list[dict[str, Any]] = []
    reduction, dilation, block_idx = stem_reduction, 1, 0
    for stage_idx, (num_blocks, planes) in enumerate(zip(layers, widths, strict=True)):
        stride = 1 if stage_idx == 0 else 2
        first_dilation = dilation
        if dilate[stage_idx]:
            dilation, stride = dilation * stride, 1
        else:
            reduction *= stride
        out_chs = planes * block.expansion
        blocks = []
        for i in range(num_blocks):
            block_stride = stride if i == 0 else 1
            needs_projection = block_stride != 1 or in_chs != out_chs
            downsample = (
                shortcut(in_chs, out_chs, stride=block_stride, dilation=dilation, norm=norm)
                if needs_projection
                else None
            )
            blocks.append(
                block(
                    in_chs,
                    planes,
                    stride=block_stride,
                    downsample=downsample,
                    groups=groups,
                    base_width=width_per_group,
                    dilation=dilation,
                    first_dilation=first_dilation if i == 0 else dilation,
                    norm=norm,
                    act=act,
                    drop_path=drop_path_rate * block_idx / max(total_blocks - 1, 1),
                    stride_in_1x1=stride_in_1x1,
                )
            )
            in_chs = out_chs
            block_idx += 1
        stages.append(nn.Sequential(*blocks))
        feature_info.append({"module": f"layer{stage_idx + 1}", "num_chs": out_chs, "reduction": reduction})
    return stages, feature_info


class ResNet(nn.Module):
    """A residual network assembled from pluggable parts.

    Every part can be replaced by a registered name, a class or any callable
    (see :mod:`resnetzoo.factories`); the named constructors
    (:func:`resnetzoo.resnet50` …) are this class with an architecture spec.

    Args:
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        block: block class or name (``"basic"``, ``"bottleneck"``).
        widths: ``planes`` per stage; output channels are ``width * block.expansion``.
        stem: stem factory or name (``"classic"`` 7x7 + max-pool, ``"deep"`` three 3x3).
        stem_width: channels out of the stem.
        shortcut: shortcut factory or name (``"conv"``, ``"avgpool"``, ``"zero_pad"``).
        norm: norm factory or name (``"batchnorm"``/``"bn"``, ``"groupnorm"``/``"gn"``,
            ``"frozen_bn"``, ``"syncbn"``), called with a channel count.
        norm_layer: torchvision's and timm's name for ``norm`` (give one of the two).
        act: activation factory or name (``"relu"``, ``"silu"``, ``"gelu"``, ``"leaky_relu"``).
        num_classes: classifier outputs; 0 gives no classifier (the pooled features).
        in_chans: input image channels.
        groups: groups of the 3x3 convolutions (ResNeXt cardinality).
        width_per_group: channels per group of the 3x3 convolutions at ``planes=64``.
        stride_in_1x1: stride on the bottleneck's first 1x1 convolution (v1) instead of
            its 3x3 (v1.5, the default).
        output_stride: total reduction, 32 (classification), 16 or 8 (dense prediction).
        replace_stride_with_dilation: torchvision's form: one bool per stage after the
            first, ``True`` to dilate that stage instead of striding it (any of its
            patterns; overrides ``output_stride``).
        global_pool: pooling before the classifier: ``"avg"`` (default), ``"max"``,
            ``"avgmax"``, ``"catavgmax"`` (twice the features) or ``""`` (none; only with
            ``num_classes=0``: the head then returns the feature map). See
            :class:`~resnetzoo.heads.GlobalPool`.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth of the last block, growing linearly from 0.
        zero_init_last: start each residual branch at zero (blocks' ``zero_init_last``);
            default ``True``, as timm (torchvision's default is ``False``).
        zero_init_residual: torchvision's name for ``zero_init_last`` (give one of the two).
        features_only: build a backbone (:class:`ResNetFeatures`) whose forward returns
            the feature maps of ``out_indices`` instead of logits.
        out_indices: with ``features_only``, the feature levels to return: indices
            (negative ones count from the end), or an int ``n`` for the last ``n``;
            default all five. 0 is the stem (timm's ``act1``, stride 2), ``i`` is stage
            ``layer{i}``.
        feature_cls: with ``features_only``, timm's feature-wrapper name: ``"list"`` or
            ``"getter"`` (the same here: a list of maps from ``forward_intermediates``).
        arch: architecture name, set by the named constructors; kept for reports.
        device: build the parameters and buffers on this device (``"meta"`` builds
            without memory), as timm's ``create_model(device=...)``.
        dtype: floating-point dtype of the parameters and buffers.

    Attributes:
        arch: architecture name (``"resnet50"``), or ``None`` for a hand-built network.
        feature_info: a :class:`~resnetzoo.features.FeatureInfo`, one dict per feature
            level, stem first then each stage:
            ``{"module": name, "num_chs": channels, "reduction": stride from the input}``.
        num_features: channels of the last stage (``forward_features``' output).
        head_hidden_size: width of the pooled features the classifier sees
            (``num_features``, twice that with ``"catavgmax"``).
        inplanes: channels out of the last stage, as torchvision's attribute (its FPN
            helpers read it).
        out_indices: the feature levels ``forward`` returns with ``features_only``
            (absolute, ascending; every level for a classifier).
        stem_names: names of the stem modules, registered at top level, in order.
        stage_names: names of the stages (``"layer1"`` …), in order.
        weight_spec: the :class:`~resnetzoo.weights.WeightSpec` of the weights this model
            was created with (``pretrained=...``, or a tag in ``create_model("arch.tag")``),
            or ``None``. :attr:`pretrained_cfg` is derived from it.
        load_report: the :class:`~resnetzoo.remap.LoadReport` of the last
            :func:`~resnetzoo.remap.load_weights` into this model, or ``None``.

    Shape:
        ``forward``: ``(N, in_chans, H, W) -> (N, num_classes)`` (or
        ``(N, head_hidden_size)`` with ``num_classes=0``, the unpooled map with
        ``global_pool=""`` too; a list of feature maps with ``features_only``).
    """

    # Properties TorchScript must not compile: they build Python dicts.
    __jit_unused_properties__ = ["pretrained_cfg", "default_cfg"]

    def __new__(cls, *args: Any, **kwargs: Any) -> "ResNet":
        # A backbone's forward returns a list of maps, a classifier's a tensor. TorchScript
        # needs one return type per class, so features_only builds the subclass.
        if kwargs.get("features_only") and cls is ResNet:
            cls = ResNetFeatures
        return super().__new__(cls)

    def __init__(
        self,
        *,
        layers: Sequence[int],
        block: str | Callable[..., nn.Module] = "bottleneck",
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: str | Callable[..., nn.Module] = "classic",
        stem_width: int = 64,
        shortcut: str | Callable[..., nn.Module] = "conv",
        norm: str | Callable[..., nn.Module] | None = None,
        norm_layer: str | Callable[..., nn.Module] | None = None,
        act: str | Callable[..., nn.Module] = "relu",
        num_classes: int = 1000,
        in_chans: int = 3,
        groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = False,
        output_stride: int = 32,
        replace_stride_with_dilation: Sequence[bool] | None = None,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_last: bool | None = None,
        zero_init_residual: bool | None = None,
        features_only: bool = False,
        out_indices: int | Sequence[int] | None = None,
        feature_cls: str | None = None,
        arch: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_positive_ints("layers", layers)
        _check_positive_ints("widths", widths)
        if len(widths) != len(layers):
            raise ValueError(f"widths has {len(widths)} entries but layers has {len(layers)}; give one per stage")
        _check_positive_ints("in_chans, stem_width, groups and width_per_group", [in_chans, stem_width, groups, width_per_group])
        if output_stride not in _VALID_OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {_VALID_OUTPUT_STRIDES}, got {output_stride!r}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0 (0 for no classifier), got {num_classes!r}")
        for name, rate in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate!r}")
        if features_only:
            if not isinstance(self, ResNetFeatures):
                raise TypeError(
                    f"features_only=True builds a ResNetFeatures backbone; {type(self).__name__} is a "
                    f"ResNet subclass whose forward returns logits: subclass ResNetFeatures instead"
                )
            if feature_cls is not None and feature_cls not in FEATURE_CLASSES:
                raise ValueError(
                    f"feature_cls must be one of {FEATURE_CLASSES} (both return a list of feature maps), "
                    f"got {feature_cls!r}; to use a timm feature wrapper class, wrap a classification "
                    f"model yourself, e.g. timm.models._features.FeatureGetterNet(model, out_indices=...)"
                )
        elif out_indices is not None or feature_cls is not None:
            raise ValueError(
                "out_indices and feature_cls choose the outputs of a feature backbone; pass "
                "features_only=True, or use forward_intermediates(x, indices=...) on this model"
            )
        zero_init = _one_of("zero_init_last", zero_init_last, "zero_init_residual", zero_init_residual, True)
        norm = _one_of("norm", norm, "norm_layer", norm_layer, "batchnorm")

        block_cls = resolve("block", block)
        if not isinstance(getattr(block_cls, "expansion", None), int):
            raise TypeError(
                f"block {block_cls!r} has no integer 'expansion' attribute; a block class must follow "
                f"the block protocol (subclass resnetzoo.BasicBlock or resnetzoo.Bottleneck)"
            )
        norm_fn, act_fn = resolve("norm", norm), resolve("act", act)

        self.arch = arch
        self.in_chans = in_chans
        self.stride_in_1x1 = stride_in_1x1
        self.drop_rate = drop_rate
        self.features_only = features_only
        self.grad_checkpointing = False
        self.weight_spec: Any = None
        self.load_report: Any = None

        with torch.device(device) if device is not None else contextlib.nullcontext():
            stem_module = resolve("stem", stem)(in_chans, stem_width, norm=norm_fn, act=act_fn)
            stem_reduction = self._add_stem(stem_module, channels=stem_width)
            stages, stage_info = make_stages(
                block=block_cls,
                layers=layers,
                widths=widths,
                in_chs=stem_width,
                shortcut=resolve("shortcut", shortcut),
                norm=norm_fn,
                act=act_fn,
                groups=groups,
                width_per_group=width_per_group,
                stride_in_1x1=stride_in_1x1,
                stem_reduction=stem_reduction,
                output_stride=output_stride,
                replace_stride_with_dilation=replace_stride_with_dilation,
                drop_path_rate=drop_path_rate,
            )
            self.stage_names = tuple(info["module"] for info in stage_info)
            for name, stage in zip(self.stage_names, stages, strict=True):
                self.add_module(name, stage)
            self.feature_info = FeatureInfo(
                [self._stem_info, *stage_info], out_indices if features_only else None
            )
            self.out_indices = self.feature_info.out_indices
            self.num_features = self.inplanes = stage_info[-1]["num_chs"]
            if features_only:
                global_pool, num_classes = "", 0
            self._set_head(num_classes, global_pool)
            self._init_weights(zero_init_last=zero_init)
        if dtype is not None:
            self.to(dtype=dtype)

    # ----------------------------------------------------------------- building
    def _add_stem(self, stem: nn.Module, *, channels: int) -> int:
        """Register the stem's children at top level (keys ``conv1``, not ``stem.conv1``); return its reduction."""
        self.stem_names = tuple(name for name, _ in stem.named_children())
        if not self.stem_names:
            raise ValueError("the stem factory returned a module without children; return an nn.Sequential of named layers")
        for name, module in stem.named_children():
            self.add_module(name, module)
        reduction = getattr(stem, "reduction", 4)
        feature_name, feature_reduction = getattr(stem, "feature", (self.stem_names[-1], reduction))
        if feature_name not in self.stem_names:
            raise ValueError(
                f"the stem's feature names {feature_name!r}, which is not one of its children {self.stem_names}"
            )
        self.stem_feature = feature_name
        self._stem_info = {"module": feature_name, "num_chs": channels, "reduction": feature_reduction}
        return reduction

    def _set_head(self, num_classes: int, global_pool: str) -> None:
        pool = GlobalPool(global_pool)
        if pool.is_identity() and num_classes > 0:
            raise ValueError(
                f"global_pool='' (no pooling) needs num_classes=0: a classifier needs pooled "
                f"features, got num_classes={num_classes}"
            )
        self.num_classes = num_classes
        self.global_pool = pool
        self.head_hidden_size = self.num_features * pool.feat_mult()
        self.fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def _init_weights(self, *, zero_init_last: bool) -> None:
        for m in self.modules():
            # Meta tensors hold no values to draw, and normal_ on them imports torch._dynamo
            # (seconds): a model built on the meta device for its shapes skips the draw.
            if isinstance(m, nn.Conv2d) and not m.weight.is_meta:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    # ---------------------------------------------------------- configuration
    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's pretrained config: a dict that ``timm.data.resolve_data_config(model=m)`` reads.

        From :attr:`weight_spec` when the model has one (input size, crop, interpolation,
        mean and std of those weights), else the ImageNet defaults of the architecture,
        plus the model's facts (``first_conv``, ``classifier``, ``pool_size``).
        ``default_cfg`` is the same dict, under timm's older name.
        """
        spec = self.weight_spec
        data = dict(_DEFAULT_DATA_CFG)
        if spec is not None:
            data.update(
                input_size=spec.input_size,
                interpolation=spec.interpolation,
                crop_pct=spec.crop_pct,
                mean=spec.mean,
                std=spec.std,
            )
        height, width = data["input_size"][1:]
        reduction = self.feature_info[-1]["reduction"]
        first_conv = next(name for name, m in self.named_modules() if isinstance(m, nn.Conv2d))
        cfg: dict[str, Any] = {
            "architecture": self.arch,
            "tag": None if spec is None else spec.tag,
            "url": None if spec is None else spec.url,
            "hf_hub_id": None if spec is None else spec.hf_hub_id,
            "num_classes": self.num_classes if spec is None else spec.num_classes,
            **data,
            "input_size": (self.in_chans, height, width),
            "fixed_input_size": False,
            "pool_size": (math.ceil(height / reduction), math.ceil(width / reduction)),
            "first_conv": first_conv,
            "classifier": "fc",
        }
        if spec is not None:
            if spec.test_input_size is not None:
                cfg["test_input_size"] = (self.in_chans, *spec.test_input_size[1:])
            if spec.test_crop_pct is not None:
                cfg["test_crop_pct"] = spec.test_crop_pct
            cfg["license"] = spec.license
        return cfg

    @property
    def default_cfg(self) -> dict[str, Any]:
        """The same dict as :attr:`pretrained_cfg` (timm's older name for it)."""
        return self.pretrained_cfg

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """Regexes that group parameters into stem and blocks, for timm's layer-wise LR decay.

        The same groups as timm's ResNet: ``stem`` (every stem module), and ``blocks``
        numbered per stage (``coarse=True``) or per block; the classifier falls in a last
        group of its own.
        """
        stem = "|".join(re.escape(name) for name in self.stem_names)
        return {"stem": rf"^(?:{stem})\.", "blocks": r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)"}

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> nn.Module | str:
        """Return the classifier module (``fc``; an ``nn.Identity`` when there is none), or its name."""
        return "fc" if name_only else self.fc

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a freshly initialised one with ``num_classes`` outputs (0: none).

        Args:
            num_classes: classifier outputs; 0 removes the classifier.
            global_pool: new pooling (see :class:`~resnetzoo.heads.GlobalPool`); ``None``
                keeps the current one, as timm, except that a classifier on an unpooled
                model (``global_pool=""``) gets ``"avg"``: a linear classifier needs pooled
                features (timm would build one that fails or, worse, runs on the wrong axis).

        The new head is on the model's device and dtype, in its training mode.
        """
        if self.features_only:
            raise ValueError("a features_only model has no classifier to reset")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        if global_pool is None:
            global_pool = self.global_pool.pool_type
            if global_pool == "" and num_classes > 0:
                global_pool = "avg"
        ref = next(self.parameters(), None)
        with torch.device(ref.device) if ref is not None else contextlib.nullcontext():
            self._set_head(num_classes, global_pool)
        if ref is not None:
            self.fc.to(dtype=ref.dtype)
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them.

        Cuts activation memory roughly to the block inputs at the cost of one more
        forward pass. Gradients and BatchNorm running statistics are the same as without.
        """
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Remove the layers no feature in ``indices`` needs, as timm's ``prune_intermediate_layers``.

        Stages past the deepest index become empty ``nn.Sequential``; with index 0 (the
        stem feature) the stem layers after it become ``nn.Identity``. When the network
        now ends earlier, ``num_features`` and ``head_hidden_size`` become that level's
        channels. The classifier and pooling are removed (``prune_head=True``, or when
        the network now ends earlier).

        Args:
            indices: as ``forward_intermediates``' ``indices``.
            prune_norm: accepted for timm's signature; a ResNet has no final norm.
            prune_head: also remove the classifier and pooling.

        Returns:
            The absolute indices, for ``forward_intermediates(x, indices=...)``.
        """
        taken, max_index = take_indices(len(self.feature_info), indices)
        for stage_index, name in enumerate(self.stage_names, start=1):
            if stage_index > max_index:
                setattr(self, name, nn.Sequential())  # empty, not removed: forward still walks it
        if max_index == 0:
            after_feature = self.stem_names[self.stem_names.index(self.stem_feature) + 1 :]
            for name in after_feature:
                setattr(self, name, nn.Identity())
        prune_end = max_index < len(self.feature_info) - 1
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if (prune_head or prune_end) and not self.features_only:
            self.reset_classifier(0, "")
        return taken

    # ---------------------------------------------------------------- forward
    @torch.jit.unused
    def _check_input(self, x: torch.Tensor) -> None:
        # Symbolic tracing (torch.fx, torchvision's create_feature_extractor) sees proxies,
        # not shapes: the check belongs to real calls only.
        if is_fx_symbolic_tracing():
            return
        if not (x.is_floating_point() or x.is_complex()):
            raise TypeError(
                f"{self.arch or 'ResNet'} expects floating-point images, got {x.dtype}; convert "
                f"uint8 images with x.float() / 255 and normalise them (weights' mean and std)"
            )
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{self.arch or 'ResNet'} expects images of shape (N, {self.in_chans}, H, W), got "
                f"{tuple(x.shape)}; build the model with in_chans={x.shape[1] if x.ndim == 4 else '?'} "
                f"for other channel counts"
            )

    @torch.jit.unused
    def _checkpointing(self) -> bool:
        return self.grad_checkpointing and self.training and torch.is_grad_enabled()

    @torch.jit.unused
    def _checkpointed(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        for blk in stage:
            x = checkpoint(
                blk,
                x,
                use_reentrant=False,
                context_fn=lambda blk=blk: (contextlib.nullcontext(), _frozen_running_stats(blk)),
            )
        return x

    def _intermediates(
        self, x: torch.Tensor, take: list[int], max_index: int, stop_early: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the network, collecting feature levels ``take``; stop after ``max_index`` if ``stop_early``."""
        # The stem and stage modules are top-level attributes (torchvision's key names) and
        # TorchScript cannot getattr() by a variable name, so walk named_children(): in
        # registration order, stem first, then stages, then the head (skipped here).
        if not torch.jit.is_scripting():
            self._check_input(x)
        intermediates: list[torch.Tensor] = []
        stage_index = 0
        for name, module in self.named_children():
            if name in self.stem_names:
                x = module(x)
                if name == self.stem_feature and 0 in take:
                    intermediates.append(x)
            elif name in self.stage_names:
                stage_index += 1
                if stop_early and stage_index > max_index:
                    pass  # (no `continue`: TorchScript unrolls this loop and forbids it)
                elif not torch.jit.is_scripting() and self._checkpointing():
                    x = self._checkpointed(module, x)
                else:
                    x = module(x)
                if stage_index in take:
                    intermediates.append(x)
        return x, intermediates

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the network and return feature maps along the way, with timm's signature and contract.

        Feature level 0 is the stem's (``feature_info[0]``: after ``act1``, stride 2, for
        the built-in stems), level ``i`` the output of stage ``layer{i}``.

        Args:
            x: images, ``(N, in_chans, H, W)``.
            indices: ``None`` for every level, an int ``n`` for the last ``n``, or a list of
                levels (negative ones count from the end).
            norm: accepted for timm's signature; a ResNet has no final norm.
            stop_early: do not run the stages past the deepest level asked for (the
                returned final map is then that stage's output).
            output_fmt: ``"NCHW"``, the only layout.
            intermediates_only: return only the list of feature maps.

        Returns:
            ``(final, intermediates)``: ``final`` is ``forward_features(x)`` (unless
            ``stop_early``), ``intermediates`` the maps of the levels asked for, shallow to
            deep, each ``(N, feature_info[i]["num_chs"], ~H / r_i, ~W / r_i)``; or only
            ``intermediates``.
        """
        if output_fmt != "NCHW":
            raise ValueError("output_fmt must be 'NCHW' (a ResNet's only layout), got '" + output_fmt + "'")
        take, max_index = take_indices(len(self.stage_names) + 1, indices)
        final, intermediates = self._intermediates(x, take, max_index, stop_early)
        if intermediates_only:
            return intermediates
        return final, intermediates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Run stem and stages: ``(N, in_chans, H, W) -> (N, num_features, H / 32, W / 32)``."""
        no_levels: list[int] = []
        return self._intermediates(x, no_levels, 0, False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, drop out and classify: ``(N, num_features, h, w) -> (N, num_classes)``.

        With ``pre_logits=True`` return the pooled ``(N, head_hidden_size)`` features.
        """
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ResNetFeatures(ResNet):
    """A :class:`ResNet` backbone: ``forward`` returns the feature maps of ``out_indices``.

    ``ResNet(..., features_only=True)`` and every named constructor with
    ``features_only=True`` build this class (timm's ``features_only`` models, with
    timm's default of all five levels). It has no pooling and no classifier; its
    ``feature_info.channels()`` and ``.reduction()`` describe what ``forward`` returns.
    A subclass rather than a flag so that ``forward`` has one return type, which
    TorchScript needs.

    Shape:
        ``(N, in_chans, H, W) -> [(N, feature_info[i]["num_chs"], ~H / r_i, ~W / r_i)
        for i in out_indices]``.
    """

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        take = [i for i in self.out_indices]
        return self._intermediates(x, take, max(take), True)[1]

