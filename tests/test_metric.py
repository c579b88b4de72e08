"""IFQAMetric (torchmetrics) and the functional interface."""
from __future__ import annotations

import warnings

import pytest
import torch
from torchmetrics.utilities.data import dim_zero_sum

from conftest import face_like_batch
from ifqa_loss import IFQA, IFQAMetric
from ifqa_loss.functional import ifqa_map, ifqa_score


@pytest.fixture(scope="module")
def batches():
    """Uneven batches (3, 1, 5 images) of different sizes and content."""
    imgs = face_like_batch(9, size=64, seed=7)
    return [imgs[:3], torch.nn.functional.interpolate(imgs[3:4], size=(80, 96), mode="bilinear"), imgs[4:9, :, :48]]


@pytest.fixture(scope="module")
def per_image_scores(lite_model, batches):
    with torch.no_grad():
        return torch.cat([lite_model(b[i:i + 1]).score for b in batches for i in range(b.shape[0])]).double()


def test_uneven_batches_give_mean_of_per_image_scores(lite_weights, batches, per_image_scores):
    metric = IFQAMetric(weights=lite_weights)
    for b in batches:
        metric.update(b)
    value = metric.compute()
    assert value.shape == () and value.dtype == torch.float32
    assert int(metric.count) == 9
    assert value.item() == pytest.approx(per_image_scores.mean().item(), abs=1e-6)
    # the check discriminates: a mean of batch means would be measurably different
    mean_of_means = torch.stack([per_image_scores[:3].mean(), per_image_scores[3:4].mean(),
                                 per_image_scores[4:].mean()]).mean()
    assert abs(mean_of_means.item() - per_image_scores.mean().item()) > 1e-5


def test_forward_returns_batch_value_and_accumulates(lite_weights, batches, per_image_scores):
    metric = IFQAMetric(weights=lite_weights)
    batch_value = metric(batches[0])
    assert batch_value.item() == pytest.approx(per_image_scores[:3].mean().item(), abs=1e-6)
    metric(batches[1])
    assert int(metric.count) == 4
    assert metric.compute().item() == pytest.approx(per_image_scores[:4].mean().item(), abs=1e-6)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric IFQAMetric was called before")
def test_reset_clears(lite_weights, batches, per_image_scores):
    metric = IFQAMetric(weights=lite_weights)
    metric.update(batches[0])
    metric.reset()
    assert int(metric.count) == 0 and float(metric.score_sum) == 0.0
    with pytest.warns(UserWarning, match="before any update"):
        assert torch.isnan(metric.compute())
    metric.update(batches[1])
    assert metric.compute().item() == pytest.approx(per_image_scores[3].item(), abs=1e-6)


def test_class_attributes():
    assert IFQAMetric.higher_is_better is True
    assert IFQAMetric.is_differentiable is True
    assert IFQAMetric.full_state_update is False
    assert IFQAMetric.plot_lower_bound == 0
    assert IFQAMetric.plot_upper_bound == 1


def test_states_and_reductions(lite_weights):
    metric = IFQAMetric(weights=lite_weights)
    assert set(metric._defaults) == {"score_sum", "count"}
    assert set(metric._reductions) == {"score_sum", "count"}
    assert metric._reductions["score_sum"] is dim_zero_sum
    assert metric._reductions["count"] is dim_zero_sum
    assert metric.count.dtype == torch.long
    assert metric.score_sum.dtype == torch.float64


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric IFQAMetric was called before")
def test_state_dict_holds_states_only_and_round_trips(lite_weights, batches):
    metric = IFQAMetric(weights=lite_weights)
    metric.update(batches[0])
    metric.update(batches[1])
    assert set(metric.state_dict()) <= {"score_sum", "count"}  # no network weights by default either
    metric.persistent(True)
    sd = metric.state_dict()
    assert set(sd) == {"score_sum", "count"}  # and no network weights
    assert int(sd["count"]) == 4
    assert not any("net" in k or "weight" in k for k in sd)
    assert list(metric.parameters()) == []  # the hidden IFQA model does not leak into the module tree
    assert isinstance(metric.model, IFQA)

    fresh = IFQAMetric(weights=lite_weights)
    fresh.persistent(True)
    fresh.load_state_dict(sd)
    assert int(fresh.count) == 4
    torch.testing.assert_close(fresh.compute(), metric.compute(), atol=0, rtol=0)
    # and it keeps accumulating from the loaded state
    fresh.update(batches[2])
    metric.update(batches[2])
    torch.testing.assert_close(fresh.compute(), metric.compute(), atol=1e-7, rtol=0)


def test_out_of_range_input_raises_with_observed_range(lite_weights):
    metric = IFQAMetric(weights=lite_weights)
    x = torch.rand(2, 3, 32, 32) * 1.5
    x[0, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"1\.5") as info:
        metric.update(x)
    assert "input_range" in str(info.value)
    low = torch.rand(1, 3, 32, 32)
    low[0, 1, 2, 3] = -0.25
    with pytest.raises(ValueError, match=r"-0\.25"):
        metric.update(low)
    # [-1, 1] images given to a (0, 1) metric are caught, a (-1, 1) metric accepts them
    tanh_like = torch.rand(1, 3, 32, 32) * 2 - 1
    with pytest.raises(ValueError, match=r"\(-1, 1\)"):
        metric.update(tanh_like)
    assert int(metric.count) == 0  # rejected batches are not counted
    IFQAMetric(weights=lite_weights, input_range=(-1, 1)).update(tanh_like)


def test_within_one_8bit_level_is_accepted(lite_weights):
    metric = IFQAMetric(weights=lite_weights)
    x = torch.rand(1, 3, 32, 32)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = -0.5 / 255, 1 + 0.5 / 255
    metric.update(x)
    assert int(metric.count) == 1


def test_plot_returns_fig_and_ax(lite_weights, batches):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    metric = IFQAMetric(weights=lite_weights)
    metric.update(batches[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig, ax = metric.plot()
    try:
        assert isinstance(fig, Figure) and isinstance(ax, Axes)
    finally:
        plt.close(fig)
    values = [torch.tensor(0.2), torch.tensor(0.4)]
    fig2, ax2 = metric.plot(values)
    try:
        assert isinstance(ax2, Axes)
        ymin, ymax = ax2.get_ylim()
        assert ymin <= 0.2 and ymax >= 0.4
    finally:
        plt.close(fig2)


def test_functional_twins(lite_model, batches):
    x = batches[0]
    with torch.no_grad():
        out = lite_model(x)
        score = ifqa_score(x, lite_model)
        qmap = ifqa_map(x, lite_model)
    torch.testing.assert_close(score, out.score, atol=1e-7, rtol=0)
    torch.testing.assert_close(qmap, out.map, atol=1e-7, rtol=0)
    assert score.shape == (3,) and qmap.shape == (3, 1, 256, 256)
    # differentiable, like the module
    xg = x.clone().requires_grad_(True)
    ifqa_score(xg, lite_model).sum().backward()
    assert xg.grad is not None and xg.grad.abs().max() > 0


def test_metric_update_is_differentiable(lite_weights, batches):
    metric = IFQAMetric(weights=lite_weights)
    x = batches[0].clone().requires_grad_(True)
    value = metric(x)
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().max() > 0
