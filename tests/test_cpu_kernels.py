"""The U-Net's fast paths (ifqa_loss/models/_cpu_kernels.py): each kernel equals PyTorch's convolution
(float64, values and gradients), the eligibility rule picks them where documented, and a model with them
gives the official formulation's maps and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ifqa_loss.models import _cpu_kernels as K
from ifqa_loss.models.unet import UNetDiscriminator


def _grads_match(ref, out, params, tol=1e-10):
    for a, c in zip(torch.autograd.grad(ref.sin().sum(), params), torch.autograd.grad(out.sin().sum(), params)):
        torch.testing.assert_close(a, c, rtol=tol, atol=tol)


# --- each kernel against PyTorch's convolution ---------------------------------------------------------

@pytest.mark.parametrize("c_in,c_out,h,w", [(5, 7, 6, 9), (3, 1, 1, 1), (4, 4, 8, 8)])
def test_upsample_conv3x3_equals_upsample_then_conv(c_in, c_out, h, w):
    """The fused decoder convolution is the official upsample-then-conv, values and gradients."""
    g = torch.Generator().manual_seed(c_in * 100 + h)
    x = torch.randn(2, c_in, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(c_out, c_in, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, generator=g, dtype=torch.float64)
    ref = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), wt, b, padding=1)
    out = K.upsample_conv3x3(x, wt, b)
    assert out.shape == ref.shape == (2, c_out, 2 * h, 2 * w)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    _grads_match(ref, out, (x, wt))


@pytest.mark.parametrize("c_in,c_out,h,w,bias", [(5, 7, 6, 10, True), (3, 1, 2, 2, False), (8, 8, 16, 4, True)])
def test_winograd_conv3x3_equals_conv2d(c_in, c_out, h, w, bias):
    """F(2x2, 3x3) Winograd is conv2d with padding 1, values and gradients (float64)."""
    g = torch.Generator().manual_seed(c_in * 10 + h)
    x = torch.randn(2, c_in, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(c_out, c_in, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, generator=g, dtype=torch.float64) if bias else None
    ref = F.conv2d(x, wt, b, padding=1)
    out = K.winograd_conv3x3(x, K.winograd_kernel(wt), b)
    assert out.shape == ref.shape and out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    _grads_match(ref, out, (x, wt))
    with pytest.raises(ValueError, match="even height and width"):
        K.winograd_conv3x3(x[..., :-1], K.winograd_kernel(wt), b)


@pytest.mark.parametrize("c_in,c_out,h,w,bias,channels_last", [(64, 1, 12, 10, True, False), (5, 3, 7, 4, False, True),
                                                                (16, 4, 8, 8, True, True)])
def test_narrow_conv3x3_equals_conv2d(c_in, c_out, h, w, bias, channels_last):
    """Matrix product + col2im is conv2d with padding 1, values and gradients (float64), either memory format."""
    g = torch.Generator().manual_seed(c_in + c_out)
    x = torch.randn(2, c_in, h, w, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    wt = torch.randn(c_out, c_in, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, generator=g, dtype=torch.float64, requires_grad=bias) if bias else None
    ref = F.conv2d(x, wt, b, padding=1)
    out = K.narrow_conv3x3(x, K.narrow_kernel(wt), b)
    assert out.shape == ref.shape == (2, c_out, h, w)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    _grads_match(ref, out, (x, wt) + ((b,) if bias else ()))


# --- the eligibility rule ------------------------------------------------------------------------------

def _rule(monkeypatch, capability: str) -> None:
    monkeypatch.setattr(K, "CPU_CAPABILITY", capability)


def _paths(net, x, grad: bool) -> list[tuple[str, int, int, int]]:
    """(path, c_in, c_out, map side) of every layer that takes a fast path in one forward of ``net``."""
    taken = []
    real = K.fast_path

    def spy(block, conv, inp, upsample):
        path = real(block, conv, inp, upsample)
        if path is not None:
            taken.append((path, conv.in_channels, conv.out_channels, inp.shape[-1]))
        return path

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(K, "fast_path", spy)
        with torch.set_grad_enabled(grad):
            net(x.clone().requires_grad_(grad))
    return taken


@pytest.fixture(scope="module")
def wide_net():
    """A U-Net with layers of >= 256 channels at 16x16 and 8x8 for a 128x128 input, and a 16 -> 1 output layer."""
    torch.manual_seed(0)
    return UNetDiscriminator(widths=(16, 8, 16, 256, 256), num_bottleneck=1).eval().requires_grad_(False)


def test_rule_on_avx2_uses_winograd_up_to_16x16_also_for_the_loss(monkeypatch, wide_net):
    _rule(monkeypatch, "AVX2")
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    for grad in (False, True):
        taken = _paths(wide_net, x, grad)
        wino = {t for t in taken if t[0] == "winograd"}
        assert wino and {t[3] for t in wino} == {8, 4}  # 128 px input: 8x8 and 4x4 maps at >= 256 channels
        assert ("narrow", 16, 1, 128) in taken
        ups = [m for m in wide_net.modules() if type(m).__name__ == "UpResBlock"]
        n_fused = len(ups) + sum(m.conv1x1 is not None for m in ups)  # each decoder 3x3 and 1x1 shortcut
        assert sum(t[0] == "fused_upsample" for t in taken) == n_fused == 9


def test_rule_on_avx512_keeps_winograd_to_8x8_maps_without_gradient(monkeypatch, wide_net):
    _rule(monkeypatch, "AVX512")
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    scoring = _paths(wide_net, x, grad=False)
    assert {t[3] for t in scoring if t[0] == "winograd"} == {8}  # not the 16x16 ones
    assert not [t for t in _paths(wide_net, x, grad=True) if t[0] == "winograd"]  # the loss: never
    assert ("narrow", 16, 1, 256) in scoring


def test_bf16_rule_on_avx512_keeps_only_the_wide_narrow_layer(monkeypatch):
    """Under CPU bf16 autocast on AVX-512: no Winograd (not even on 8x8 maps when scoring), the narrow kernel
    only from 64 inputs (cnn's output layer, not a 16 -> 1 one), the fused decoder as everywhere."""
    _rule(monkeypatch, "AVX512")
    torch.manual_seed(0)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    for widths, narrow in (((16, 8, 16, 256, 256), False), ((64, 8, 16, 256, 256), True)):
        net = UNetDiscriminator(widths=widths, num_bottleneck=1).eval().requires_grad_(False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            taken = _paths(net, x, grad=False)
        assert {t[0] for t in taken} == ({"fused_upsample", "narrow"} if narrow else {"fused_upsample"})
        assert [t for t in _paths(net, x, grad=False) if t[0] == "winograd"]  # fp32 scoring: still on


def test_rule_on_an_unmeasured_cpu_keeps_only_the_fused_upsample(monkeypatch, wide_net):
    _rule(monkeypatch, "DEFAULT")
    taken = _paths(wide_net, torch.rand(1, 3, 64, 64), grad=False)
    assert taken and {t[0] for t in taken} == {"fused_upsample"}


def test_rule_skips_cpu_kernels_under_autocast_and_for_switched_off_blocks(monkeypatch, wide_net):
    _rule(monkeypatch, "AVX2")
    x = torch.rand(1, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert {t[0] for t in _paths(wide_net, x, grad=False)} == {"fused_upsample"}
    wide_net.winograd = wide_net.narrow_conv = False
    try:
        assert {t[0] for t in _paths(wide_net, x, grad=False)} == {"fused_upsample"}
    finally:
        wide_net.winograd = wide_net.narrow_conv = True


# --- a model with the fast paths against the official formulation ----------------------------------------

def test_fused_upsample_model_matches_official_and_tracks_weight_updates(lite_weights):
    """Same map with and without the fused decoder; the cached kernel follows in-place weight changes."""
    from ifqa_loss import IFQA

    model = IFQA(weights=lite_weights)
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fused = model(x).map
        model.net.fused_upsample = False
        plain = model(x).map
        model.net.fused_upsample = True
    torch.testing.assert_close(fused, plain, rtol=0, atol=2e-6)
    xg = x.clone().requires_grad_(True)
    model(xg).score.sum().backward()  # the kernel cached under inference_mode is usable with autograd
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    with torch.no_grad():
        model.net.decoder64.conv1.weight.mul_(1.5)
        after = model(x).map
        model.net.fused_upsample = False
        plain_after = model(x).map
    assert (after - fused).abs().max() > 1e-6
    torch.testing.assert_close(after, plain_after, rtol=0, atol=2e-6)


def _record_input_shapes(monkeypatch, name: str) -> list:
    """Wrap ``_cpu_kernels.name`` so each call appends its first argument's shape to the returned list."""
    calls = []
    real = getattr(K, name)
    monkeypatch.setattr(K, name, lambda *a: calls.append(a[0].shape) or real(*a))
    return calls


def test_winograd_layers_match_direct_convolution_and_track_weight_updates(monkeypatch):
    """Wide low-resolution layers take the Winograd path on the CPU: same map and input gradient as direct
    convolution, and the cached kernel follows in-place weight changes."""
    _rule(monkeypatch, "AVX2")  # Winograd also with a gradient, so both are checked
    calls = _record_input_shapes(monkeypatch, "winograd_conv3x3")
    torch.manual_seed(0)
    net = UNetDiscriminator(widths=(4, 8, 16, 256, 256), num_bottleneck=1).eval().requires_grad_(False)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        fast = net(x)
        assert calls and all(max(s[-2:]) <= K.CPU_RULES["AVX2"].fp32.winograd_max_side for s in calls)
        net.winograd = False
        n_calls = len(calls)
        direct = net(x)
        assert len(calls) == n_calls  # switched off: not used
        net.winograd = True
    torch.testing.assert_close(fast, direct, rtol=0, atol=1e-6)
    xg = x.clone().requires_grad_(True)
    net(xg).mean().backward()  # kernels cached under inference_mode work with autograd
    assert len(calls) > n_calls
    xd = x.clone().requires_grad_(True)
    net.winograd = False
    net(xd).mean().backward()
    net.winograd = True
    torch.testing.assert_close(xg.grad, xd.grad, rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        net.btn[0].conv1.weight.mul_(1.5)
        after = net(x)
        net.winograd = False
        direct_after = net(x)
    assert (after - fast).abs().max() > 1e-6
    torch.testing.assert_close(after, direct_after, rtol=0, atol=1e-6)


def test_narrow_final_layer_matches_direct_convolution(monkeypatch):
    """The 1-channel output layer takes the narrow path on the CPU, with the same input gradient as direct
    convolution; the official formulation switches every path off."""
    _rule(monkeypatch, "AVX2")
    calls = _record_input_shapes(monkeypatch, "narrow_conv3x3")
    torch.manual_seed(0)
    net = UNetDiscriminator(widths=(16, 8, 16, 16, 16), num_bottleneck=1).eval().requires_grad_(False)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    xg = x.clone().requires_grad_(True)
    net(xg).square().mean().backward()
    assert calls == [(2, 16, 64, 64)]  # only the 16 -> 1 output layer
    net.use_official_formulation()
    assert not (net.narrow_conv or net.winograd or net.fused_upsample)
    xd = x.clone().requires_grad_(True)
    net(xd).square().mean().backward()
    assert len(calls) == 1  # switched off: not used
    torch.testing.assert_close(xg.grad, xd.grad, rtol=1e-4, atol=1e-8)
