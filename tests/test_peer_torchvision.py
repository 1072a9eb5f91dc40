"""torchvision's model and backbone checks, re-expressed for resnetzoo models.

torchvision publishes no source distribution on PyPI and its wheel carries no tests,
so its suite cannot be fetched and run as timm's is (``test_peer_timm.py``). The
checks its suite makes on its ResNets are written here again, each test naming the
torchvision test it mirrors (``test/test_models.py`` and ``test/test_backbone_utils.py``,
torchvision 0.29). Where torchvision compares with recorded outputs (``expect/*.pkl``),
we compare with torchvision's own model, built from the same seed.
"""

import io
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import pytest
import torch
import torch.fx
import torch.nn as nn
import torchvision
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
from torchvision.ops import FrozenBatchNorm2d

import resnetzoo

# torch 2.x deprecates TorchScript in favour of torch.export; the peers' users still script.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")

# A basic, a bottleneck and a ResNeXt model: the families torchvision has.
TORCHVISION_ARCHS = ["resnet18", "resnet50", "resnext50_32x4d"]


def _seed(seed: int = 0) -> None:
    torch.manual_seed(seed)
    random.seed(seed)


def _check_jit_scriptable(model: nn.Module, args: tuple, eager_out: torch.Tensor) -> None:
    """As torchvision's helper: the scripted model matches eager, also after a save and load."""
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(*args), eager_out, atol=1e-4, rtol=1e-4)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(buffer)(*args), eager_out, atol=3e-4, rtol=3e-4)


def _check_fx_compatible(model: nn.Module, x: torch.Tensor, eager_out: torch.Tensor) -> None:
    """As torchvision's helper: ``torch.fx.symbolic_trace`` gives the same output."""
    with torch.no_grad():
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), eager_out)


def _check_input_backprop(model: nn.Module, x: torch.Tensor) -> None:
    """As torchvision's helper: the gradient reaches the input."""
    x = x.clone().requires_grad_(True)
    model(x)[0].sum().backward()
    assert x.grad is not None


@pytest.mark.slow
@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
def test_classification_model(arch):
    # Mirrors test_models.py::test_classification_model (num_classes=50, seed 0), with
    # torchvision's own model as the expected output. torchvision leaves the residual
    # branches' last norm at one; resnetzoo zero-inits it, as timm, unless told not to.
    _seed(0)
    reference = getattr(torchvision.models, arch)(num_classes=50).eval()
    _seed(0)
    model = resnetzoo.create_model(arch, num_classes=50, zero_init_residual=False).eval()
    for (name, ours), (_, theirs) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=name)
    x = torch.rand(1, 3, 64, 64)  # torchvision's size for its slow models; the comparison is live
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, reference(x))
    assert out.shape[-1] == 50
    _check_jit_scriptable(model, (x,), eager_out=out)
    _check_fx_compatible(model, x, eager_out=out)
    _check_input_backprop(model, x)


def _sliced_until(model: nn.Module, stop_layer: str) -> nn.Sequential:
    """The model's top-level children up to ``stop_layer``, run in order (torchvision's ``_make_sliced_model``)."""
    layers = OrderedDict()
    for name, layer in model.named_children():
        layers[name] = layer
        if name == stop_layer:
            break
    return nn.Sequential(layers)


@pytest.mark.slow
@pytest.mark.parametrize("dilate_layer_2", [True, False])
@pytest.mark.parametrize("dilate_layer_3", [True, False])
@pytest.mark.parametrize("dilate_layer_4", [True, False])
def test_resnet_dilation(dilate_layer_2, dilate_layer_3, dilate_layer_4, randomize):
    # Mirrors test_models.py::test_resnet_dilation: the same model, input and assertion.
    flags = (dilate_layer_2, dilate_layer_3, dilate_layer_4)
    model = resnetzoo.resnet50(replace_stride_with_dilation=flags)
    sliced = _sliced_until(model, stop_layer="layer4").eval()
    with torch.no_grad():
        out = sliced(torch.rand(1, 3, 224, 224))
    f = 2 ** sum(flags)
    assert out.shape == (1, 2048, 7 * f, 7 * f)
    # And beyond it: the same numbers as torchvision's dilated ResNet-50, weights shared.
    reference = randomize(torchvision.models.resnet50(replace_stride_with_dilation=list(flags))).eval()
    model.load_state_dict(reference.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_resnet_fpn_backbone(arch):
    # Mirrors test_backbone_utils.py::test_resnet_fpn_backbone. resnet_fpn_backbone() takes
    # only torchvision's names; it builds the backbone with FrozenBatchNorm2d and hands it
    # to _resnet_fpn_extractor, which is what we call with ours.
    backbone = resnetzoo.create_model(arch, norm_layer=FrozenBatchNorm2d)
    with torch.no_grad():
        y = _resnet_fpn_extractor(backbone, 3)(torch.rand(1, 3, 300, 300))
    assert list(y.keys()) == ["0", "1", "2", "3", "pool"]
    with pytest.raises(ValueError, match=r"Trainable layers should be in the range \[0,5\], got 6"):
        _resnet_fpn_extractor(backbone, 6)
    with pytest.raises(ValueError, match=r"Each returned layer should be in the range \[1,4\]. Got \[0, 1, 2, 3\]"):
        _resnet_fpn_extractor(backbone, 3, returned_layers=[0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"Each returned layer should be in the range \[1,4\]. Got \[2, 3, 4, 5\]"):
        _resnet_fpn_extractor(backbone, 3, returned_layers=[2, 3, 4, 5])


@pytest.mark.parametrize("trainable_layers", range(6))
def test_fpn_extractor_trains_the_same_parameters_as_torchvision(trainable_layers):
    # _resnet_fpn_extractor freezes by name prefix and sizes the FPN from `inplanes`.
    def trainable(backbone: nn.Module) -> list[str]:
        fpn = _resnet_fpn_extractor(backbone, trainable_layers)
        return [name for name, p in fpn.named_parameters() if p.requires_grad]

    ours = trainable(resnetzoo.resnet18(norm_layer=FrozenBatchNorm2d))
    assert ours == trainable(torchvision.models.resnet18(norm_layer=FrozenBatchNorm2d))


def test_feature_extraction_methods_equivalence():
    # Mirrors test_backbone_utils.py::TestFxFeatureExtraction::test_feature_extraction_methods_equivalence:
    # fx lists parameters in the order the forward uses them, so the blocks must run
    # their residual branch before the shortcut, as torchvision's.
    model = resnetzoo.resnet18(num_classes=1).eval()
    return_layers = {"layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4"}
    ilg_model = IntermediateLayerGetter(model, return_layers).eval()
    fx_model = create_feature_extractor(model, return_layers)
    for (n1, p1), (n2, p2) in zip(ilg_model.named_parameters(), fx_model.named_parameters(), strict=True):
        assert n1 == n2
        assert p1.equal(p2)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        ilg_out, fx_out = ilg_model(x), fx_model(x)
    assert list(ilg_out.keys()) == list(fx_out.keys())
    for key in ilg_out:
        assert ilg_out[key].equal(fx_out[key])


def _random_return_nodes(model: nn.Module) -> tuple[list[str], list[str]]:
    # As TestFxFeatureExtraction._get_return_nodes: 10 random tensor-valued nodes per mode.
    _seed(0)
    excluded = ["getitem", "floordiv", "size", "chunk", "_assert", "eq", "dim", "getattr"]
    train_nodes, eval_nodes = get_graph_node_names(model, suppress_diff_warning=True)
    train_nodes = [n for n in train_nodes if not any(x in n for x in excluded)]
    eval_nodes = [n for n in eval_nodes if not any(x in n for x in excluded)]
    return random.sample(train_nodes, 10), random.sample(eval_nodes, 10)


def _sum_outputs(out: Mapping[str, object]) -> torch.Tensor:
    total = torch.zeros(())
    for value in out.values():
        if isinstance(value, Sequence):
            total = total + sum(o.mean() for o in value if o is not None)
        elif isinstance(value, Mapping):
            total = total + sum(o.mean() for o in value.values() if o is not None)
        else:
            total = total + value.mean()
    return total


@pytest.mark.parametrize("arch", ["resnet18", "resnet50d"])
def test_fx_feature_extraction_builds_runs_and_scripts(arch):
    # Mirrors TestFxFeatureExtraction.test_build_fx_feature_extractor, test_forward_backward
    # and test_jit_forward_backward (num_classes=1).
    _seed(0)
    model = resnetzoo.create_model(arch, num_classes=1).train()
    train_nodes, eval_nodes = _random_return_nodes(model)
    create_feature_extractor(
        model, train_return_nodes={v: v for v in train_nodes}, eval_return_nodes=eval_nodes,
        suppress_diff_warning=True,
    )
    extractor = create_feature_extractor(
        model, train_return_nodes=train_nodes, eval_return_nodes=eval_nodes, suppress_diff_warning=True
    )
    with pytest.raises(ValueError, match="Either `return_nodes` or `train_return_nodes`"):
        create_feature_extractor(model, suppress_diff_warning=True)
    with pytest.raises(ValueError):
        create_feature_extractor(model, train_return_nodes=["l"], eval_return_nodes=["l"])
    x = torch.rand(1, 3, 96, 96)
    _sum_outputs(extractor(x)).backward()
    scripted = torch.jit.script(extractor)
    _sum_outputs(scripted(x)).backward()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:RCNN always returns a \\(Losses, Detections\\) tuple in scripting")
def test_faster_rcnn_with_resnetzoo_backbone_detects_as_torchvision(randomize):
    # The detection builders' path (fasterrcnn_resnet50_fpn): a ResNet-50 through
    # _resnet_fpn_extractor (with BatchNorm2d, as torchvision without backbone weights;
    # FrozenBatchNorm2d otherwise). Same weights, same detections, and the detector
    # scripts (test_models.py::test_detection_model scripts it too).
    kwargs = {"num_classes": 20, "min_size": 224, "max_size": 224, "box_score_thresh": 0.0}
    _seed(0)
    reference = randomize(
        fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, **kwargs), seed=1
    ).eval()
    detector = FasterRCNN(_resnet_fpn_extractor(resnetzoo.resnet50(), 5), **kwargs).eval()
    detector.load_state_dict(reference.state_dict(), strict=True)
    images = [torch.rand(3, 224, 200)]
    with torch.no_grad():
        expected, got = reference(images), detector(images)
    assert len(got[0]["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(got[0][key], expected[0][key], rtol=0, atol=0)
    scripted = torch.jit.script(detector)
    with torch.no_grad():
        _, scripted_out = scripted(images)
    torch.testing.assert_close(scripted_out[0]["boxes"], expected[0]["boxes"])
