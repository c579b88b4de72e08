"""Bad input tensors and arguments get clear errors at construction or call time."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from ifqa_loss import IFQA, IFQALoss, IFQAMetric


@pytest.fixture(scope="module")
def entry_points(lite_weights):
    """The three public ways images enter the model."""
    model = IFQA(weights=lite_weights)
    loss = IFQALoss(weights=lite_weights)
    metric = IFQAMetric(weights=lite_weights)
    return {"IFQA": model, "IFQALoss": loss, "IFQAMetric.update": metric.update}


ENTRY_NAMES = ["IFQA", "IFQALoss", "IFQAMetric.update"]


def _nonfinite():
    x = torch.rand(2, 3, 32, 32)
    x[0, 0, 0, 0] = float("nan")
    x[1, 2, 5, 5] = float("nan")
    x[1, 1, 3, 3] = float("inf")
    return x


BAD_INPUTS = {
    "3-D tensor": (lambda: torch.rand(3, 64, 64), ValueError, [r"\(N, 3, H, W\)", r"\(3, 64, 64\)", "unsqueeze"]),
    "5-D tensor": (lambda: torch.rand(1, 1, 3, 64, 64), ValueError, [r"\(N, 3, H, W\)", r"\(1, 1, 3, 64, 64\)"]),
    "4 channels": (lambda: torch.rand(1, 4, 64, 64), ValueError, [r"3 \(RGB\) channels", r"\(1, 4, 64, 64\)"]),
    "1 channel": (lambda: torch.rand(2, 1, 64, 64), ValueError, [r"3 \(RGB\) channels"]),
    "uint8": (lambda: torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8), TypeError,
              ["dtype", "torch.uint8", r"/ 255"]),
    "int64": (lambda: torch.randint(0, 2, (1, 3, 64, 64)), TypeError, ["dtype", "torch.int64"]),
    "bool": (lambda: torch.ones(1, 3, 64, 64, dtype=torch.bool), TypeError, ["dtype"]),
    "NaN/Inf": (_nonfinite, ValueError, [r"3 non-finite values", r"2 NaN", r"1 Inf"]),
    "empty batch": (lambda: torch.rand(0, 3, 64, 64), ValueError, ["empty batch"]),
    "15 px high": (lambda: torch.rand(1, 3, 15, 64), ValueError, ["15x64", "16x16"]),
    "8 px wide": (lambda: torch.rand(1, 3, 64, 8), ValueError, ["64x8", "16x16"]),
    "numpy array": (lambda: np.random.rand(1, 3, 64, 64).astype(np.float32), TypeError, ["torch.Tensor", "ndarray"]),
    "list": (lambda: [[0.5]], TypeError, ["torch.Tensor", "list"]),
}


@pytest.mark.parametrize("entry", ENTRY_NAMES)
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_clear_error(entry_points, entry, case):
    make, exc, patterns = BAD_INPUTS[case]
    with pytest.raises(exc) as info:
        entry_points[entry](make())
    msg = str(info.value)
    for pat in patterns:
        assert re.search(pat, msg), f"{pat!r} not in {msg!r}"


def test_check_finite_false_skips_the_count(lite_weights):
    x = _nonfinite()
    out = IFQA(weights=lite_weights, check_finite=False)(x)  # documented opt-out: no error, NaN propagates
    assert out.score.shape == (2,)
    assert torch.isnan(out.score).any()


@pytest.mark.parametrize("cls", [IFQA, IFQALoss, IFQAMetric])
@pytest.mark.parametrize("input_range, pattern", [
    ((1, 0), "low < high"),
    ((0, 0), "low < high"),
    ((0, float("inf")), "finite"),
    ((float("nan"), 1), "finite"),
    ((0,), "pair"),
    ((0, 1, 2), "pair"),
    (("a", "b"), "pair"),
    (None, "pair"),
    (1.0, "pair"),
])
def test_bad_input_range_at_construction(lite_weights, cls, input_range, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(weights=lite_weights, input_range=input_range)


@pytest.mark.parametrize("reduction", ["avg", "Mean", "", None])
def test_bad_reduction_at_construction(lite_weights, reduction):
    with pytest.raises(ValueError, match="reduction must be one of") as info:
        IFQALoss(weights=lite_weights, reduction=reduction)
    assert repr(reduction) in str(info.value)


@pytest.mark.parametrize("wmap, exc, pattern", [
    (torch.ones(256, 256, dtype=torch.long), TypeError, "floating-point"),
    (np.ones((256, 256), dtype=np.float32), TypeError, "floating-point"),
    (-torch.ones(256, 256), ValueError, "non-negative"),
    (torch.full((256, 256), float("nan")), ValueError, "finite"),
    (torch.zeros(256, 256), ValueError, "positive sum"),
    (torch.ones(256), ValueError, r"\(256,\)"),
])
def test_bad_weight_map_at_construction(lite_weights, wmap, exc, pattern):
    with pytest.raises(exc, match=pattern):
        IFQALoss(weights=lite_weights, weight_map=wmap)


def test_weight_map_batch_mismatch(lite_weights):
    loss = IFQALoss(weights=lite_weights, weight_map=torch.ones(3, 256, 256))
    with pytest.raises(ValueError, match=r"N in \(1, 2\)"):
        loss(torch.rand(2, 3, 32, 32))


def test_unknown_backbone(lite_weights):
    with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
        IFQA(backbone="resnet", weights=lite_weights)


