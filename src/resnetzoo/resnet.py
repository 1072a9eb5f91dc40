"""The ResNet network: a stem, a list of stages built by a pure function, and a head.

Data flows one way: :class:`ResNet` resolves its factories once
(:func:`resnetzoo.factories.resolve`), builds the stem, calls :func:`make_stages`
(a pure function returning the stage modules and their feature info), and adds
the classifier. State-dict keys are torchvision's for the default parts
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``), so
torchvision and timm checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.utils.checkpoint import checkpoint

from resnetzoo.factories import resolve

__all__ = ["ResNet", "make_stages"]

_VALID_OUTPUT_STRIDES = (8, 16, 32)


def _check_positive_ints(name: str, values: Sequence[int]) -> None:
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {values!r}")


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
    drop_path_rate: float = 0.0,
) -> tuple[list[nn.Sequential], list[dict[str, Any]]]:
    """Build the residual stages of a ResNet; a pure function of its arguments.

    Stage 1 keeps the stem's resolution, each later stage halves it, until the
    network's total reduction reaches ``output_stride``; from then on strides become
    dilations (the DeepLab trick), so the receptive field keeps growing at a fixed
    resolution. The stochastic-depth rate grows linearly from 0 at the first block
    to ``drop_path_rate`` at the last.

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
        drop_path_rate: stochastic-depth rate of the last block.

    Returns:
        ``(stages, feature_info)``: one ``nn.Sequential`` of blocks per stage, and per
        stage a dict ``{"module": "layer{i}", "num_chs": int, "reduction": int}``.
    """
    total_blocks = sum(layers)
    stages: list[nn.Sequential] = []
    feature_info: list[dict[str, Any]] = []
    reduction, dilation, block_idx = stem_reduction, 1, 0
    for stage_idx, (num_blocks, planes) in enumerate(zip(layers, widths, strict=True)):
        stride = 1 if stage_idx == 0 else 2
        first_dilation = dilation
        if reduction * stride > output_stride:
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
        act: activation factory or name (``"relu"``, ``"silu"``, ``"gelu"``, ``"leaky_relu"``).
        num_classes: classifier outputs; 0 gives no classifier (the pooled features).
        in_chans: input image channels.
        groups: groups of the 3x3 convolutions (ResNeXt cardinality).
        width_per_group: channels per group of the 3x3 convolutions at ``planes=64``.
        stride_in_1x1: stride on the bottleneck's first 1x1 convolution (v1) instead of
            its 3x3 (v1.5, the default).
        output_stride: total reduction, 32 (classification), 16 or 8 (dense prediction).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth of the last block, growing linearly from 0.
        zero_init_last: start each residual branch at zero (blocks' ``zero_init_last``).
        features_only: build a backbone whose forward returns the feature maps of
            ``out_indices`` instead of logits (no pooling, no classifier).
        out_indices: which features ``forward_intermediates`` returns by default:
            0 is the stem, ``i`` is stage ``layer{i}``.
        arch: architecture name, set by the named constructors; kept for reports.

    Attributes:
        arch: architecture name (``"resnet50"``), or ``None`` for a hand-built network.
        feature_info: one dict per feature level, stem first then each stage:
            ``{"module": name, "num_chs": channels, "reduction": stride from the input}``.
        num_features: channels of the last stage (the classifier's input).
        stem_names: names of the stem modules, registered at top level, in order.
        stage_names: names of the stages (``"layer1"`` …), in order.
        pretrained_cfg: the :class:`~resnetzoo.weights.WeightSpec` the weights came from,
            or ``None``.
        load_report: the :class:`~resnetzoo.remap.LoadReport` of the last
            :func:`~resnetzoo.remap.load_weights` into this model, or ``None``.

    Shape:
        ``forward``: ``(N, in_chans, H, W) -> (N, num_classes)`` (or ``(N, num_features)``
        with ``num_classes=0``; a list of feature maps with ``features_only``).
    """

    def __init__(
        self,
        *,
        layers: Sequence[int],
        block: str | Callable[..., nn.Module] = "bottleneck",
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: str | Callable[..., nn.Module] = "classic",
        stem_width: int = 64,
        shortcut: str | Callable[..., nn.Module] = "conv",
        norm: str | Callable[..., nn.Module] = "batchnorm",
        act: str | Callable[..., nn.Module] = "relu",
        num_classes: int = 1000,
        in_chans: int = 3,
        groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = False,
        output_stride: int = 32,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_last: bool = True,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        arch: str | None = None,
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
        self.num_classes = 0 if features_only else num_classes
        self.drop_rate = drop_rate
        self.features_only = features_only
        self.grad_checkpointing = False
        self.pretrained_cfg: Any = None
        self.load_report: Any = None

        stem_module = resolve("stem", stem)(in_chans, stem_width, norm=norm_fn, act=act_fn)
        # Registered one by one at top level so keys read conv1/bn1, not stem.conv1.
        self.stem_names = tuple(name for name, _ in stem_module.named_children())
        for name, module in stem_module.named_children():
            self.add_module(name, module)
        stem_reduction = getattr(stem_module, "reduction", 4)

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
            drop_path_rate=drop_path_rate,
        )
        self.stage_names = tuple(info["module"] for info in stage_info)
        for name, stage in zip(self.stage_names, stages, strict=True):
            self.add_module(name, stage)
        self.feature_info: list[dict[str, Any]] = [
            {"module": self.stem_names[-1], "num_chs": stem_width, "reduction": stem_reduction},
            *stage_info,
        ]
        self.out_indices = self._check_indices(
            out_indices if out_indices is not None else range(1, len(self.feature_info))
        )

        self.num_features = stage_info[-1]["num_chs"]
        if features_only:
            self.global_pool = nn.Identity()
            self.fc = nn.Identity()
        else:
            self.global_pool = nn.AdaptiveAvgPool2d(1)
            self.fc = self._make_classifier(num_classes)
        self._init_weights(zero_init_last=zero_init_last)

    # ----------------------------------------------------------------- building
    def _make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _init_weights(self, *, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    def _check_indices(self, indices: Sequence[int] | range) -> tuple[int, ...]:
        indices = tuple(indices)
        valid = range(len(self.feature_info))
        bad = [i for i in indices if not isinstance(i, int) or i not in valid]
        if not indices or bad:
            names = ", ".join(f"{i}={info['module']}" for i, info in enumerate(self.feature_info))
            raise ValueError(f"feature indices must be a non-empty subset of {list(valid)} ({names}), got {indices}")
        return tuple(sorted(set(indices)))

    # ------------------------------------------------------------ public API
    def get_classifier(self) -> nn.Module:
        """Return the classifier module (``fc``; an ``nn.Identity`` when there is none)."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one with ``num_classes`` outputs (0: none)."""
        if self.features_only:
            raise ValueError("a features_only model has no classifier to reset")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        self.num_classes = num_classes
        ref = next(self.parameters())
        self.fc = self._make_classifier(num_classes).to(device=ref.device, dtype=ref.dtype)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them.

        Cuts activation memory roughly to the block inputs at the cost of one more
        forward pass. Gradients and BatchNorm running statistics are the same as without.
        """
        self.grad_checkpointing = enable

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

    def _run_stage(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if not (self.grad_checkpointing and self.training and torch.is_grad_enabled()):
            return stage(x)
        for blk in stage:
            x = checkpoint(
                blk,
                x,
                use_reentrant=False,
                context_fn=lambda blk=blk: (contextlib.nullcontext(), _frozen_running_stats(blk)),
            )
        return x

    def _forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        for name in self.stem_names:
            x = getattr(self, name)(x)
        return x

    def forward_intermediates(
        self, x: torch.Tensor, *, indices: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Return the feature maps at ``indices`` (default ``out_indices``), shallow to deep.

        Index 0 is the stem's output, index ``i`` the output of stage ``layer{i}``;
        ``feature_info[i]`` gives each one's channels and reduction. Stages past the
        deepest index asked for are not run.

        Shape:
            ``(N, in_chans, H, W) -> [(N, feature_info[i]["num_chs"], H / r_i, W / r_i), ...]``.
        """
        wanted = self.out_indices if indices is None else self._check_indices(indices)
        x = self._forward_stem(x)
        features = [x] if 0 in wanted else []
        for i, name in enumerate(self.stage_names[: max(wanted)], start=1):
            x = self._run_stage(getattr(self, name), x)
            if i in wanted:
                features.append(x)
        return features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Run stem and stages: ``(N, in_chans, H, W) -> (N, num_features, H / 32, W / 32)``."""
        x = self._forward_stem(x)
        for name in self.stage_names:
            x = self._run_stage(getattr(self, name), x)
        return x

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """Pool, drop out and classify: ``(N, num_features, h, w) -> (N, num_classes)``.

        With ``pre_logits=True`` return the pooled ``(N, num_features)`` features.
        """
        x = torch.flatten(self.global_pool(x), 1)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_intermediates(x)
        return self.forward_head(self.forward_features(x))
