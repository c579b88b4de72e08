"""IFQALoss as a training objective: gradients, frozen network, reductions, ranges, weight maps."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import face_like_batch
from ifqa_loss import IFQA, IFQALoss
from ifqa_loss.functional import weighted_map_mean
from ifqa_loss.regions import primary_region_weight_map


@pytest.fixture(scope="module")
def x01():
    """Two different images in [0, 1] (nearly flat, colour gradient)."""
    return face_like_batch(2, size=64, seed=1)


@pytest.fixture(scope="module")
def ref_out(lite_model, x01):
    """IFQA output on ``x01``, computed once."""
    with torch.no_grad():
        return lite_model(x01)


@pytest.fixture(scope="module")
def plain_losses(ref_out):
    return 1.0 - ref_out.score


def _input_grad(loss_fn, x):
    x = x.clone().requires_grad_(True)
    loss = loss_fn(x)
    loss.backward()
    return loss, x.grad


def test_input_gradients_finite_and_nonzero(lite_weights, x01, plain_losses):
    loss_fn = IFQALoss(weights=lite_weights)
    loss, grad = _input_grad(loss_fn, x01)
    assert loss.ndim == 0 and 0.0 <= loss.item() <= 1.0
    assert loss.item() == pytest.approx(plain_losses.mean().item(), abs=1e-6)
    assert grad is not None and grad.shape == x01.shape
    assert torch.isfinite(grad).all()
    assert (grad.flatten(1).abs().amax(1) > 0).all()  # every image gets its own non-zero gradient
    # the network is frozen: no parameter requires or receives a gradient
    assert list(loss_fn.parameters()) == [] and not loss_fn.state_dict()  # kept out of the module tree
    params = list(loss_fn.ifqa.parameters())
    assert len(params) > 50
    assert all(not p.requires_grad for p in params)
    loss_fn(x01.clone().requires_grad_(True)).backward()  # a second step
    assert all(p.grad is None for p in params)
    assert all(not p.requires_grad for p in params)


def test_input_gradients_cnn(cnn_ckpt):
    loss_fn = IFQALoss(weights=cnn_ckpt)
    assert loss_fn.ifqa.backbone == "cnn"
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    loss, grad = _input_grad(loss_fn, x)
    assert torch.isfinite(loss) and 0.0 <= loss.item() <= 1.0
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    params = list(loss_fn.ifqa.parameters())
    assert params and all(p.grad is None and not p.requires_grad for p in params)


def test_gradient_matches_finite_differences(lite_weights):
    """Autograd through preprocessing (resize, normalise) and the network equals a central difference.

    Done in float64 on ``preprocess`` + ``net`` (``IFQA.forward`` returns float32 maps, too coarse for differences).
    """
    model = IFQA(weights=lite_weights).double()

    def f(x):
        return model.net(model.preprocess(x)).mean()

    x = face_like_batch(4, size=48, seed=3)[3:].double().requires_grad_(True)  # noise image
    (grad,) = torch.autograd.grad(f(x), x)
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps = 1e-8  # the random-init net is very non-linear (near-degenerate InstanceNorms, leaky-ReLU kinks)
    with torch.no_grad():
        fd = (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)
    analytic = (grad * direction).sum()
    assert analytic.abs() > 1e-6
    assert fd.item() == pytest.approx(analytic.item(), rel=1e-4)


def test_parent_train_keeps_ifqa_in_eval(lite_weights):
    class Restorer(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Dropout(0.5))
            self.criterion = IFQALoss(weights=lite_weights)

    parent = Restorer()
    parent.eval()
    parent.train()
    assert parent.training and parent.body.training and parent.body[1].training  # .train() did propagate
    ifqa_modules = list(parent.criterion.ifqa.modules())
    assert len(ifqa_modules) > 10
    assert all(not m.training for m in ifqa_modules), [type(m).__name__ for m in ifqa_modules if m.training]
    # calling .train() on the loss or the IFQA wrapper directly does not flip them either
    parent.criterion.train()
    parent.criterion.ifqa.train(True)
    assert all(not m.training for m in parent.criterion.ifqa.modules())
    assert parent.body.training


def test_reductions(lite_weights, x01, plain_losses):
    none = IFQALoss(weights=lite_weights, reduction="none")(x01)
    mean = IFQALoss(weights=lite_weights, reduction="mean")(x01)
    total = IFQALoss(weights=lite_weights, reduction="sum")(x01)
    assert none.shape == (2,)
    assert mean.shape == () and total.shape == ()
    torch.testing.assert_close(none, plain_losses, atol=1e-6, rtol=0)
    torch.testing.assert_close(mean, plain_losses.mean(), atol=1e-6, rtol=0)
    torch.testing.assert_close(total, plain_losses.sum(), atol=1e-6, rtol=0)
    assert (plain_losses[0] - plain_losses[1]).abs() > 1e-4  # the images differ, so the checks discriminate


def test_input_range_minus1_1_equals_0_1(lite_weights, x01, plain_losses):
    lm11 = IFQALoss(weights=lite_weights, reduction="none", input_range=(-1, 1))(x01 * 2 - 1)
    l255 = IFQALoss(weights=lite_weights, reduction="none", input_range=(0, 255))(x01 * 255)
    torch.testing.assert_close(lm11, plain_losses, atol=1e-5, rtol=0)
    torch.testing.assert_close(l255, plain_losses, atol=1e-5, rtol=0)
    # and the range matters: the (0, 1) image read as (-1, 1) is a different (darker, low-contrast) image
    wrong = IFQALoss(weights=lite_weights, reduction="none", input_range=(-1, 1))(x01)
    assert (wrong - plain_losses).abs().max() > 1e-4


def test_slight_overshoot_is_accepted_by_the_loss(lite_weights, x01):
    x = x01 * 1.04 - 0.02  # values in [-0.02, 1.02]
    assert x.min() < -0.019 and x.max() > 1.019
    loss, grad = _input_grad(IFQALoss(weights=lite_weights), x)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_uniform_weight_map_equals_unweighted(lite_weights, x01, plain_losses, ref_out):
    weighted = IFQALoss(weights=lite_weights, reduction="none", weight_map=torch.full((256, 256), 3.0))(x01)
    torch.testing.assert_close(weighted, plain_losses, atol=1e-6, rtol=0)
    # every accepted shape/size of a uniform map gives the plain mean (resized to the map's resolution)
    for wmap in (torch.ones(1, 1, 64, 64), torch.full((2, 512, 512), 0.25), torch.ones(2, 1, 256, 256)):
        torch.testing.assert_close(1.0 - weighted_map_mean(ref_out.map, wmap), plain_losses, atol=1e-6, rtol=0)


def test_concentrated_weight_map_changes_loss(lite_weights, x01, plain_losses, ref_out):
    wmap = torch.zeros(256, 256)
    wmap[:64, :64] = 1.0
    weighted = IFQALoss(weights=lite_weights, reduction="none", weight_map=wmap)(x01)
    # exactly one minus the mean of the map over the weighted region
    torch.testing.assert_close(weighted, 1.0 - ref_out.map[:, 0, :64, :64].mean(dim=(1, 2)), atol=1e-6, rtol=0)
    assert (weighted - plain_losses).abs().max() > 1e-4
    # a facial-region weight map is accepted, changes the loss, and passes gradients to the input
    region = IFQALoss(weights=lite_weights, weight_map=primary_region_weight_map(256, weight=4.0))
    loss, grad = _input_grad(region, x01)
    assert abs(loss.item() - plain_losses.mean().item()) > 1e-5
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def test_upsample_map_gives_input_resolution(lite_weights, x01, ref_out):
    x = x01[:, :, :, :48].contiguous()  # 64 x 48, not square
    native = IFQA(weights=lite_weights)(x)
    up = IFQA(weights=lite_weights, upsample_map=True)(x)
    assert native.map.shape == (2, 1, 256, 256)
    assert up.map.shape == (2, 1, 64, 48)
    torch.testing.assert_close(up.score, native.score)  # the score is taken at native resolution
    assert up.map.min() >= 0 and up.map.max() <= 1
    torch.testing.assert_close(up.map.mean(dim=(1, 2, 3)), native.score, atol=5e-3, rtol=0)
    # a square input at native size is left alone
    same = IFQA(weights=lite_weights, upsample_map=True)(torch.nn.functional.interpolate(x01, size=256))
    assert same.map.shape == (2, 1, 256, 256)
