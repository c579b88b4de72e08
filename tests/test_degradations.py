"""The deterministic sweep degradations (degrade, sharpen) of ifqa_loss.train.degradations, and JPEG off the grid."""
from __future__ import annotations

import pytest
import torch

from ifqa_loss.train.degradations import (
    SWEEP_KINDS,
    DegradationConfig,
    Degrader,
    degrade,
    gaussian_blur,
    gaussian_noise,
    jpeg_off_grid,
    jpeg_pil,
    sharpen,
    unsharp_mask,
)


def faces(n: int = 3, size: int = 64) -> torch.Tensor:
    """Smooth random images with some texture, (n, 3, size, size) in [0, 1]."""
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    return gaussian_blur(x, torch.full((n,), 1.0))


@pytest.mark.parametrize("kind,level", [("blur", 1.9), ("noise", 10.0), ("jpeg", 45), ("downup", 3.0), ("mixed", 3)])
def test_one_level_for_the_whole_batch_and_repeatable(kind, level):
    x = faces()
    y = degrade(x, kind, level, seed=4)
    assert y.shape == x.shape and y.dtype == x.dtype and 0 <= float(y.min()) and float(y.max()) <= 1
    assert torch.equal(y, degrade(x, kind, level, seed=4))
    assert (y - x).abs().mean() > 1e-3  # it did something
    # each image gets what it would get alone: one level for all, no per-sample draws (noise aside)
    if kind not in ("noise", "mixed"):
        assert torch.allclose(degrade(x[1:2], kind, level), y[1:2], atol=1e-6)


def test_noise_is_colour_noise_of_the_given_sigma_and_seeded():
    x = torch.full((4, 3, 128, 128), 0.5)
    y = degrade(x, "noise", 10.0, seed=1)
    noise = (y - x) * 255
    assert noise.std().item() == pytest.approx(10.0, rel=0.02)
    assert not torch.allclose(noise[:, 0], noise[:, 1])  # every sample colour noise (no gray share)
    assert torch.equal(y, gaussian_noise(x, torch.full((4,), 10.0), torch.Generator().manual_seed(1), p_gray=0.0))
    assert not torch.equal(y, degrade(x, "noise", 10.0, seed=2))


def test_kinds_are_the_per_sample_functions_at_a_full_level():
    x = faces()
    n = x.shape[0]
    assert torch.equal(degrade(x, "blur", 1.3), gaussian_blur(x, torch.full((n,), 1.3)))
    assert torch.equal(degrade(x, "jpeg", 30), jpeg_pil(x, torch.full((n,), 30, dtype=torch.int32)))
    assert torch.equal(sharpen(x, 1.5, 2.0), unsharp_mask(x, torch.full((n,), 1.5), torch.full((n,), 2.0)))
    # JPEG output is 8-bit, as a decoded file is
    assert torch.equal(degrade(x, "jpeg", 30) * 255, (degrade(x, "jpeg", 30) * 255).round())


def test_mixed_is_blur_downup_noise_jpeg_scaled_by_the_level():
    x = faces()
    level = 2
    expected = degrade(degrade(degrade(degrade(x, "blur", 0.8), "downup", 2.0), "noise", 5.0, seed=3), "jpeg", 71)
    assert torch.equal(degrade(x, "mixed", level, seed=3), expected)
    assert set(SWEEP_KINDS) == {"blur", "noise", "jpeg", "downup", "mixed"}


def test_severity_grows_with_the_level():
    x = faces(2, 96)
    for kind, levels in [("blur", (0.8, 2.6)), ("noise", (3.0, 22.0)), ("jpeg", (85, 18)), ("downup", (1.5, 6.0))]:
        mild, harsh = ((degrade(x, kind, lv) - x).abs().mean() for lv in levels)
        assert harsh > mild, kind


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown degradation kind 'sepia'"):
        degrade(faces(), "sepia", 1.0)


def _column_steps(x: torch.Tensor) -> torch.Tensor:
    """(W - 1,) mean absolute step between neighbouring columns, over the batch, channels and rows."""
    return (x[..., 1:] - x[..., :-1]).abs().mean(dim=(0, 1, 2))


def test_jpeg_off_grid_moves_the_block_grid_by_the_offset():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    smooth = torch.stack([0.2 + 0.6 * xx * yy, 0.5 + 0.3 * torch.sin(3 * xx), 0.3 + 0.4 * yy])[None]  # no own edges
    q = torch.tensor([8])
    assert torch.equal(jpeg_off_grid(jpeg_pil, smooth, q, torch.tensor([[0, 0]])), jpeg_pil(smooth, q))
    for dx in (3, 5, 11):
        steps = _column_steps(jpeg_off_grid(jpeg_pil, smooth, q, torch.tensor([[2, dx]])))
        # a step between columns c and c + 1 crosses a block edge where (c + 1 + dx) is a multiple of 8
        on_grid = torch.tensor([(c + 1 + dx) % 8 == 0 for c in range(63)])
        assert steps[on_grid].mean() > 3 * steps[~on_grid].mean(), dx


def test_degrader_jpeg_grid_fixed_is_the_default_stream_and_bad_values_are_refused():
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    only_jpeg = {"p_blur": 0.0, "p_down": 0.0, "p_noise": 0.0, "p_jpeg": 1.0, "jpeg_backend": "pil"}
    default = Degrader(DegradationConfig(**only_jpeg), seed=3)(x)
    assert torch.equal(Degrader(DegradationConfig(**only_jpeg, jpeg_grid="fixed"), seed=3)(x), default)
    moved = Degrader(DegradationConfig(**only_jpeg, jpeg_grid="random"), seed=3)(x)
    assert moved.shape == x.shape and not torch.equal(moved, default)
    with pytest.raises(ValueError, match="jpeg_grid"):
        Degrader(DegradationConfig(jpeg_grid="diagonal"))
