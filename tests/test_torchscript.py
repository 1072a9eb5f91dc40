"""TorchScript: every architecture and every factory default scripts, also after torch.fx tracing.

timm's and torchvision's models script, and deployment code (``torch.jit.script``,
FX-quantized models, torchvision's feature extractors scripted for C++) relies on it.
Each check compares the scripted output with eager, and round-trips the scripted model
through ``torch.jit.save``/``load`` as torchvision's ``_check_jit_scriptable`` does.
"""

import io

import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor

import resnetzoo
from resnetzoo import ResNet
from resnetzoo.factories import known_names

# Small enough to script and run in well under a second, with every grouped width valid.
SMALL = {"layers": (1, 1, 1, 1), "widths": (16, 16, 16, 16), "stem_width": 16, "num_classes": 5}
TINY = {"layers": (1, 1, 1, 1), "widths": (8, 16, 32, 64), "stem_width": 8, "block": "basic", "num_classes": 3}
# torch's SyncBatchNorm does not script (it calls torch.distributed); convert it back to
# BatchNorm for deployment. Every other registered part must script.
UNSCRIPTABLE_NORMS = {"syncbn"}


# torch 2.x deprecates TorchScript in favour of torch.export; the peers' users still script.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")


def _assert_scripts(model: torch.nn.Module, x: torch.Tensor) -> None:
    model.eval()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(scripted(x), expected, rtol=1e-4, atol=1e-4)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        torch.testing.assert_close(torch.jit.load(buffer)(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", resnetzoo.list_models())
def test_every_architecture_scripts(arch, randomize):
    model = randomize(resnetzoo.create_model(arch, **SMALL))
    _assert_scripts(model, torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize(
    "kwargs",
    [{"norm": name} for name in known_names("norm") if name not in UNSCRIPTABLE_NORMS]
    + [{"act": name} for name in known_names("act")]
    + [{"shortcut": name} for name in known_names("shortcut")]
    + [{"stem": name} for name in known_names("stem")]
    + [{"block": name} for name in known_names("block")]
    + [{"global_pool": pool} for pool in ("avg", "max", "avgmax", "catavgmax")]
    + [
        {"global_pool": "", "num_classes": 0},
        {"drop_rate": 0.2, "drop_path_rate": 0.2},
        {"output_stride": 8, "shortcut": "avgpool"},
        {"replace_stride_with_dilation": (True, False, True)},
        {"stride_in_1x1": True, "block": "bottleneck"},
        {"features_only": True, "out_indices": (0, -1)},
    ],
    ids=lambda kwargs: ",".join(f"{k}={v}" for k, v in kwargs.items()),
)
def test_every_factory_default_scripts_eager_and_after_fx(kwargs, randomize):
    model = randomize(ResNet(**{**TINY, **kwargs}))
    x = torch.randn(2, 3, 32, 32)
    _assert_scripts(model, x)
    # torch.fx, then TorchScript: how torchvision's feature extractors are deployed.
    extractor = create_feature_extractor(model.eval(), {"layer2": "c3", "layer4": "c5"})
    scripted = torch.jit.script(extractor)
    with torch.no_grad():
        expected = extractor(x)
        for key, value in scripted(x).items():
            torch.testing.assert_close(value, expected[key])


def test_forward_intermediates_scripts_with_timm_signature(randomize):
    # timm's FeatureGetterNet calls forward_intermediates from scripted code.
    model = randomize(ResNet(**TINY)).eval()

    class Getter(torch.nn.Module):
        def __init__(self, model: ResNet) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            out = self.model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
            assert isinstance(out, list)
            return out

    getter = Getter(model)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(getter)(x), getter(x))


def test_scripted_model_refuses_bad_indices_with_the_message(randomize):
    model = randomize(ResNet(**TINY)).eval()

    class Getter(torch.nn.Module):
        def __init__(self, model: ResNet) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            out = self.model.forward_intermediates(x, indices=[7], intermediates_only=True)
            assert isinstance(out, list)
            return out

    with pytest.raises(Exception, match="feature index 7 is out of range"):
        torch.jit.script(Getter(model))(torch.randn(1, 3, 32, 32))
