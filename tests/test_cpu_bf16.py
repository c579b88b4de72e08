"""bf16 autocast on the CPU (``torch.autocast("cpu", dtype=torch.bfloat16)``): scores within each backbone's
stated tolerance of fp32, float32 outputs, and loss gradients that are finite and point the way fp32's do.

The tolerances are the measured errors (docs/speed.md, "bf16 on the CPU") with a margin of about 2x.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import SHARED, face_like_batch

#: max |score_bf16 - score_fp32| (scores in [0, 1])
BF16_SCORE_TOLERANCE = {"lite": 3e-3, "cnn": 2e-3, "vit": 1e-3}
#: least cosine similarity between an image's bf16 and fp32 input gradients of the loss
BF16_GRAD_COSINE = {"lite": 0.97, "cnn": 0.95, "vit": 0.99}

FACES = SHARED / "data" / "faces256"


def _cpu_flags() -> set[str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}


#: bf16 in hardware; elsewhere oneDNN emulates it, and cnn's or vit's check takes tens of minutes (2-core AMD EPYC)
NATIVE_BF16 = bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
needs_native_bf16 = pytest.mark.skipif(
    not NATIVE_BF16, reason="bf16 is emulated on this CPU (no avx512_bf16 / amx_bf16 in /proc/cpuinfo): the full-size "
    "backbone's check would take tens of minutes; the lite check runs the same autocast path")


def _images(size: int, n_real: int, n_synthetic: int) -> torch.Tensor:
    """Held-out faces of ../shared where present, and varied synthetic images (flat, checkers, noise)."""
    from ifqa_loss.io import to_batch

    parts = [face_like_batch(n_synthetic, size=size, seed=3)]
    if (FACES / "val.txt").exists():
        names = (FACES / "val.txt").read_text().split()[:n_real]
        parts.insert(0, to_batch([str(FACES / "images" / f) for f in names], "vit" if size == 224 else "cnn"))
    return torch.cat(parts)


def _weights(backbone, request):
    return None if backbone == "lite" else request.getfixturevalue(f"{backbone}_ckpt")


def _check(backbone, weights, x, x_loss):
    from ifqa_loss import IFQA, IFQALoss

    model = IFQA(backbone=backbone, weights=weights)
    with torch.inference_mode():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.score.dtype == low.map.dtype == torch.float32
    err = (ref.score - low.score).abs().max().item()
    assert err < BF16_SCORE_TOLERANCE[backbone], err
    assert err > 0  # bf16 really ran: the scores are not fp32's bit for bit

    crit = IFQALoss(backbone=backbone, weights=weights, reduction="none")
    grads = []
    for bf16 in (False, True):
        xg = x_loss.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = crit(xg)
        assert loss.dtype == torch.float32
        loss.sum().backward()
        assert xg.grad.dtype == torch.float32 and torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
        grads.append(xg.grad.flatten(1))
    cos = F.cosine_similarity(grads[0], grads[1], dim=1)
    assert cos.min().item() > BF16_GRAD_COSINE[backbone], cos


def test_lite_bf16_autocast_within_tolerance():
    x = _images(256, 8, 8)
    _check("lite", None, x, x[:4])


@needs_native_bf16
def test_cnn_bf16_autocast_within_tolerance(cnn_ckpt):
    x = _images(256, 4, 4)
    _check("cnn", cnn_ckpt, x, x[:2])


@pytest.mark.slow
@needs_native_bf16
def test_vit_bf16_autocast_within_tolerance(vit_ckpt):
    x = _images(224, 2, 2)
    _check("vit", vit_ckpt, x, x[:2])


def test_cached_bf16_weights_follow_weight_updates_and_match_autocast(lite_weights):
    """The blocks' bf16 copies of frozen weights give autocast's own result, and are rebuilt when a weight
    changes in place (the copy is keyed by the weight's version)."""
    from ifqa_loss import IFQA
    from ifqa_loss.models._cpu_kernels import FastPaths

    model = IFQA(weights=lite_weights)
    x = face_like_batch(3, size=256, seed=5)

    def scores(cached: bool) -> torch.Tensor:
        for m in model.net.modules():
            if isinstance(m, FastPaths):
                m.bf16_weights = cached
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x).score

    torch.testing.assert_close(scores(True), scores(False), rtol=0, atol=1e-6)  # same bf16 rounding of weights
    before = scores(True)
    with torch.no_grad():
        model.net.decoder64.conv2.weight.mul_(1.5)
    after = scores(True)
    assert (after - before).abs().max() > 1e-4
    torch.testing.assert_close(after, scores(False), rtol=0, atol=1e-6)
    scores(False)  # back to the default


def test_bf16_rule_applies_under_cpu_autocast_only(monkeypatch):
    """Under CPU bf16 autocast the ISA's ``bf16`` rule decides; float16 autocast gets no CPU kernel."""
    from ifqa_loss.models import _cpu_kernels as K

    x = torch.rand(1, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert K.cpu_precision(x) == "bf16"
    with torch.autocast("cpu", dtype=torch.float16):
        assert K.cpu_precision(x) is None
    assert K.cpu_precision(x) == "fp32" and K.cpu_precision(x.bfloat16()) == "bf16"
    assert K.cpu_precision(x.half()) is None
    monkeypatch.setattr(K, "CPU_CAPABILITY", "AVX2")
    assert K.cpu_rule(bf16=True) == K.CPU_RULES["AVX2"].bf16
    monkeypatch.setattr(K, "CPU_CAPABILITY", "DEFAULT")
    assert K.cpu_rule(bf16=True) == K.cpu_rule() == K.CpuRule(0, False, 0)
