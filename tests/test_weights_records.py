"""The weight records table: honest against the installed torchvision and timm, and its lookup API."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.models import get_model_weights
from torchvision.models._meta import _IMAGENET_CATEGORIES

from resnetzoo.weights import (
    WeightSpec,
    default_tag,
    get_weights,
    imagenet_categories,
    list_pretrained,
    records,
    register_weights,
)

TV_ARCHS = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "wide_resnet50_2", "wide_resnet101_2",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
]  # fmt: skip
TV_TAGS = {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k"}
TIMM_SPECS = [s.name for s in list_pretrained() if s.convention == "timm"]


@pytest.fixture
def scratch_registry(monkeypatch):
    """Let a test register records without leaking them into other tests."""
    monkeypatch.setattr(records, "_REGISTRY", dict(records._REGISTRY))
    monkeypatch.setattr(records, "_DEFAULT_TAGS", dict(records._DEFAULT_TAGS))


@pytest.mark.parametrize("arch", TV_ARCHS)
def test_every_torchvision_weight_is_in_the_table_and_matches(arch):
    enum = get_model_weights(arch)
    ours = {s.tag for s in list_pretrained(f"{arch}.tv*")}
    assert ours == {TV_TAGS[w.name] for w in enum}, "a torchvision weight set is missing or extra"
    for weights in enum:
        spec = get_weights(arch, TV_TAGS[weights.name])
        meta = weights.meta
        assert spec.url == weights.url
        assert spec.url.endswith(f"-{spec.sha256_prefix}.pth")
        assert spec.top1 == meta["_metrics"]["ImageNet-1K"]["acc@1"]
        assert spec.top5 == meta["_metrics"]["ImageNet-1K"]["acc@5"]
        assert spec.num_params == meta["num_params"]
        assert spec.gflops == meta["_ops"]
        assert spec.recipe == meta["recipe"]
        assert spec.resize_size == weights.transforms.keywords.get("resize_size", 256)
        assert spec.input_size[1:] == (weights.transforms.keywords["crop_size"],) * 2
        assert spec.num_classes == len(meta["categories"])
        assert spec.convention == "torchvision"


def test_pretrained_true_means_torchvision_v1():
    for arch in TV_ARCHS:
        assert default_tag(arch) == "tv_in1k"
        assert get_weights(arch).tag == "tv_in1k"


def test_resnet_d_archs_default_to_a_timm_set():
    for arch in ("resnet18d", "resnet34d", "resnet50d", "resnet101d", "resnet152d"):
        spec = get_weights(arch)
        assert spec.convention == "timm" and spec.hf_hub_id == f"timm/{spec.name}"


@pytest.mark.parametrize("name", TIMM_SPECS)
def test_timm_records_match_timm_pretrained_cfgs(name):
    timm = pytest.importorskip("timm")
    spec = get_weights(name)
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    assert spec.url == cfg["url"]
    assert spec.hf_hub_id == cfg["hf_hub_id"]
    for key in ("input_size", "test_input_size", "crop_pct", "test_crop_pct", "interpolation", "mean", "std"):
        assert getattr(spec, key) == cfg[key], key
    assert spec.license == cfg["license"]
    with torch.device("meta"):
        model = timm.create_model(name.split(".")[0])
    assert spec.num_params == sum(p.numel() for p in model.parameters())


def test_torchvision_hub_mirrors_match_timm():
    timm = pytest.importorskip("timm")
    for spec in list_pretrained("*.tv*_in1k"):
        cfg = timm.models.get_pretrained_cfg(spec.name).to_dict()
        assert spec.hf_hub_id == cfg["hf_hub_id"]
        assert spec.url == cfg["url"]


def test_get_weights_accepts_every_form():
    full = get_weights("resnet50.tv2_in1k")
    assert get_weights("resnet50", "tv2_in1k") is full
    assert get_weights("resnet50.tv2_in1k", "tv2_in1k") is full
    assert get_weights("resnet50").name == "resnet50.tv_in1k"
    assert full.name == "resnet50.tv2_in1k"


def test_names_are_listed_in_natural_order():
    names = [s.name for s in list_pretrained()]
    assert names[:2] == ["resnet18.tv_in1k", "resnet18d.ra2_in1k"]
    assert names.index("resnet50d.ra2_in1k") < names.index("resnet101.tv2_in1k") < names.index("resnet152.tv_in1k")
    assert names.index("wide_resnet50_2.tv_in1k") < names.index("wide_resnet101_2.tv_in1k")
    with pytest.raises(ValueError) as info:
        get_weights("resnet5O")
    listed = str(info.value).split("Architectures with weights: ")[1].rstrip(".").split(", ")
    assert listed[:4] == ["resnet18", "resnet18d", "resnet34", "resnet34d"]
    assert listed.index("resnet50d") < listed.index("resnet101")


def test_unknown_tag_lists_the_known_tags():
    with pytest.raises(ValueError, match="tv2_in1k") as info:
        get_weights("resnet50", "v3")
    assert "'v3'" in str(info.value) and "tv_in1k" in str(info.value)


def test_unknown_arch_lists_archs_with_weights_and_suggests():
    with pytest.raises(ValueError, match="no pretrained weights") as info:
        get_weights("resnet5O")
    message = str(info.value)
    assert "resnext101_64x4d" in message and "Did you mean 'resnet50'" in message
    with pytest.raises(ValueError, match="no pretrained weights"):
        default_tag("vgg16")


def test_conflicting_tags_and_bad_types_are_rejected():
    with pytest.raises(ValueError, match="conflicting"):
        get_weights("resnet50.tv_in1k", "tv2_in1k")
    with pytest.raises(ValueError, match="ends with"):
        get_weights("resnet50.")
    with pytest.raises(TypeError):
        get_weights(50)
    with pytest.raises(TypeError):
        get_weights("resnet50", True)


def test_list_pretrained_pattern():
    names = [s.name for s in list_pretrained("resnet50*")]
    assert names == sorted(names)
    assert set(names) == {
        "resnet50.tv_in1k", "resnet50.tv2_in1k", "resnet50.a1_in1k",
        "resnet50d.ra2_in1k", "resnet50d.a1_in1k",
    }  # fmt: skip
    assert {s.arch for s in list_pretrained("*.tv2_in1k")} == {
        "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2",
        "resnext50_32x4d", "resnext101_32x8d",
    }  # fmt: skip
    assert list_pretrained("nothing*") == []
    assert len(list_pretrained()) == len(list_pretrained("*"))


def test_register_rejects_duplicates_and_sets_defaults(scratch_registry):
    spec = WeightSpec(arch="tinynet", tag="mine", url="https://example.com/tiny-0123abcd.pth")
    register_weights(spec)
    assert get_weights("tinynet") is spec  # the first record of an arch is its default
    with pytest.raises(ValueError, match="already registered"):
        register_weights(WeightSpec(arch="tinynet", tag="mine", hf_hub_id="me/tiny"))
    other = register_weights(WeightSpec(arch="tinynet", tag="better", hf_hub_id="me/tiny"), default=True)
    assert default_tag("tinynet") == "better" and get_weights("tinynet") is other
    with pytest.raises(TypeError):
        register_weights({"arch": "x"})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "a.b", "tag": "t", "url": "https://x/y"}, "without '.'"),
        ({"arch": "a", "tag": "", "url": "https://x/y"}, "non-empty"),
        ({"arch": "a", "tag": "t"}, "url, an hf_hub_id"),
        ({"arch": "a", "tag": "t", "url": "https://x/y", "sha256": "abc"}, "sha256"),
        ({"arch": "a", "tag": "t", "url": "https://x/y", "sha256_prefix": "XYZ12345"}, "sha256_prefix"),
        ({"arch": "a", "tag": "t", "url": "https://x/y", "interpolation": "lanczos"}, "interpolation"),
    ],
)
def test_weightspec_validates_its_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WeightSpec(**kwargs)


def test_categories_are_torchvisions_1000_names():
    spec = get_weights("resnet50")
    assert spec.categories == tuple(_IMAGENET_CATEGORIES)
    assert len(imagenet_categories()) == 1000
    assert WeightSpec(arch="a", tag="t", url="https://x/y", dataset="cub-200").categories is None


def test_to_dict_is_json_ready_and_omits_categories_by_default():
    spec = get_weights("resnet50d.ra2_in1k")
    plain = spec.to_dict()
    assert "categories" not in plain
    restored = json.loads(json.dumps(plain))
    assert restored["name"] == "resnet50d.ra2_in1k"
    assert restored["test_input_size"] == [3, 288, 288]
    assert restored["top1"] == spec.top1
    full = spec.to_dict(include_categories=True)
    assert len(full["categories"]) == 1000 and full["categories"][0] == "tench"


def test_records_are_frozen():
    spec = get_weights("resnet18")
    with pytest.raises(AttributeError):
        spec.url = "https://evil.example/x.pth"


def test_list_pretrained_matches_architecture_names_too():
    names = [spec.name for spec in list_pretrained("resnet50")]
    assert names == ["resnet50.a1_in1k", "resnet50.tv2_in1k", "resnet50.tv_in1k"]


# ----------------------------------------------------------------------------------------------
# transforms(): the evaluation preprocessing, as torchvision and timm build it


def _image(height: int = 300, width: int = 357) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["resnet50.tv_in1k", "resnet50.tv2_in1k", "resnext101_32x8d.tv2_in1k"])
def test_transforms_match_torchvisions_weights_transforms(name):
    from PIL import Image

    spec = get_weights(name)
    arch, tag = name.split(".")
    enum = get_model_weights(arch)[{v: k for k, v in TV_TAGS.items()}[tag]]
    ours, theirs = spec.transforms(), enum.transforms()
    pil = Image.fromarray(_image().permute(1, 2, 0).numpy())
    torch.testing.assert_close(ours(pil), theirs(pil), rtol=0, atol=1e-6)
    # A uint8 tensor is resized by torch's integer kernels, whose rounding may differ by one level.
    one_level = 1 / 255 / min(spec.std) + 1e-6
    torch.testing.assert_close(ours(_image()), theirs(_image()), rtol=0, atol=one_level)
    assert ours(_image()[None]).shape == (1, 3, 224, 224)


@pytest.mark.parametrize("name", TIMM_SPECS)
@pytest.mark.parametrize("use_test_size", [True, False])
def test_transforms_match_timms_eval_transform(name, use_test_size):
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict(), use_test_size=use_test_size)
    pil = Image.fromarray(_image().permute(1, 2, 0).numpy())
    ours = get_weights(name).transforms(use_test_size=use_test_size)(pil)
    torch.testing.assert_close(ours, create_transform(**config)(pil), rtol=0, atol=1e-6)
    assert ours.shape[-2:] == config["input_size"][1:]


def test_eval_sizes_say_what_transforms_does():
    assert get_weights("resnet50.tv2_in1k").eval_sizes() == (232, (224, 224))
    assert get_weights("resnet50.a1_in1k").eval_sizes() == (288, (288, 288))
    assert get_weights("resnet50.a1_in1k").eval_sizes(use_test_size=False) == (235, (224, 224))
    assert get_weights("resnet101d.ra2_in1k").eval_sizes(use_test_size=False) == (269, (256, 256))


@pytest.mark.slow
def test_transforms_do_not_import_torchvision_until_called():
    import subprocess
    import sys

    code = (
        "import sys, resnetzoo.weights as w\n"
        "spec = w.get_weights('resnet50')\n"
        "before = 'torchvision' in sys.modules\n"
        "spec.transforms()\n"
        "print(before, 'torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
