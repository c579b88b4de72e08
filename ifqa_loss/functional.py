"""Functional interface: stateless twins of :class:`~ifqa_loss.IFQALoss` and :class:`~ifqa_loss.IFQAMetric`."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .core import IFQA


def ifqa_score(x: torch.Tensor, model: IFQA) -> torch.Tensor:
    """IFQA score per image, differentiable with respect to ``x``.

    Args:
        x: (N, 3, H, W) float images in ``model.input_range``.
        model: an :class:`~ifqa_loss.IFQA` instance.
    Returns:
        (N,) scores in [0, 1]; higher = more realistic. float32, or float64 for a float64 model (so that
        ``torch.autograd.gradcheck`` can run on ``IFQA(...).double()``).

    Example:
        >>> import torch
        >>> from ifqa_loss import IFQA
        >>> from ifqa_loss.functional import ifqa_score
        >>> ifqa_score(torch.rand(3, 3, 64, 64), IFQA()).shape
        torch.Size([3])
    """
    return model(x).score


def ifqa_map(x: torch.Tensor, model: IFQA) -> torch.Tensor:
    """Per-pixel quality map (N, 1, h, w) in [0, 1] at the model's native resolution (or the input's, with
    ``upsample_map=True``)."""
    return model(x).map


def weighted_map_mean(qmap: torch.Tensor, weight_map: torch.Tensor) -> torch.Tensor:
    """Weighted mean of a quality map per image.

    Args:
        qmap: (N, 1, h, w) quality map.
        weight_map: non-negative weights, (h', w'), (1|N, h', w') or (1|N, 1, h', w'); resized to (h, w)
            (area interpolation) when it differs.
    Returns:
        (N,) ``sum(w * map) / sum(w)``.
    """
    w = weight_map.to(device=qmap.device, dtype=qmap.dtype)
    if w.ndim == 2:
        w = w[None, None]
    elif w.ndim == 3:
        w = w[:, None]
    if w.ndim != 4 or w.shape[1] != 1 or w.shape[0] not in (1, qmap.shape[0]):
        raise ValueError(f"weight_map must have shape (h, w), (N, h, w) or (N, 1, h, w) with N in (1, "
                         f"{qmap.shape[0]}), got {tuple(weight_map.shape)}")
    if w.shape[-2:] != qmap.shape[-2:]:
        w = F.interpolate(w, size=qmap.shape[-2:], mode="area" if w.shape[-1] > qmap.shape[-1] else "bilinear")
    total = w.sum(dim=(1, 2, 3))
    return (qmap * w).sum(dim=(1, 2, 3)) / total


def ifqa_loss(x: torch.Tensor, model: IFQA, weight_map: torch.Tensor | None = None,
              reduction: str = "mean") -> torch.Tensor:
    """``1 - score`` (or ``1 -`` the weighted map mean), reduced by ``"mean"``, ``"sum"`` or ``"none"``."""
    out = model(x)
    score = out.score if weight_map is None else weighted_map_mean(out.map, weight_map)
    loss = 1.0 - score
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


__all__ = ["ifqa_loss", "ifqa_map", "ifqa_score", "weighted_map_mean"]
