"""Blind face-restoration degradations, batched with per-sample random parameters.

Pipeline per sample (each stage applied with its own probability):
Gaussian or motion blur -> downsample x1-x8 and resize back -> [unsharp mask] -> Gaussian or Poisson noise
-> JPEG q30-95. The unsharp mask (over-sharpening, as camera pipelines and scanners apply it) is off by default.
Images are (N, 3, H, W) float in [0, 1]; everything but the PIL JPEG backend runs on the input's device.

:class:`Degrader` draws these at random for training. :func:`degrade` and :func:`sharpen` apply one kind at one
level to a whole batch, deterministically, for the severity sweeps of the benchmarks and the demo; they are the
same per-sample functions with every sample given the same level.
"""
from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import kornia
import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class DegradationConfig:
    """Ranges of the random degradations (defaults are stated in the README)."""

    p_blur: float = 0.6
    p_motion: float = 0.25  # share of blurred samples that get motion instead of Gaussian blur
    gauss_sigma: tuple[float, float] = (0.2, 5.0)
    motion_kernel: tuple[int, int] = (5, 21)
    p_down: float = 0.5
    scale: tuple[float, float] = (1.0, 8.0)
    p_noise: float = 0.5
    p_poisson: float = 0.3  # share of noisy samples with Poisson instead of Gaussian noise
    noise_sigma: tuple[float, float] = (1.0, 25.0)  # in 8-bit levels
    poisson_scale: tuple[float, float] = (0.05, 2.0)  # photons per 8-bit level is 255 / (255 * scale)
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 95)
    jpeg_backend: str = "auto"  # "pil" (real codec, CPU), "kornia" (differentiable, on device) or "auto"
    jpeg_grid: str = "fixed"  # "fixed": blocks on the image's own grid; "random": at a random offset (jpeg_off_grid)
    p_single: float = 0.0  # share of samples that get exactly one stage, chosen uniformly (isolated artefacts)
    p_jpeg_only: float = 0.0  # share of samples that get JPEG and nothing else
    p_sharpen: float = 0.0  # share of samples over-sharpened (unsharp mask) after the down-up stage
    sharpen_sigma: tuple[float, float] = (0.8, 2.5)  # unsharp-mask radius (Gaussian sigma, px)
    sharpen_amount: tuple[float, float] = (1.0, 4.0)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=gen) * (hi - lo) + lo).to(device)


def _bernoulli(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample isotropic Gaussian blur; sigma (N,) in pixels."""
    k = 2 * math.ceil(3 * float(sigma.max())) + 1
    return kornia.filters.gaussian_blur2d(x, (k, k), torch.stack([sigma, sigma], dim=1).to(x), border_type="reflect")


def unsharp_mask(x: torch.Tensor, sigma: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Over-sharpening: ``x + amount * (x - blur_sigma(x))``, clamped to [0, 1]; sigma, amount (N,)."""
    detail = x - gaussian_blur(x, sigma.to(x.device))
    return (x + amount.to(x)[:, None, None, None] * detail).clamp(0, 1)


def motion_blur(x: torch.Tensor, kernel_size: int, angle: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Linear motion blur of length ``kernel_size`` (odd), per-sample angle (degrees) and direction in [-1, 1]."""
    return kornia.filters.motion_blur(x, kernel_size, angle.to(x), direction.to(x), border_type="reflect")


def down_up(x: torch.Tensor, scale: torch.Tensor, modes: list[str]) -> torch.Tensor:
    """Downsample each sample by ``scale`` (antialiased) and resize back with ``modes[i]``."""
    h, w = x.shape[-2:]
    out = []
    for i in range(x.shape[0]):
        s = float(scale[i])
        if s <= 1.01:
            out.append(x[i:i + 1])
            continue
        small = F.interpolate(x[i:i + 1], size=(max(1, round(h / s)), max(1, round(w / s))), mode="bilinear",
                              antialias=True, align_corners=False)
        align = False if modes[i] != "nearest" else None
        out.append(F.interpolate(small, size=(h, w), mode=modes[i], align_corners=align))
    return torch.cat(out).clamp(0, 1)


def gaussian_noise(x: torch.Tensor, sigma: torch.Tensor, gen: torch.Generator, p_gray: float = 0.3) -> torch.Tensor:
    """Additive Gaussian noise, sigma (N,) in 8-bit levels; a ``p_gray`` share of the samples (at random) get
    the same noise in every channel, the others colour noise."""
    noise = torch.randn(x.shape, generator=gen).to(x)
    gray = _bernoulli(x.shape[0], p_gray, gen).to(x.device)
    noise = torch.where(gray[:, None, None, None], noise[:, :1].expand_as(noise), noise)
    return (x + noise * (sigma.to(x) / 255.0)[:, None, None, None]).clamp(0, 1)


def poisson_noise(x: torch.Tensor, scale: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shot noise: counts ~ Poisson(x * 255 / scale), scale (N,) > 0 (bigger = noisier)."""
    rate = (x * 255.0 / scale.to(x)[:, None, None, None]).clamp_min(0)
    counts = torch.poisson(rate.cpu(), generator=gen).to(x)
    return (counts * scale.to(x)[:, None, None, None] / 255.0).clamp(0, 1)


def jpeg_pil(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Real JPEG round-trip (PIL, 4:2:0) per sample; quality (N,) integers."""
    from PIL import Image

    out = []
    arr = (x.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    for i in range(arr.shape[0]):
        buf = io.BytesIO()
        Image.fromarray(arr[i]).save(buf, format="JPEG", quality=int(quality[i]))
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0


def jpeg_kornia(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """kornia's differentiable JPEG, batched on the device."""
    return kornia.enhance.jpeg_codec_differentiable(x.clamp(0, 1), quality.to(x))


#: The 4:2:0 JPEG macroblock side: offsets below it give every phase of the luma and chroma block grids.
JPEG_MCU = 16


def jpeg_grid_offsets(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 2) integer (row, column) offsets in [0, :data:`JPEG_MCU`) for :func:`jpeg_off_grid`."""
    return torch.randint(0, JPEG_MCU, (n, 2), generator=gen)


def jpeg_off_grid(codec: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                  quality: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``codec`` with each image's block grid moved by ``offset``, as in a photo cropped or aligned after it was
    compressed: the image is reflect-padded so that it starts ``offset`` pixels into the encoded picture (whose
    sides are then filled up to multiples of :data:`JPEG_MCU`), encoded, and cut out again.

    Args:
        x: (N, 3, H, W) in [0, 1]. quality: (N,) integers. offset: (N, 2) integers in [0, JPEG_MCU), rows first.
    Returns:
        (N, 3, H, W) in [0, 1].
    """
    h, w = x.shape[-2:]
    out = []
    for i in range(x.shape[0]):
        dy, dx = int(offset[i, 0]), int(offset[i, 1])
        pad = (dx, -(w + dx) % JPEG_MCU, dy, -(h + dy) % JPEG_MCU)  # left, right, top, bottom
        y = codec(F.pad(x[i:i + 1], pad, mode="reflect"), quality[i:i + 1])
        out.append(y[..., dy:dy + h, dx:dx + w])
    return torch.cat(out)


def jpeg_on_grid(codec: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                 quality: torch.Tensor, gen: torch.Generator, random_grid: bool) -> torch.Tensor:
    """``codec`` on the image's own block grid, or with ``random_grid`` at offsets drawn from ``gen``
    (:func:`jpeg_off_grid`); the offsets are drawn only then, so other recipes keep their random streams."""
    if random_grid:
        return jpeg_off_grid(codec, x, quality, jpeg_grid_offsets(x.shape[0], gen))
    return codec(x, quality)


# ---------------------------------------------------------------- deterministic sweeps (one level per batch)

#: The kinds :func:`degrade` applies and what their level means.
SWEEP_KINDS = {
    "blur": "Gaussian blur sigma (px)",
    "noise": "colour Gaussian noise sigma (8-bit levels)",
    "jpeg": "JPEG quality (PIL, 4:2:0)",
    "downup": "factor of an antialiased bilinear downsample, resized back bicubic",
    "mixed": "level L in 1..5: blur 0.4 L, then down-up 1 + 0.5 L, then noise 2.5 L, then JPEG 95 - 12 L",
}


#: The five levels of each kind that ``benchmarks/quality.py`` sweeps (levels for 256 px faces): the project's
#: scale of severity. Level k of every kind counts as equally bad, which is what a cross-content ranking of
#: mixed kinds is measured against.
SWEEP_LEVELS = {
    "blur": [0.8, 1.3, 1.9, 2.6, 3.5],
    "noise": [3.0, 6.0, 10.0, 15.0, 22.0],
    "jpeg": [85, 65, 45, 30, 18],
    "downup": [1.5, 2.0, 3.0, 4.0, 6.0],
    "mixed": [1, 2, 3, 4, 5],
}
#: The value of each kind that leaves an image as it is: level 0 of :data:`SWEEP_LEVELS`.
SWEEP_CLEAN = {"blur": 0.0, "noise": 0.0, "jpeg": 100, "downup": 1.0, "mixed": 0.0}


def sweep_level(kind: str, value: torch.Tensor) -> torch.Tensor:
    """Where a kind's value (sigma, quality, factor, mixed level) falls on :data:`SWEEP_LEVELS`' scale.

    Piecewise linear through (clean value, 0), (level 1 value, 1) ... (level 5 value, 5), extended past level 5
    by the last segment's slope and clamped at 0 below the clean value.

    Args:
        kind: a key of :data:`SWEEP_LEVELS`. value: (N,) values of that kind.
    Returns:
        (N,) float levels >= 0.

    Example:
        >>> import torch
        >>> sweep_level("jpeg", torch.tensor([100.0, 85.0, 55.0, 12.0]))
        tensor([0.0000, 1.0000, 2.5000, 5.5000])
    """
    if kind not in SWEEP_LEVELS:
        raise ValueError(f"kind {kind!r} has no sweep levels; expected one of {sorted(SWEEP_LEVELS)}")
    knots = torch.tensor([SWEEP_CLEAN[kind], *SWEEP_LEVELS[kind]], dtype=torch.float64)
    sign = 1.0 if knots[-1] > knots[0] else -1.0  # JPEG quality falls as the damage grows
    knots, v = knots * sign, value.to(torch.float64).cpu() * sign
    seg = (torch.searchsorted(knots, v.contiguous(), right=True) - 1).clamp(0, len(knots) - 2)
    level = seg + (v - knots[seg]) / (knots[seg + 1] - knots[seg])
    return level.clamp_min(0).to(torch.float32).to(value.device)


def _full(x: torch.Tensor, value: float, device=None) -> torch.Tensor:
    return torch.full((x.shape[0],), float(value), device=device)


def degrade(x: torch.Tensor, kind: str, level: float, seed: int = 0) -> torch.Tensor:
    """Degrade every image of a batch by one kind at one level (:data:`SWEEP_KINDS`), deterministically.

    The noise (the only random part) comes from a generator seeded with ``seed``, so a sweep is repeatable.

    Args:
        x: (N, 3, H, W) float in [0, 1].
        kind: a key of :data:`SWEEP_KINDS`. level: what the kind's entry says (JPEG quality is rounded).
    Returns:
        (N, 3, H, W) float in [0, 1].

    Example:
        >>> import torch
        >>> from ifqa_loss.train.degradations import degrade
        >>> x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        >>> degrade(x, "mixed", 3, seed=1).shape
        torch.Size([2, 3, 64, 64])
        >>> bool((degrade(x, "noise", 10.0, seed=1) == degrade(x, "noise", 10.0, seed=1)).all())
        True
    """
    if kind == "blur":
        return gaussian_blur(x, _full(x, level, x.device))
    if kind == "noise":
        return gaussian_noise(x, _full(x, level), torch.Generator().manual_seed(seed), p_gray=0.0)
    if kind == "jpeg":
        return jpeg_pil(x, _full(x, round(level)).int())
    if kind == "downup":
        return down_up(x, _full(x, level), ["bicubic"] * x.shape[0])
    if kind == "mixed":
        y = degrade(x, "blur", 0.4 * level)
        y = degrade(y, "downup", 1.0 + 0.5 * level)
        y = degrade(y, "noise", 2.5 * level, seed)
        return degrade(y, "jpeg", 95 - 12 * level)
    raise ValueError(f"unknown degradation kind {kind!r}; expected one of {sorted(SWEEP_KINDS)}")


def sharpen(x: torch.Tensor, radius: float, amount: float) -> torch.Tensor:
    """Unsharp-mask every image of a batch with one radius (Gaussian sigma, px) and amount (:func:`unsharp_mask`)."""
    return unsharp_mask(x, _full(x, radius), _full(x, amount))


class Degrader:
    """Random blind-restoration degradations: ``lq = Degrader(cfg, seed)(hq)``."""

    def __init__(self, config: DegradationConfig | None = None, seed: int = 0) -> None:
        self.cfg = config or DegradationConfig()
        if self.cfg.jpeg_grid not in ("fixed", "random"):
            raise ValueError(f"jpeg_grid must be 'fixed' or 'random', got {self.cfg.jpeg_grid!r}")
        self.gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def __call__(self, hq: torch.Tensor) -> torch.Tensor:
        cfg, g, n, dev = self.cfg, self.gen, hq.shape[0], hq.device
        x = hq.float()
        stages = torch.stack([_bernoulli(n, p, g) for p in (cfg.p_blur, cfg.p_down, cfg.p_noise, cfg.p_jpeg)], 1)
        forced = torch.randint(0, 4, (n,), generator=g)  # every sample gets at least one stage
        single = _bernoulli(n, cfg.p_single, g)
        stages[single] = False
        stages[torch.arange(n), forced] |= ~stages.any(1)
        jpeg_only = torch.zeros(n, dtype=torch.bool)
        if cfg.p_jpeg_only > 0:  # drawn only when used, so other configs keep their random streams
            jpeg_only = _bernoulli(n, cfg.p_jpeg_only, g)
            stages[jpeg_only] = torch.tensor([False, False, False, True])
        blur = stages[:, 0]
        motion = blur & _bernoulli(n, cfg.p_motion, g)
        gauss = blur & ~motion
        if gauss.any():
            sig = _uniform(n, *cfg.gauss_sigma, g, dev)
            blurred = gaussian_blur(x, torch.where(gauss.to(dev), sig, 0.3))
            x = torch.where(gauss.to(dev)[:, None, None, None], blurred, x)
        if motion.any():
            k = int(torch.randint(cfg.motion_kernel[0] // 2, cfg.motion_kernel[1] // 2 + 1, (1,), generator=g)) * 2 + 1
            ang = _uniform(n, -180.0, 180.0, g, dev)
            dirn = _uniform(n, -1.0, 1.0, g, dev)
            x = torch.where(motion.to(dev)[:, None, None, None], motion_blur(x, k, ang, dirn), x)
        down = stages[:, 1]
        if down.any():
            # log-uniform scale: small factors are as common as large ones per octave
            scale = torch.exp(_uniform(n, math.log(cfg.scale[0]), math.log(cfg.scale[1]), g, "cpu"))
            scale = torch.where(down, scale, torch.ones(n))
            modes = [("bilinear", "bicubic", "nearest")[int(i)] for i in torch.randint(0, 3, (n,), generator=g)]
            x = down_up(x, torch.where(down, scale.clamp_min(1.1), scale), modes)
        if cfg.p_sharpen > 0:  # drawn only when used, so other configs keep their random streams
            sharp = _bernoulli(n, cfg.p_sharpen, g) & ~jpeg_only
            sig, amt = _uniform(n, *cfg.sharpen_sigma, g, dev), _uniform(n, *cfg.sharpen_amount, g, dev)
            if sharp.any():  # only the chosen samples, like the JPEG stage
                idx = sharp.nonzero().flatten().to(dev)
                x = x.clone()
                x[idx] = unsharp_mask(x[idx], sig[idx], amt[idx])
        noisy = stages[:, 2]
        poisson = noisy & _bernoulli(n, cfg.p_poisson, g)
        gnoise = noisy & ~poisson
        if gnoise.any():
            sig = _uniform(n, *cfg.noise_sigma, g, dev)
            x = torch.where(gnoise.to(dev)[:, None, None, None], gaussian_noise(x, sig, g), x)
        if poisson.any():
            sc = _uniform(n, *cfg.poisson_scale, g, dev)
            x = torch.where(poisson.to(dev)[:, None, None, None], poisson_noise(x, sc, g), x)
        jpeg = stages[:, 3]
        if jpeg.any():
            q = torch.randint(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, (n,), generator=g)
            backend = cfg.jpeg_backend if cfg.jpeg_backend != "auto" else ("pil" if dev.type == "cpu" else "kornia")
            codec = jpeg_pil if backend == "pil" else jpeg_kornia
            idx = jpeg.nonzero().flatten()
            x = x.clone()
            x[idx.to(dev)] = jpeg_on_grid(codec, x[idx.to(dev)], q[idx], g, cfg.jpeg_grid == "random")
        return x.clamp(0, 1).to(hq.dtype)
