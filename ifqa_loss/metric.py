"""``IFQAMetric``: the mean IFQA score over a dataset, as a torchmetrics ``Metric``."""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from .core import IFQA
from .preprocess import check_images, check_input_range, check_values_in_range


class IFQAMetric(Metric):
    """Mean IFQA score of all images seen (no reference needed); higher is better.

    States ``score_sum`` and ``count`` are reduced with ``sum`` across processes, so distributed
    evaluation over uneven shards gives the mean over all images. The quality network is not part of
    the metric's ``state_dict``.

    Args:
        backbone, weights, input_range: as for :class:`~ifqa_loss.IFQA`.
        kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ``dist_sync_fn``...).

    Raises:
        ValueError: in ``update``, when images leave ``input_range`` (beyond one 8-bit level),
            naming the observed range; or on bad shapes and NaN/Inf.

    Example:
        >>> import torch
        >>> from ifqa_loss import IFQAMetric
        >>> metric = IFQAMetric()
        >>> metric.update(torch.rand(4, 3, 64, 64))
        >>> metric.update(torch.rand(3, 3, 64, 64))
        >>> value = metric.compute()
        >>> value.shape, 0.0 <= value.item() <= 1.0
        (torch.Size([]), True)
    """

    #: Higher scores mean more realistic faces.
    higher_is_better: bool = True
    #: Scores are differentiable with respect to the images.
    is_differentiable: bool = True
    #: ``update`` only adds to the states, so the batch value needs no full state update.
    full_state_update: bool = False
    #: Score range, used by ``plot``.
    plot_lower_bound: float = 0.0
    plot_upper_bound: float = 1.0

    score_sum: Tensor
    count: Tensor

    def __init__(self, backbone: str | None = None, weights: str | os.PathLike | None = None,
                 input_range: Sequence[float] = (0, 1), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        input_range = check_input_range(input_range)
        # Kept outside the module tree: the network's weights do not belong in the metric's state_dict.
        object.__setattr__(self, "_ifqa", IFQA(backbone, weights, input_range=input_range))
        self.input_range = input_range
        self.add_state("score_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @property
    def model(self) -> IFQA:
        """The frozen :class:`~ifqa_loss.IFQA` model used for scoring."""
        return self._ifqa

    def _apply(self, fn, *args, **kwargs):  # keep the hidden model on the metric's device
        super()._apply(fn, *args, **kwargs)
        self._ifqa._apply(fn)
        return self

    def update(self, images: Tensor) -> None:
        """Add a batch ``images`` (N, 3, H, W) in ``input_range``."""
        check_images(images, name="images")
        check_values_in_range(images, self.input_range, name="images")
        scores = self._ifqa(images).score
        self.score_sum += scores.sum().to(self.score_sum.dtype)
        self.count += scores.numel()

    def compute(self) -> Tensor:
        """Mean score over all images seen (float32 scalar); NaN with a warning when none were seen."""
        if int(self.count) == 0:
            from torchmetrics.utilities import rank_zero_warn

            rank_zero_warn("IFQAMetric.compute() called before any update(); returning NaN.")
            return torch.tensor(float("nan"), device=self.score_sum.device)
        return (self.score_sum / self.count).float()

    def plot(self, val: Tensor | Sequence[Tensor] | None = None, ax: Any = None):
        """Plot a single value or a sequence of values (needs matplotlib).

        Example:
            >>> import torch
            >>> from ifqa_loss import IFQAMetric
            >>> metric = IFQAMetric()
            >>> metric.update(torch.rand(2, 3, 64, 64))
            >>> fig, ax = metric.plot()
        """
        return self._plot(val, ax)
