"""The error analysis of the fine-tuning recipe: confusion, confused pairs, Grad-CAM, pointing game.

Grad-CAM and the pointing game are checked against numbers worked out by hand on
tiny cases; the confusion order against planted groups of confused classes; the
entry point on a tiny ResNet and a dozen 32-pixel images.
"""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import resnetzoo
from resnetzoo.recipes.finetune.analysis import (
    OUTPUT_NAMES,
    ConfusedPair,
    cam_peaks,
    confused_pairs,
    confusion_matrix,
    confusion_order,
    grad_cam,
    plot_confusion,
    pointing_game_hits,
    write_error_analysis,
)
from resnetzoo.recipes.finetune.images import normalize_batch

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


# ------------------------------------------------------------------------- confusion
def test_confusion_matrix_counts_true_rows_predicted_columns():
    confusion = confusion_matrix([0, 0, 1, 2, 2, 2], np.array([0, 1, 1, 2, 0, 0]), num_classes=4)
    assert confusion.dtype == torch.int64
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [2, 0, 1, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize(
    ("labels", "predictions", "error", "message"),
    [
        ([0, 1], [0], ValueError, "predictions has 1 entries but labels have 2"),
        ([0, 3], [0, 0], ValueError, r"labels\[1\] = 3 is not a class index in \[0, 3\)"),
        ([0, 1], [0, -1], ValueError, r"predictions\[1\] = -1"),
        ([0.0, 1.0], [0, 1], TypeError, "integer class indices"),
        ([[0, 1]], [[0, 1]], ValueError, "must be 1-d"),
    ],
)
def test_confusion_matrix_refuses_bad_input(labels, predictions, error, message):
    with pytest.raises(error, match=message):
        confusion_matrix(labels, predictions, num_classes=3)


def _planted(num_classes, groups, *, support=20, within=4, noise=()):
    """Labels and predictions where each group's classes mistake each other ``within`` times."""
    labels, predictions = [], []
    for c in range(num_classes):
        group = next((g for g in groups if c in g), [c])
        wrong = [(c, other) for other in group if other != c for _ in range(within)]
        wrong += [(t, p) for t, p in noise if t == c]
        for _, p in wrong:
            labels.append(c)
            predictions.append(p)
        labels += [c] * (support - len(wrong))
        predictions += [c] * (support - len(wrong))
    return torch.tensor(labels), torch.tensor(predictions)


def _contiguous(order, group):
    positions = sorted(order.index(c) for c in group)
    return positions == list(range(positions[0], positions[0] + len(group)))


def test_confusion_order_puts_planted_confusions_next_to_each_other():
    groups = [[0, 7], [3, 9, 5], [2, 11]]  # scattered in label order
    noise = [(0, 3), (9, 2), (4, 10)]  # single errors across groups, and between two loners
    labels, predictions = _planted(12, groups, noise=noise)
    order = confusion_order(confusion_matrix(labels, predictions, num_classes=12))

    assert sorted(order) == list(range(12))
    for group in groups:
        assert _contiguous(order, group), (group, order)
    # The noise links the three groups into one component, which has the most confusion
    # and comes first; then the pair of loners confused once; classes never confused
    # with anything close the order, in label order.
    assert set(order[:7]) == {0, 7, 3, 9, 5, 2, 11}
    assert set(order[7:9]) == {4, 10}
    assert order[9:] == [1, 6, 8]
    assert order == confusion_order(confusion_matrix(labels, predictions, num_classes=12))  # deterministic


def test_confusion_order_of_a_perfect_classifier_is_label_order():
    labels = torch.arange(6).repeat(3)
    assert confusion_order(confusion_matrix(labels, labels, num_classes=6)) == list(range(6))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_confusion_order_keeps_every_strongly_confused_group_together(data):
    num_classes = data.draw(st.integers(4, 24), label="classes")
    permutation = data.draw(st.permutations(range(num_classes)), label="permutation")
    sizes = data.draw(st.lists(st.integers(2, 4), max_size=num_classes // 2), label="sizes")
    groups, start = [], 0
    for size in sizes:
        if start + size <= num_classes:
            groups.append(permutation[start : start + size])
            start += size
    support = 200
    counts = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for group in groups:  # within a group: 10-20 % of a class goes to each other member
        for t in group:
            for p in group:
                if t != p:
                    counts[t, p] = data.draw(st.integers(20, 40))
    for _ in range(data.draw(st.integers(0, 2 * num_classes), label="noise")):
        t, p = data.draw(st.integers(0, num_classes - 1)), data.draw(st.integers(0, num_classes - 1))
        if t != p and counts[t, p] == 0:
            counts[t, p] = data.draw(st.integers(1, 4))  # at most 2 % between unrelated classes
    counts += torch.diag(support - counts.sum(dim=1))

    order = confusion_order(counts)
    assert sorted(order) == list(range(num_classes))
    for group in groups:
        assert _contiguous(order, group), (group, order)


# -------------------------------------------------------------------- confused pairs
def test_confused_pairs_by_hand():
    labels = [0, 0, 0, 1, 1, 2, 2, 2]
    predictions = [1, 1, 0, 0, 1, 1, 1, 0]
    ids = ["a", "b", "c", "d", "e", "f", "g", "h"]
    pairs = confused_pairs(labels, predictions, num_classes=3, image_ids=ids)
    assert pairs == [
        ConfusedPair(true=0, predicted=1, count=2, true_total=3, reverse_count=1, image_ids=("a", "b")),
        ConfusedPair(true=2, predicted=1, count=2, true_total=3, reverse_count=0, image_ids=("f", "g")),
        ConfusedPair(true=1, predicted=0, count=1, true_total=2, reverse_count=2, image_ids=("d",)),
        ConfusedPair(true=2, predicted=0, count=1, true_total=3, reverse_count=0, image_ids=("h",)),
    ]
    assert pairs[2].rate == 0.5
    top = confused_pairs(labels, predictions, num_classes=3, image_ids=ids, top=1, examples=1)
    assert top == [ConfusedPair(true=0, predicted=1, count=2, true_total=3, reverse_count=1, image_ids=("a",))]


def test_confused_pairs_refuses_duplicate_image_ids():
    with pytest.raises(ValueError, match="'x' appears twice"):
        confused_pairs([0, 1], [1, 0], num_classes=2, image_ids=["x", "x"])


# --------------------------------------------------------------------------- Grad-CAM
class _Toy(nn.Module):
    """Features are the input itself; the head is a mean pool and a linear layer (or a square)."""

    def __init__(self, weight: list[list[float]], *, squared: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(len(weight[0]), len(weight), bias=False)
        self.squared = squared
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(weight))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return self.fc(pooled**2 if self.squared else pooled)


FEATURES = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, -1.0]]]])  # (1, K=2, 2, 2)


def test_grad_cam_matches_a_hand_computation_for_a_linear_head():
    model = _Toy([[1.0, -2.0], [-1.0, 1.0]])
    maps, logits = grad_cam(model, FEATURES, targets=torch.tensor([0]))
    # d logit_0 / dA_k(ij) = w_0k / 4, so alpha = (1/4, -2/4) and the map is
    # relu((1 * A_0 - 2 * A_1) / 4) = relu([[1, 0], [3, 6]] / 4).
    assert torch.allclose(maps, torch.tensor([[[0.25, 0.0], [0.75, 1.5]]]))
    assert torch.allclose(logits, torch.tensor([[2.5, -2.5]]))
    # Class 1: -A_0 + A_1 = [[-1, -1], [-3, -5]] is negative everywhere, so the map is zero.
    maps, _ = grad_cam(model, FEATURES, targets=torch.tensor([1]))
    assert torch.equal(maps, torch.zeros(1, 2, 2))


def test_grad_cam_takes_the_mean_gradient_for_any_head():
    model = _Toy([[1.0, 1.0]], squared=True)
    maps, _ = grad_cam(model, FEATURES, targets=torch.tensor([0]))
    # logit = mean(A_0)^2 + mean(A_1)^2, so dlogit/dA_k(ij) = 2 mean(A_k) / 4: alpha = (1.25, 0)
    # and the map is relu(1.25 * A_0).
    assert torch.allclose(maps, 1.25 * FEATURES[:, 0])


def test_grad_cam_of_a_resnet_is_the_class_activation_map(randomize):
    torch.manual_seed(0)
    model = randomize(resnetzoo.ResNet(layers=[1, 1, 1, 1], widths=[8, 8, 8, 8], block="basic", stem_width=8,
                                       num_classes=5)).eval()
    x = torch.randn(3, 3, 64, 64)
    targets = torch.tensor([4, 0, 2])
    maps, logits = grad_cam(model, x, targets=targets)

    with torch.no_grad():
        features = model.forward_features(x)  # (3, 8, 2, 2)
        expected = torch.relu(torch.einsum("nk,nkhw->nhw", model.fc.weight[targets], features)) / 4
        assert torch.allclose(logits, model(x), atol=1e-5)
    assert maps.shape == (3, 2, 2)
    assert torch.allclose(maps, expected, atol=1e-6)
    assert maps.amax() > 0  # a real map, not zeros on both sides
    assert all(p.grad is None for p in model.parameters())  # nothing left on the model


def test_grad_cam_names_what_the_model_lacks():
    with pytest.raises(TypeError, match=r"forward_features\(\) and forward_head\(\).*\.module"):
        grad_cam(nn.Linear(3, 3), torch.zeros(1, 3), targets=torch.tensor([0]))


# ---------------------------------------------------------------------- pointing game
def _peak(row: int, column: int, size: int = 8) -> torch.Tensor:
    heat = torch.zeros(size, size)
    heat[row, column] = 1.0
    return heat


def test_pointing_game_equals_a_hand_count():
    tie = torch.zeros(8, 8)
    tie[0, 0] = tie[7, 7] = 1.0
    maps = torch.stack([
        _peak(2, 5),  # centre (5.5, 2.5) in [4, 7] x [1, 4]: hit
        _peak(2, 7),  # centre (7.5, 2.5): right of the box: miss
        torch.zeros(8, 8),  # no positive evidence: miss, though the box is the whole image
        tie,  # the first maximum in row-major order is (0.5, 0.5), not the one in the box: miss
        _peak(7, 0),  # centre (0.5, 7.5) in [0, 1] x [7, 8]: hit
    ])
    boxes = [(4, 1, 3, 3), (4, 1, 3, 3), (0, 0, 8, 8), (6, 6, 2, 2), (0, 7, 1, 1)]
    hits = pointing_game_hits(maps, boxes)
    assert hits.tolist() == [True, False, False, False, True]
    assert hits.float().mean().item() == pytest.approx(2 / 5)
    # Half a pixel of tolerance reaches the second peak; nothing reaches a map of zeros.
    assert pointing_game_hits(maps, boxes, tolerance=0.5).tolist() == [True, True, False, False, True]


def test_pointing_game_places_a_coarse_maps_peak_at_its_cells_centre():
    coarse = torch.tensor([[[0.1, 0.2], [0.9, 0.3]]])  # largest cell: row 1, column 0
    points, positive = cam_peaks(coarse, image_size=(64, 48))
    assert points.tolist() == [[12.0, 48.0]] and positive.tolist() == [True]  # (0.5 * 48/2, 1.5 * 64/2)
    assert pointing_game_hits(coarse, [(10, 40, 5, 10)], image_size=(64, 48)).tolist() == [True]
    assert pointing_game_hits(coarse, [(13, 40, 5, 10)], image_size=(64, 48)).tolist() == [False]


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([(0, 0, -1, 4)], r"boxes\[0\] .* width, height >= 0"),
        ([(0, 0, 0, 4)], r"boxes\[0\] is missing"),  # cropped away entirely
        ([(0, 0, float("inf"), 4)], "finite"),
        ([None], r"boxes\[0\] is missing"),
        ([(0, 0, 4)], "must be \\(x, y, width, height\\)"),
        (np.zeros((1, 3)), r"shape \(N, 4\)"),
        ([(0, 0, 1, 1), (0, 0, 1, 1)], "boxes has 2 entries"),
    ],
)
def test_pointing_game_refuses_bad_boxes(boxes, message):
    with pytest.raises(ValueError, match=message):
        pointing_game_hits(torch.ones(1, 4, 4), boxes)


# --------------------------------------------------------------------------- pictures
@pytest.mark.slow  # 3-8 s on a busy 2-core machine: 400 names to lay out
def test_confusion_picture_for_200_classes_names_every_class(tmp_path):
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(200).repeat(5)
    predictions = torch.where(torch.rand(1000, generator=gen) < 0.2, torch.randint(0, 200, (1000,), generator=gen),
                              labels)
    confusion = confusion_matrix(labels, predictions, num_classes=200)
    classes = [f"{c + 1:03d}.Some_rather_long_bird_name_{c}" for c in range(200)]
    assert plot_confusion(tmp_path / "confusion.png", confusion, classes=classes)
    with Image.open(tmp_path / "confusion.png") as png:
        width, height = png.size
    assert width >= 2000 and height >= 2000  # about 10 pixels per class and room for the names
    with pytest.raises(ValueError, match="classes has 3 names"):
        plot_confusion(tmp_path / "x.png", confusion, classes=classes[:3])


# ------------------------------------------------------------------------ entry point
@pytest.fixture(scope="module")
def tiny_run():
    """A tiny ResNet, twelve 32-pixel images of 3 classes, its predictions and boxes."""
    torch.manual_seed(0)
    model = resnetzoo.ResNet(layers=[1, 1, 1, 1], widths=[8, 8, 8, 8], block="basic", stem_width=8, num_classes=3,
                             zero_init_last=False).eval()
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        predictions = model(normalize_batch(images, mean=MEAN, std=STD)).argmax(dim=1)
    labels = torch.arange(12) % 3
    # None for 0, 4, 8; a box around the centre (16, 16) for odd images; a corner box for 2, 6, 10.
    boxes = [None if i % 4 == 0 else (4.0, 6.0, 20.0, 16.0) if i % 2 else (0.0, 0.0, 8.0, 8.0) for i in range(12)]
    return model, images, labels, predictions, boxes


def _analyse(out, tiny_run, **overrides):
    model, images, labels, predictions, boxes = tiny_run
    kwargs = dict(model=model, images=images, labels=labels, predictions=predictions,
                  classes=["gull", "tern", "wren"], image_ids=[f"id{i}" for i in range(12)], mean=MEAN, std=STD,
                  boxes=boxes, num_cams=4, pointing_images=None)
    return write_error_analysis(out, **{**kwargs, **overrides})


def test_write_error_analysis_writes_every_file_and_scores_the_pointing_game(tmp_path, tiny_run):
    model, images, labels, predictions, boxes = tiny_run
    result = _analyse(tmp_path, tiny_run)

    for name in ("confusion.png", "confusion.csv", "confused_pairs.csv", "cam/overview.png", "cam/index.csv"):
        assert (tmp_path / name).is_file(), name
        assert tmp_path / name in result.paths
    assert {p.name.split("/")[0] for p in tmp_path.iterdir()} <= set(OUTPUT_NAMES)
    cams = sorted(p.name for p in (tmp_path / "cam").glob("0*.png"))
    assert len(cams) == 4
    for name in cams:
        with Image.open(tmp_path / "cam" / name) as png:
            assert png.format == "PNG"

    with open(tmp_path / "confusion.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", "gull", "tern", "wren"]
    assert [list(map(int, r[1:])) for r in rows[1:]] == confusion_matrix(labels, predictions, num_classes=3).tolist()
    with open(tmp_path / "confused_pairs.csv", newline="") as f:
        pairs = list(csv.DictReader(f))
    assert [(int(r["true_label"]), int(r["predicted_label"]), int(r["count"])) for r in pairs] == [
        (p.true, p.predicted, p.count) for p in result.pairs
    ]
    with open(tmp_path / "cam" / "index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    assert sorted(r["file"] for r in index) == cams

    # The score is the hand-checked pointing game of the true class's Grad-CAM on every boxed image.
    boxed = [i for i in range(12) if boxes[i] is not None]
    maps, _ = grad_cam(model, normalize_batch(images[boxed], mean=MEAN, std=STD), targets=labels[boxed])
    expected = pointing_game_hits(maps, [boxes[i] for i in boxed], image_size=(32, 32))
    assert result.pointing_game_images == len(boxed) == 9
    assert result.pointing_game == pytest.approx(expected.float().mean().item())
    assert result.pointing_game_centre == pytest.approx(6 / 9)  # the centre lies in the six centred boxes
    low, high = result.pointing_game_ci95
    assert 0.0 <= low <= result.pointing_game <= high <= 1.0
    assert result.prediction_agreement == 1.0
    summary = json.loads(json.dumps(result.summary()))
    assert summary["pointing_game"] == round(100 * result.pointing_game, 2)
    assert summary["pointing_game_images"] == 9
    assert summary["pointing_game_centre"] == 66.67


def test_write_error_analysis_draws_a_fixed_sample_of_wrong_and_right_images(tmp_path, tiny_run):
    torch.manual_seed(1)
    first = _analyse(tmp_path, tiny_run, seed=3)
    index = (tmp_path / "cam" / "index.csv").read_text()
    torch.manual_seed(2)  # the sample depends on `seed` only, not on the global random state
    again = _analyse(tmp_path, tiny_run, seed=3, overwrite=True)
    assert [p.name for p in first.paths] == [p.name for p in again.paths]
    assert (tmp_path / "cam" / "index.csv").read_text() == index

    rows = list(csv.DictReader(index.splitlines()))
    correct = [r["correct"] for r in rows]
    assert correct == sorted(correct)  # the errors first
    _, _, labels, predictions, _ = tiny_run
    wrong = int((labels != predictions).sum())
    assert 2 <= wrong <= 10  # the tiny model gets some right and some wrong
    assert correct.count("0") == 2  # half of the four from the errors

    _analyse(tmp_path, tiny_run, num_cams=0, overwrite=True)
    assert list((tmp_path / "cam").iterdir()) == []  # no stale pictures of the earlier sample


def test_write_error_analysis_keeps_what_it_did_not_write(tmp_path, tiny_run):
    _analyse(tmp_path, tiny_run, num_cams=1)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        _analyse(tmp_path, tiny_run)
    (tmp_path / "cam" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        _analyse(tmp_path, tiny_run, overwrite=True)
    assert (tmp_path / "cam" / "notes.txt").read_text() == "mine"


def test_write_error_analysis_refuses_predictions_that_are_not_the_models(tmp_path, tiny_run):
    _, _, _, predictions, _ = tiny_run
    with pytest.raises(ValueError, match="predicts differently from `predictions` on 9 of 9 images"):
        _analyse(tmp_path, tiny_run, predictions=(predictions + 1) % 3, num_cams=0)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # refused before writing anything


def test_write_error_analysis_gives_the_model_back_as_it_was(tmp_path, tiny_run):
    model = tiny_run[0]
    model.train()
    model.layer1.eval()  # a frozen-BatchNorm policy: must stay frozen
    try:
        _analyse(tmp_path, tiny_run, num_cams=1)
        assert model.training and model.fc.training and not model.layer1.training
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


def test_write_error_analysis_takes_a_dataset_of_pairs_and_no_boxes(tmp_path, tiny_run):
    _, images, labels, _, _ = tiny_run
    dataset = [(images[i], int(labels[i])) for i in range(12)]
    result = _analyse(tmp_path, tiny_run, images=dataset, boxes=None, num_cams=2)
    assert result.pointing_game is None and result.pointing_game_images == 0
    assert result.summary()["pointing_game"] is None
    assert len(list((tmp_path / "cam").glob("0*.png"))) == 2


def test_write_error_analysis_names_a_bad_image(tmp_path, tiny_run):
    floats = tiny_run[1].float()
    with pytest.raises(TypeError, match=r"images\[.*\] must be a uint8 \(3, H, W\) tensor .* got torch.float32"):
        _analyse(tmp_path, tiny_run, images=floats)
    with pytest.raises(ValueError, match="images has 11 items but labels have 12"):
        _analyse(tmp_path, tiny_run, images=tiny_run[1][:11])


def test_write_error_analysis_without_matplotlib_writes_the_tables_and_the_score(tmp_path, tiny_run, monkeypatch,
                                                                                    caplog):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = _analyse(tmp_path, tiny_run)
    assert sorted(p.name for p in result.paths) == ["confused_pairs.csv", "confusion.csv"]
    assert not (tmp_path / "confusion.png").exists()
    assert result.pointing_game is not None
    assert "matplotlib is not installed" in caplog.text
