"""The NaN/inf scan of a load is exact and cheap: one sum per tensor, on one thread."""

from __future__ import annotations

import torch

from resnetzoo.remap.checks import invalid_tensors


def _scan(state):
    return {bad.key: bad.problem for bad in invalid_tensors(state, state, list(state))}


def test_values_are_checked_exactly_even_where_a_sum_overflows():
    state = {
        "big": torch.full((4,), 3e38),  # finite values whose sum is infinite: not a problem
        "nan": torch.tensor([1.0, float("nan"), float("nan")]),
        "inf": torch.tensor([float("inf"), float("-inf"), 0.0]),
        "half": torch.tensor([60000.0, 60000.0], dtype=torch.float16),
        "ok": torch.randn(3, 3),
    }
    assert _scan(state) == {
        "nan": "holds 2 NaN values of 3",
        "inf": "holds 2 infinite values of 3",
    }


def test_finite_tensors_cost_one_sum_on_one_thread(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # as on any multi-core machine
    seen = []
    real_sum = torch.Tensor.sum
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(("threads", n)))

    def spy_sum(self, *args, **kwargs):
        seen.append("sum")
        return real_sum(self, *args, **kwargs)

    def no_isfinite(*args, **kwargs):
        raise AssertionError("a finite tensor was scanned element by element")

    monkeypatch.setattr(torch.Tensor, "sum", spy_sum)
    monkeypatch.setattr(torch, "isfinite", no_isfinite)
    assert _scan({"a": torch.randn(64, 64), "b": torch.randn(64)}) == {}
    assert seen == [("threads", 1), "sum", "sum", ("threads", 2)]
