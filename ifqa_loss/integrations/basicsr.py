"""IFQA losses for basicsr option files (GFPGAN, CodeFormer, RestoreFormer, VQFR and other basicsr trainers).

Importing this module registers two losses in basicsr's ``LOSS_REGISTRY``:

- ``IFQAPixelLoss``: an inner basicsr pixel loss (``L1Loss`` by default) plus ``ifqa_weight * (1 - IFQA score)``,
  for the fixed ``pixel_opt`` slot that GFPGAN's and CodeFormer's models read::

      pixel_opt:
        type: IFQAPixelLoss
        loss_weight: 0.1       # the inner pixel loss's weight, as with type: L1Loss
        reduction: mean
        ifqa_weight: 0.01      # the IFQA term's own weight (not multiplied by loss_weight)

- ``IFQARealismLoss``: ``loss_weight * (1 - IFQA score)`` alone, for a model of your own that builds it.

Both follow basicsr's conventions: ``loss_weight``, ``reduction`` ('mean' | 'sum' | 'none') and
``forward(pred, target=None, weight=None, **kwargs)``. Images are taken in [-1, 1], as GFPGAN and CodeFormer
normalise them (``mean: [0.5, 0.5, 0.5]``, ``std: [0.5, 0.5, 0.5]``); give ``input_range: [0, 1]`` for a model
that trains on [0, 1] (basicsr's SR models). The IFQA network is frozen and kept out of the loss's
``state_dict`` (:class:`ifqa_loss.IFQALoss`); ``backbone`` and ``weights`` choose it (default: the bundled
``ifqa-lite``). Add ``import ifqa_loss.integrations.basicsr`` to the trainer's ``train.py`` before it calls
``train_pipeline``; docs/basicsr.md has the option files for GFPGAN and CodeFormer.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn

from ..loss import IFQALoss

try:
    from basicsr.utils import get_root_logger
    from basicsr.utils.registry import LOSS_REGISTRY
except ImportError as e:  # a missing basicsr, or one that does not import beside this torchvision
    raise ImportError(f"ifqa_loss.integrations.basicsr needs an importable basicsr ({e}); pip install "
                      "\"ifqa-loss[basicsr]\" installs basicsr-fixed, the basicsr 1.4.2 that imports beside current "
                      "torchvision") from e

_REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"Unsupported reduction mode: {reduction}. Supported ones are: {list(_REDUCTIONS)}")
    return reduction


def _weight_map(weight: torch.Tensor | None) -> torch.Tensor | None:
    """basicsr's element-wise ``weight`` (N, 1|C, H, W) as IFQA's weights over the face (N, 1, H, W)."""
    if weight is None:
        return None
    if weight.ndim != 4:
        raise ValueError(f"weight must be (N, 1|C, H, W) like pred, got shape {tuple(weight.shape)}")
    return weight.float().mean(dim=1, keepdim=True)


class IFQARealismLoss(nn.Module):
    """``loss_weight * (1 - IFQA score)`` of ``pred``; ``target`` is not used (IFQA needs no reference).

    Args:
        loss_weight: the term's weight.
        reduction: 'mean' or 'sum' over the images, or 'none' for one value per image, (N,).
        input_range: the range of ``pred``: ``[-1, 1]`` (GFPGAN, CodeFormer; the default) or ``[0, 1]``.
        backbone, weights: the IFQA model, as for :class:`ifqa_loss.IFQA` (default: the bundled ``ifqa-lite``).
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", input_range: Sequence[float] = (-1, 1),
                 backbone: str | None = None, weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.reduction = _check_reduction(reduction)
        self.ifqa = IFQALoss(backbone=backbone, weights=weights, input_range=tuple(input_range), reduction="none")

    def forward(self, pred: torch.Tensor, target: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        """``pred`` (N, 3, H, W); a ``weight`` (N, 1|C, H, W) weights the quality map (channels averaged)."""
        weight_map = _weight_map(weight)
        if weight_map is None:
            per_image = self.ifqa(pred)
        else:
            from ..functional import ifqa_loss

            per_image = ifqa_loss(pred, self.ifqa.ifqa, weight_map, reduction="none")
        if self.reduction == "mean":
            per_image = per_image.mean()
        elif self.reduction == "sum":
            per_image = per_image.sum()
        return self.loss_weight * per_image


class IFQAPixelLoss(nn.Module):
    """A basicsr pixel loss plus ``ifqa_weight * (1 - IFQA score)``: IFQA in a trainer's fixed ``pixel_opt`` slot.

    Args:
        loss_weight, reduction: the inner pixel loss's, as for ``type: L1Loss``.
        ifqa_weight: the IFQA term's weight (0 turns it off; it is not multiplied by ``loss_weight``).
        pixel_type: the inner loss's registered name: ``L1Loss`` (default), ``MSELoss``, ``CharbonnierLoss``...
        input_range, backbone, weights: as for :class:`IFQARealismLoss`.
        ifqa_log_freq: every that many calls, log both terms to basicsr's logger (the trainers log only their
            sum, as ``l_pix`` or ``l_g_pix``); 0 never. The last terms are also in ``last_terms``.
        **pixel_kwargs: further options of the inner loss (``eps`` for ``CharbonnierLoss``).

    With ``reduction: none`` the IFQA term of each image is added to each of its elements.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", ifqa_weight: float = 0.01,
                 pixel_type: str = "L1Loss", input_range: Sequence[float] = (-1, 1), backbone: str | None = None,
                 weights: str | os.PathLike | None = None, ifqa_log_freq: int = 100, **pixel_kwargs) -> None:
        super().__init__()
        if pixel_type == type(self).__name__:
            raise ValueError("pixel_type must be another loss than IFQAPixelLoss")
        if ifqa_weight < 0 or ifqa_log_freq < 0:
            raise ValueError(f"ifqa_weight and ifqa_log_freq must be >= 0, got {ifqa_weight} and {ifqa_log_freq}")
        self.pixel = LOSS_REGISTRY.get(pixel_type)(loss_weight=loss_weight, reduction=reduction, **pixel_kwargs)
        self.ifqa_weight = float(ifqa_weight)
        self.reduction = _check_reduction(reduction)
        self.realism = IFQARealismLoss(1.0, reduction, input_range, backbone, weights)
        self.ifqa_log_freq = int(ifqa_log_freq)
        self.calls = 0
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        pix = self.pixel(pred, target, weight, **kwargs)
        if self.ifqa_weight == 0:
            return pix
        ifqa = self.ifqa_weight * self.realism(pred, weight=weight)
        if self.reduction == "none" and pix.ndim == 4:
            ifqa = ifqa.view(-1, 1, 1, 1)
        self.calls += 1
        self.last_terms = {"l_pix_inner": pix.detach(), "l_ifqa": ifqa.detach()}
        if self.ifqa_log_freq and self.calls % self.ifqa_log_freq == 0:  # one host sync per logged call
            get_root_logger().info(f"IFQAPixelLoss call {self.calls}: l_pix_inner: {pix.detach().mean():.4e} "
                                   f"l_ifqa: {ifqa.detach().mean():.4e} (ifqa_weight {self.ifqa_weight:g})")
        return pix + ifqa


for _cls in (IFQARealismLoss, IFQAPixelLoss):
    if _cls.__name__ not in LOSS_REGISTRY:  # a second import (a reload) keeps the first registration
        LOSS_REGISTRY.register(_cls)

__all__ = ["IFQAPixelLoss", "IFQARealismLoss"]
