"""Conversion out: a resnetzoo model in another library's names and file format.

The rename rules that read a library's checkpoints (:mod:`resnetzoo.remap.conventions`)
run backwards (:meth:`~resnetzoo.remap.conventions.Convention.reverse`) to write them:
:func:`export_state_dict` renames, :func:`export_checkpoint` writes the file the
library loads (a plain state dict for torchvision and timm, a ``save_pretrained``
folder for transformers, a ``{"meta", "state_dict"}`` checkpoint for mmpretrain).

Each library's ResNet can express only part of what resnetzoo builds: torchvision has
no deep stem, transformers no grouped convolutions or GroupNorm, and so on. What the
target cannot express is refused with the reason (:class:`~resnetzoo.ExportError`), never
written as a file that loads but computes something else. That includes what no tensor
shows: the dilation (``output_stride``) and the global pooling are read from the model
and refused, or carried in ``load_with`` where the library has the option (timm's
``output_stride=`` and ``global_pool=``). A bare state dict cannot show them (nor the
activation); its export assumes the libraries' defaults and its notes say so. Every export is checked by
reading it back through the forward rules: the same tensors must come back under the
same native names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from resnetzoo._io import save_safetensors, save_torch, write_text
from resnetzoo._version import __version__
from resnetzoo.architectures import ARCHITECTURES
from resnetzoo.errors import ExportError
from resnetzoo.infer import InferredArchitecture, infer_architecture, is_resnet_key
from resnetzoo.remap.conventions import NATIVE, get_convention, to_native

__all__ = ["LIBRARIES", "Exported", "export_checkpoint", "export_state_dict"]

#: The libraries a model can be written for, and the file each gets.
LIBRARIES: dict[str, str] = {
    "torchvision": "a state dict for torchvision.models.ResNet (.pth, or .safetensors)",
    "timm": "a state dict for timm's ResNet (.safetensors, or .pth)",
    "transformers": "a save_pretrained folder (config.json + model.safetensors) for ResNetForImageClassification",
    "mmpretrain": "an mmpretrain checkpoint {'meta', 'state_dict'} with backbone./head.fc. names (.pth)",
}

# Activation module classes and the name each library gives them.
_ACTS = {nn.ReLU: "relu", nn.SiLU: "silu", nn.GELU: "gelu", nn.LeakyReLU: "leaky_relu"}
_STANDARD_WIDTHS = (64, 128, 256, 512)


@dataclass(frozen=True)
class Exported:
    """A model renamed for another library, and how that library builds the model to load it into.

    Attributes:
        state_dict: the library's key → tensor (the model's own tensors, not copies).
        library: ``"torchvision"``, ``"timm"``, ``"transformers"`` or ``"mmpretrain"``.
        convention: the naming convention written (``"transformers-ResNetModel"`` …).
        architecture: the network, as :func:`~resnetzoo.infer.infer_architecture` reads it.
        load_with: Python code that builds the library's model for these weights.
        config: ``config.json`` for transformers; ``meta`` for mmpretrain; else empty.
        notes: what the reader should know (a projection head left out …).
    """

    state_dict: dict[str, torch.Tensor]
    library: str
    convention: str
    architecture: InferredArchitecture
    load_with: str
    config: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


# ------------------------------------------------------------------ the model
def _activation(model: nn.Module) -> str:
    """The activation's name (``"relu"`` …), or its class name when no library knows it."""
    module = getattr(model, "act1", None)  # the stem's, the same factory as the blocks'
    if not isinstance(module, nn.Module):
        module = next((m for m in model.modules() if type(m) in _ACTS), nn.ReLU())
    return _ACTS.get(type(module), type(module).__name__)


@dataclass(frozen=True)
class _Unseen:
    """What a model computes that its tensors do not show, read from the model itself.

    Attributes:
        act: the activation's name (``"relu"`` …).
        dilate: one bool per stage after the first: the stage dilates instead of striding
            (``output_stride`` 16 or 8, torchvision's ``replace_stride_with_dilation``).
        pool: the global pooling before the classifier (``"avg"``, ``"max"``, ``"avgmax"``,
            ``"catavgmax"``, ``""``).
        from_model: ``False`` for a bare state dict: the values above are assumed (the
            libraries' defaults), not read, and the notes say so.
    """

    act: str
    dilate: tuple[bool, ...]
    pool: str
    from_model: bool

    @property
    def output_stride(self) -> int | None:
        """timm's ``output_stride`` for this dilation, or ``None`` when timm cannot express it."""
        n = sum(self.dilate)
        tail = not any(self.dilate[: len(self.dilate) - n])  # only the last stages dilate
        stride = 32 // 2**n
        return stride if tail and stride in (8, 16, 32) else None


def _dilated_stages(model: nn.Module, num_stages: int) -> tuple[bool, ...]:
    """Per stage after the first: whether it dilates instead of striding (no strided convolution in it)."""
    flags = []
    for i in range(2, num_stages + 1):
        stage = getattr(model, f"layer{i}", None)
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)] if isinstance(stage, nn.Module) else []
        flags.append(bool(convs) and not any(max(m.stride) > 1 for m in convs))
    return tuple(flags)


def _pool_type(model: nn.Module) -> str:
    """The global pooling's kind: resnetzoo's and timm's ``global_pool.pool_type``; torchvision's avgpool is ``"avg"``."""
    pool = getattr(model, "global_pool", None)
    pool_type = getattr(pool, "pool_type", None)
    return pool_type if isinstance(pool_type, str) else "avg"


def _describe(
    model_or_sd: nn.Module | Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], InferredArchitecture, _Unseen, list[str]]:
    """Native state dict, architecture, what the tensors do not show, and notes of a model or checkpoint."""
    notes: list[str] = []
    if isinstance(model_or_sd, nn.Module):
        state = dict(model_or_sd.state_dict())
        stride = getattr(model_or_sd, "stride_in_1x1", None)
        info = {"stride_in_1x1": str(bool(stride))} if stride is not None else {}
        pool = _pool_type(model_or_sd)
        act, convention, from_model = _activation(model_or_sd), NATIVE.name, True
    elif isinstance(model_or_sd, Mapping):
        remapped = to_native(model_or_sd)
        remapped.check_one_convention()
        state, info, convention = remapped.state_dict, remapped.info, remapped.convention.name
        act, pool, from_model = "relu", "avg", False
        notes.append(
            "a state dict does not show the activation, the dilation (output_stride) or the global pooling: "
            "written for ReLU, output stride 32 and average pooling, which could not be checked "
            "(pass the model to carry or refuse others)"
        )
    else:
        raise TypeError(f"expected a model (nn.Module) or a state dict, got {type(model_or_sd).__name__}")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if pool == "catavgmax" and len(shapes.get("fc.weight", ())) == 2:
        # The classifier reads average and max side by side: twice the last stage's width.
        classes, features = shapes["fc.weight"]
        shapes["fc.weight"] = (classes, features // 2)
    architecture = infer_architecture(shapes, convention=convention, info=info)
    for key in architecture.left_out:
        state.pop(key)
    # Stray tensors beside the network (a loss's weight; the inference notes them) are not written.
    state = {key: value for key, value in state.items() if is_resnet_key(key, tuple(value.shape))}
    notes += list(architecture.notes)
    dilate = _dilated_stages(model_or_sd, len(architecture.layers)) if from_model else (False,) * (len(architecture.layers) - 1)
    return state, architecture, _Unseen(act, dilate, pool, from_model), notes


# ------------------------------------------------------------------ what each library can express
def _limits(library: str, a: InferredArchitecture, unseen: _Unseen) -> list[str]:
    """Why ``library`` cannot hold this network; empty when it can."""
    why: list[str] = []
    act = unseen.act
    standard = a.widths == _STANDARD_WIDTHS and a.stem_width == 64
    if a.shortcut == "zero_pad":
        why.append(f"{library} has no parameter-free (zero-padding) shortcut")
    if act not in _ACTS.values():
        why.append(f"resnetzoo does not know {library}'s name for this model's activation ({act})")
    if library == "torchvision":
        if a.stem != "classic":
            why.append("torchvision's ResNet has only the classic 7x7 stem, this model a deep stem: use timm")
        if a.shortcut == "avgpool":
            why.append("torchvision's ResNet has only strided 1x1 shortcuts, this model average-pools first (ResNet-D): use timm")
        if not standard or len(a.layers) != 4:
            why.append("torchvision's ResNet has four stages of widths 64, 128, 256, 512 after a 64-channel stem: use timm")
        if a.in_chans != 3:
            why.append(f"torchvision's ResNet takes 3 input channels, this model {a.in_chans}: use timm")
        if a.num_classes == 0:
            why.append("torchvision's ResNet always has a classifier fc, this model none: use timm (num_classes=0)")
        if act != "relu":
            why.append(f"torchvision's ResNet uses ReLU, this model {act}: use timm")
    elif library == "timm":
        if len(a.layers) != 4:
            why.append(f"timm's ResNet has four stages, this model {len(a.layers)}")
        if a.stem == "deep" and a.stem_mid is not None and 2 * a.stem_mid != a.stem_width:
            why.append("timm's deep stem is twice as wide at its output as in the middle")
        if a.norm == "groupnorm" and any(w % 32 for w in (*a.widths, a.stem_width)):
            why.append("timm's GroupNorm has 32 groups, which does not divide every width of this model")
    elif library == "transformers":
        if a.stem != "classic":
            why.append("transformers' ResNet has only the classic 7x7 stem, this model a deep stem")
        if a.shortcut == "avgpool":
            why.append("transformers' ResNet has only strided 1x1 shortcuts, this model average-pools first (ResNet-D)")
        if a.groups != 1 or a.width_per_group != 64:
            why.append("transformers' ResNet has no grouped or widened bottlenecks (ResNeXt, Wide ResNet)")
        if a.norm == "groupnorm":
            why.append("transformers' ResNet uses BatchNorm only, this model GroupNorm")
        if act != "relu":
            why.append(
                f"transformers' ResNet applies its hidden_act after the stem and each block but ReLU inside "
                f"the blocks, this model {act} throughout"
            )
    elif library == "mmpretrain":
        if _depth(a) is None:
            why.append(f"mmpretrain's ResNet has the blocks of depth 18, 34, 50, 101 or 152 only, this model {a.layers}")
        if not standard:
            why.append("mmpretrain's ResNet has widths 64, 128, 256, 512 after a 64-channel stem")
        if a.stem == "deep" and a.stem_mid != a.stem_width // 2:
            why.append("mmpretrain's deep stem is half as wide in the middle as at its output")
        if a.stem == "classic" and a.shortcut == "avgpool":
            why.append("resnetzoo writes mmpretrain's average-pool shortcut only with the deep stem (ResNetV1d)")
        if a.norm == "groupnorm":
            why.append("mmpretrain names GroupNorm layers gn1, gn2 …, which resnetzoo does not write")
        if act != "relu":
            why.append(f"mmpretrain's ResNet uses ReLU, this model {act}")
    why += _unseen_limits(library, a, unseen)
    if a.stride_in_1x1 and library in ("torchvision", "timm"):
        why.append(
            f"{library}'s bottlenecks are v1.5 (stride on the 3x3), this model v1: use transformers "
            f"(downsample_in_bottleneck) or mmpretrain (style='caffe')"
        )
    return why


def _owner(library: str) -> str:
    return f"{library}'" if library.endswith("s") else f"{library}'s"


def _unseen_limits(library: str, a: InferredArchitecture, unseen: _Unseen) -> list[str]:
    """What the target cannot express of what the tensors do not show: dilation and pooling.

    A file written without these would load strictly and compute something else, so
    they are refused where the library has no such option, and carried in ``load_with``
    where it has (timm's ``output_stride`` and ``global_pool``, torchvision's
    ``replace_stride_with_dilation`` for bottlenecks).
    """
    why: list[str] = []
    pattern = list(unseen.dilate)
    if any(unseen.dilate):
        if library == "torchvision" and a.block != "bottleneck":
            why.append(f"torchvision's BasicBlock has no dilation, this model dilates (replace_stride_with_dilation={pattern}): use timm")
        elif library == "timm" and unseen.output_stride is None:
            why.append(
                f"timm dilates only the last stages (output_stride=16 or 8), this model "
                f"replace_stride_with_dilation={pattern}"
                + (": use torchvision" if a.block == "bottleneck" else "")
            )
        elif library in ("transformers", "mmpretrain"):
            why.append(f"{_owner(library)} ResNet has no dilated stages, this model dilates (replace_stride_with_dilation={pattern}): use timm")
    if unseen.pool != "avg" and library != "timm":
        why.append(f"{_owner(library)} ResNet average-pools before its classifier, this model global_pool={unseen.pool!r}: use timm")
    return why


def _depth(a: InferredArchitecture) -> int | None:
    return next(
        (row.depth for row in ARCHITECTURES.values() if row.block == a.block and row.layers == a.layers), None
    )


# ------------------------------------------------------------------ how each library builds it
def _load_with(library: str, a: InferredArchitecture, unseen: _Unseen) -> str:
    classes = f"num_classes={a.num_classes}"
    act = unseen.act
    if library == "torchvision":
        norm = ", norm_layer=lambda c: torch.nn.GroupNorm(32, c)" if a.norm == "groupnorm" else ""
        if any(unseen.dilate):
            classes += f", replace_stride_with_dilation={list(unseen.dilate)}"
        if a.name and not norm:
            return f"model = torchvision.models.{a.name}({classes}); model.load_state_dict(state_dict)"
        block = "Bottleneck" if a.block == "bottleneck" else "BasicBlock"
        return (
            f"model = torchvision.models.resnet.ResNet(torchvision.models.resnet.{block}, {list(a.layers)}, "
            f"{classes}, groups={a.groups}, width_per_group={a.width_per_group}{norm}); "
            f"model.load_state_dict(state_dict)"
        )
    if library == "timm":
        extra = [classes] + ([f"in_chans={a.in_chans}"] if a.in_chans != 3 else [])
        extra += ["norm_layer='groupnorm'"] if a.norm == "groupnorm" else []
        extra += [f"act_layer='{act}'"] if act != "relu" else []
        extra += [f"output_stride={unseen.output_stride}"] if unseen.output_stride not in (None, 32) else []
        extra += [f"global_pool={unseen.pool!r}"] if unseen.pool != "avg" else []
        if a.name:  # timm has every named architecture under the same name
            return f"model = timm.create_model('{a.name}', {', '.join(extra)}); model.load_state_dict(state_dict)"
        block = "Bottleneck" if a.block == "bottleneck" else "BasicBlock"
        stem = []
        if a.stem == "deep":
            stem = [f"stem_width={a.stem_width // 2}", "stem_type='deep'"]
        elif a.stem_width != 64:
            stem = [f"stem_width={a.stem_width}"]
        options = [
            f"layers={list(a.layers)}",
            *(["cardinality=" + str(a.groups)] if a.groups != 1 else []),
            *([f"base_width={a.width_per_group}"] if a.width_per_group != 64 else []),
            *stem,
            *(["avg_down=True"] if a.shortcut == "avgpool" else []),
            *([f"channels={a.widths}"] if a.widths != _STANDARD_WIDTHS else []),
            *extra,
        ]
        return (
            f"model = timm.models.resnet.ResNet(block=timm.models.resnet.{block}, {', '.join(options)}); "
            f"model.load_state_dict(state_dict)"
        )
    if library == "transformers":
        cls = "ResNetForImageClassification" if a.num_classes else "ResNetModel"
        return f"model = transformers.{cls}.from_pretrained(folder)"
    return "model = mmpretrain.get_model(cfg); model.load_state_dict(checkpoint['state_dict'])  # cfg: checkpoint['meta']['cfg']"


def _transformers_config(a: InferredArchitecture, labels: list[str] | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "architectures": ["ResNetForImageClassification" if a.num_classes else "ResNetModel"],
        "model_type": "resnet",
        "num_channels": a.in_chans,
        "embedding_size": a.stem_width,
        "hidden_sizes": [w * a.expansion for w in a.widths],
        "depths": list(a.layers),
        "layer_type": a.block,
        "hidden_act": "relu",
        "downsample_in_first_stage": False,
        "downsample_in_bottleneck": a.stride_in_1x1,
    }
    if a.num_classes:
        names = labels if labels and len(labels) == a.num_classes else [f"LABEL_{i}" for i in range(a.num_classes)]
        config["id2label"] = {str(i): name for i, name in enumerate(names)}
        config["label2id"] = {name: i for i, name in enumerate(names)}
    config["resnetzoo_version"] = __version__
    return config


class _Raw(str):
    """Config text inserted as it is (a nested ``dict(...)``)."""


def _mm_dict(**items: Any) -> str:
    def literal(value: Any) -> str:
        if isinstance(value, tuple):
            return "(" + ", ".join(literal(v) for v in value) + (", )" if len(value) == 1 else ")")
        return repr(value)

    return "dict(" + ", ".join(f"{k}={v if isinstance(v, _Raw) else literal(v)}" for k, v in items.items()) + ")"


def _mmpretrain_meta(a: InferredArchitecture) -> dict[str, Any]:
    kind = {"classic": "ResNet", "deep": "ResNetV1d" if a.shortcut == "avgpool" else "ResNetV1c"}[a.stem]
    backbone: dict[str, Any] = {"type": kind, "depth": _depth(a), "num_stages": 4, "out_indices": (3,)}
    if a.groups != 1:
        backbone.update(type="ResNeXt", groups=a.groups, width_per_group=a.width_per_group)
        if a.stem == "deep":
            backbone.update(deep_stem=True, avg_down=a.shortcut == "avgpool")
    elif a.width_per_group != 64:  # Wide ResNet: mmpretrain widens the base and halves the expansion
        backbone.update(stem_channels=64, base_channels=a.width_per_group, expansion=4 * 64 // a.width_per_group)
    if a.in_chans != 3:
        backbone["in_channels"] = a.in_chans
    backbone["style"] = "caffe" if a.stride_in_1x1 else "pytorch"
    parts = {"type": "ImageClassifier", "backbone": _Raw(_mm_dict(**backbone)), "neck": _Raw(_mm_dict(type="GlobalAveragePooling"))}
    if a.num_classes:
        loss = _mm_dict(type="CrossEntropyLoss", loss_weight=1.0)
        parts["head"] = _Raw(_mm_dict(
            type="LinearClsHead", num_classes=a.num_classes, in_channels=a.num_features, loss=_Raw(loss), topk=(1, 5)
        ))
    return {
        "cfg": f"model = {_mm_dict(**parts)}\n",
        "style": backbone["style"],
        "converted_by": f"resnetzoo {__version__}",
    }


# ------------------------------------------------------------------ renaming
def _convention_for(library: str, a: InferredArchitecture) -> str:
    if library in ("torchvision", "timm"):
        return NATIVE.name
    if library == "transformers":
        return "transformers-ResNetForImageClassification" if a.num_classes else "transformers-ResNetModel"
    if library == "mmpretrain":
        if a.stem == "classic":
            return "mmpretrain"
        return "mmpretrain-v1d" if a.shortcut == "avgpool" else "mmpretrain-v1c"
    raise ValueError(f"unknown library {library!r}; resnetzoo writes {', '.join(LIBRARIES)}")


def _library_of(name: str) -> str:
    if name in LIBRARIES:
        return name
    library = name.split("-", 1)[0]
    if library in LIBRARIES:
        return library
    raise ValueError(f"cannot export to {name!r}; resnetzoo writes {', '.join(LIBRARIES)} (or one of their conventions)")


def _rename(state: dict[str, torch.Tensor], convention_name: str) -> dict[str, torch.Tensor]:
    """Native names → the convention's, checked by renaming back."""
    convention = get_convention(convention_name)
    if not convention.rules:
        return dict(state)
    backwards = convention.reverse()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        new_key, rule = backwards.rename(key)
        if rule is None or new_key in out:
            raise ExportError(f"{key!r} has no {convention_name} name: this model cannot be written in that convention")
        out[new_key] = tensor
    back = {convention.rename(key)[0]: tensor for key, tensor in out.items()}
    if back.keys() != state.keys() or any(back[k] is not state[k] for k in state):
        raise ExportError(f"the {convention_name} names do not read back to the same tensors; not exported")
    return out


def _categories(model: Any) -> list[str] | None:
    """The class names of the weight set a model was loaded from, when it says."""
    for attribute in ("weight_spec", "pretrained_cfg"):
        categories = getattr(getattr(model, attribute, None), "categories", None)
        if categories:
            return list(categories)
    return None


def _plan(model_or_sd: nn.Module | Mapping[str, torch.Tensor], to: str) -> Exported:
    library = _library_of(to)
    state, architecture, unseen, notes = _describe(model_or_sd)
    problems = _limits(library, architecture, unseen)
    if problems:
        raise ExportError(f"cannot write this {architecture.call()} for {library}: " + "; ".join(problems))
    convention = _convention_for(library, architecture)
    if to != library and to != convention:
        raise ExportError(f"this model is written in the {convention} convention, not {to}")
    labels = _categories(model_or_sd)
    config: dict[str, Any] = {}
    if library == "transformers":
        config = _transformers_config(architecture, labels)
    elif library == "mmpretrain":
        config = _mmpretrain_meta(architecture)
    return Exported(
        state_dict=_rename(state, convention),
        library=library,
        convention=convention,
        architecture=architecture,
        load_with=_load_with(library, architecture, unseen),
        config=config,
        notes=tuple(notes),
    )


# ------------------------------------------------------------------ public API
def export_state_dict(model_or_sd: nn.Module | Mapping[str, torch.Tensor], convention: str) -> dict[str, torch.Tensor]:
    """Rename a model's tensors to another library's names.

    >>> import resnetzoo
    >>> sd = resnetzoo.export_state_dict(resnetzoo.resnet18(), "transformers")
    >>> next(iter(sd))
    'resnet.embedder.embedder.convolution.weight'

    Args:
        model_or_sd: a resnetzoo (or torchvision/timm) ResNet, or a state dict in any
            convention resnetzoo reads. A model also tells its stride placement (v1) and
            activation, which a state dict cannot.
        convention: ``"torchvision"``, ``"timm"``, ``"transformers"``, ``"mmpretrain"``,
            or one of their conventions by name (``"transformers-ResNetModel"``).

    Returns:
        the library's key → tensor; the tensors are the model's own (not copies).
        Keys that are not part of the network (a projection head) are left out.

    Raises:
        ExportError: the library's ResNet cannot express this network (the message says
            why: a deep stem for torchvision, GroupNorm for transformers …).
        ArchitectureError: the state dict is not a ResNet that resnetzoo can describe.
        ValueError: an unknown library or convention.
    """
    return _plan(model_or_sd, convention).state_dict


def _check_destination(path: Path, *, overwrite: bool, folder: bool) -> None:
    if folder:
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"{path} exists and is not a folder; transformers writes a folder")
        taken = [p.name for p in (path / "config.json", path / "model.safetensors") if p.exists()]
        if taken and not overwrite:
            raise FileExistsError(f"{path} already holds {', '.join(taken)}; pass overwrite=True (--overwrite) to replace them")
    elif path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")


def _plain(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # CPU, contiguous, and one storage per tensor: safetensors refuses shared memory.
    return {key: tensor.detach().to("cpu").contiguous().clone() for key, tensor in state.items()}


def export_checkpoint(
    model_or_sd: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    to: str,
    overwrite: bool = False,
) -> Exported:
    """Write a model as the file another library loads, with that library's names.

    ==============  ===================================================================
    ``to``          written to ``path``
    ==============  ===================================================================
    torchvision     a state dict: ``torch.save`` (``.pth``/``.pt``) or safetensors
    timm            a state dict, as for torchvision
    transformers    a ``save_pretrained`` folder: ``config.json`` and ``model.safetensors``
    mmpretrain      ``torch.save({"meta": …, "state_dict": …})`` with ``backbone.`` and
                    ``head.fc.`` names; ``meta["cfg"]`` is the mmpretrain model config
    ==============  ===================================================================

    Each file is written to a temporary name and moved into place, so an interrupted
    export never leaves half a file; an existing file is replaced only with ``overwrite``.

    Args:
        model_or_sd: as for :func:`export_state_dict`.
        path: the file (or, for transformers, the folder) to write.
        to: the library (or convention) to write for.
        overwrite: replace existing files.

    Returns:
        the :class:`Exported`: its ``load_with`` is the code that loads the file in the library.

    Raises:
        ExportError: the library cannot express this network; nothing is written.
        FileExistsError: the destination exists and ``overwrite`` is ``False``.
        ValueError: an unknown library, or a file suffix the format does not use.
    """
    path = Path(path)
    exported = _plan(model_or_sd, to)
    if exported.library == "transformers":
        _check_destination(path, overwrite=overwrite, folder=True)
        path.mkdir(parents=True, exist_ok=True)
        # Weights first, config.json last: a folder is complete once it has a config.
        save_safetensors(path / "model.safetensors", _plain(exported.state_dict), metadata={"format": "pt"})
        write_text(path / "config.json", json.dumps(exported.config, indent=2) + "\n")
        return exported
    _check_destination(path, overwrite=overwrite, folder=False)
    suffix = path.suffix.lower()
    if exported.library == "mmpretrain":
        if suffix not in (".pth", ".pt"):
            raise ValueError(f"mmpretrain checkpoints are torch.save files; give a path ending in .pth, got {str(path)!r}")
        obj: Any = {"meta": exported.config, "state_dict": _plain(exported.state_dict)}
    elif suffix == ".safetensors":
        obj = None
    elif suffix in (".pth", ".pt", ".bin"):
        obj = _plain(exported.state_dict)
    else:
        raise ValueError(f"give a path ending in .pth or .safetensors for a {exported.library} state dict, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if obj is None:
        save_safetensors(path, _plain(exported.state_dict), metadata={"format": "pt"})
    else:
        save_torch(path, obj)
    return exported
