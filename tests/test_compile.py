"""``IFQA.compile()``: the network compiles as one graph and gives the eager scores, maps and input gradients."""
from __future__ import annotations

import pytest
import torch

from conftest import face_like_batch


@pytest.fixture(scope="module")
def eager_and_compiled(lite_weights):
    from ifqa_loss import IFQALoss

    eager = IFQALoss(weights=lite_weights, reduction="none")
    compiled = IFQALoss(weights=lite_weights, reduction="none")
    x = face_like_batch(3, size=96, seed=5)
    compiled(x)  # an eager call first fills the derived-kernel cache, which the traced graph must not read
    compiled.compile()
    return eager, compiled, x


def _loss_and_grad(criterion, x):
    xg = x.clone().requires_grad_(True)
    loss = criterion(xg)
    loss.sum().backward()
    return loss.detach(), xg.grad


@pytest.mark.slow
def test_compiled_loss_and_input_gradient_match_eager(eager_and_compiled):
    eager, compiled, x = eager_and_compiled
    loss_e, grad_e = _loss_and_grad(eager, x)
    loss_c, grad_c = _loss_and_grad(compiled, x)  # fullgraph=True: any graph break would raise here
    assert torch.allclose(loss_c, loss_e, atol=1e-5)
    assert grad_e.abs().sum() > 0
    assert ((grad_c - grad_e).norm() / grad_e.norm()).item() < 1e-3


@pytest.mark.slow
def test_compiled_scoring_matches_eager_and_keeps_state_dict(eager_and_compiled):
    eager, compiled, x = eager_and_compiled
    with torch.inference_mode():
        out_e, out_c = eager.ifqa(x), compiled.ifqa(x)
    assert torch.allclose(out_c.score, out_e.score, atol=1e-5)
    assert torch.allclose(out_c.map, out_e.map, atol=1e-4)
    assert compiled.ifqa.net.state_dict().keys() == eager.ifqa.net.state_dict().keys()


def test_compiled_model_still_rejects_nan(eager_and_compiled):
    _, compiled, x = eager_and_compiled
    bad = x.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        compiled(bad)
