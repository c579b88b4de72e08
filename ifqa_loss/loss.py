"""``IFQALoss``: ``1 - IFQA score`` as a differentiable training objective."""
from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn

from .core import IFQA
from .functional import ifqa_loss

_REDUCTIONS = ("mean", "sum", "none")


class IFQALoss(nn.Module):
    """IFQA realism loss for face restoration/generation: ``1 - score`` per image.

    The quality network is frozen and stays in eval mode; gradients flow only to the input.
    Inputs are not range-checked, so a generator that slightly overshoots ``input_range`` is fine.
    The network is kept out of the module tree: a model holding this loss gets no extra parameters or
    ``state_dict`` entries (no 420 MB of frozen ``cnn`` weights in your checkpoints); ``.to()`` still moves it.

    Args:
        backbone, weights, input_range: as for :class:`~ifqa_loss.IFQA`.
        reduction: "mean" (scalar), "sum" (scalar) or "none" (N,).
        weight_map: optional non-negative weights over the face, (h, w), (1|N, h, w) or (1|N, 1, h, w); the
            loss then uses the weighted mean of the quality map (e.g. from
            :func:`ifqa_loss.regions.primary_region_weight_map`). Resized to the map's resolution.
        check_finite: as for :class:`~ifqa_loss.IFQA`: NaN/Inf raise in eager mode; inside a user's
            ``torch.compile`` step (``fullgraph=True`` works, no graph break) the check is skipped and a NaN
            propagates into the loss.

    The loss is float32, or float64 when the network is float64 (``criterion.double()``).

    Example:
        >>> import torch
        >>> from ifqa_loss import IFQALoss
        >>> criterion = IFQALoss(input_range=(-1, 1))
        >>> restored = torch.rand(2, 3, 128, 128, requires_grad=True) * 2 - 1
        >>> loss = criterion(restored)
        >>> loss.backward()
        >>> loss.ndim, 0 <= loss.item() <= 1
        (0, True)
    """

    def __init__(self, backbone: str | None = None, weights: str | os.PathLike | None = None,
                 input_range: Sequence[float] = (0, 1), reduction: str = "mean",
                 weight_map: torch.Tensor | None = None, check_finite: bool = True) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if weight_map is not None:
            if not isinstance(weight_map, torch.Tensor) or not weight_map.is_floating_point():
                raise TypeError("weight_map must be a floating-point torch.Tensor")
            if not bool(torch.isfinite(weight_map).all()) or bool((weight_map < 0).any()):
                raise ValueError("weight_map must be finite and non-negative")
            if weight_map.ndim not in (2, 3, 4) or float(weight_map.sum()) <= 0:
                raise ValueError(f"weight_map must be (h, w), (N, h, w) or (N, 1, h, w) with a positive sum, "
                                 f"got shape {tuple(weight_map.shape)}")
            self.register_buffer("weight_map", weight_map.detach().clone(), persistent=False)
        else:
            self.weight_map = None
        self.reduction = reduction
        object.__setattr__(self, "_ifqa", IFQA(backbone, weights, input_range=input_range, check_finite=check_finite))

    @property
    def ifqa(self) -> IFQA:
        """The frozen :class:`~ifqa_loss.IFQA` model."""
        return self._ifqa

    def _apply(self, fn, *args, **kwargs):  # move/cast the hidden model with the loss
        super()._apply(fn, *args, **kwargs)
        self._ifqa._apply(fn)
        return self

    def compile(self, **kwargs) -> None:
        """Compile the quality network in place (see :meth:`IFQA.compile <ifqa_loss.IFQA.compile>`)."""
        self._ifqa.compile(**kwargs)

    def train(self, mode: bool = True) -> "IFQALoss":
        return super().train(False)

    def forward(self, restored: torch.Tensor) -> torch.Tensor:
        """Loss for ``restored`` (N, 3, H, W) in ``input_range``: scalar, or (N,) with ``reduction="none"``."""
        return ifqa_loss(restored, self.ifqa, self.weight_map, self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, weighted={self.weight_map is not None}"
