"""``IFQAMetric``: the mean IFQA score over a dataset, as a torchmetrics ``Metric``.

:class:`MeanScoreMetric` holds what every mean-of-scores metric here shares (the states, dtype and device
handling, ``compute``, per-image ``scores``); :class:`IFQAMetric` and :class:`~ifqa_loss.DSLFIQAMetric` add
their network and ``update``.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from .core import IFQA
from .preprocess import check_images, check_input_range, check_values_in_range


def _move_to(t: Tensor, device: torch.device) -> Tensor:
    return t.to(device=device)


class MeanScoreMetric(Metric):
    """Mean of a frozen network's per-image scores in [0, 1] over all images seen; higher is better.

    A base class: a subclass passes its network (a module whose output has a ``.score`` of shape (N,)) to
    ``__init__`` and calls :meth:`_add` with each batch's scores from its ``update``. The network is kept
    outside the module tree, so its weights are not in the metric's ``state_dict``; it follows the metric's
    device moves, and changes dtype only through torchmetrics' ``set_dtype``.

    States: ``score_sum`` (float64) and ``count`` (long), reduced with ``sum`` across processes; with
    ``keep_scores=True`` also ``image_scores``, a list reduced with ``cat`` and read by :meth:`scores`.
    """

    #: Higher scores mean better faces.
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
    image_scores: list[Tensor]

    def __init__(self, network: nn.Module, keep_scores: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        object.__setattr__(self, "_network", network)
        self.keep_scores = bool(keep_scores)
        self.add_state("score_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        if self.keep_scores:
            self.add_state("image_scores", default=[], dist_reduce_fx="cat")

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> "MeanScoreMetric":
        """Follow device moves; change dtypes (states and the hidden network) only inside :meth:`set_dtype`.

        torchmetrics guards its states against ``.half()``/``.float()``/``.double()`` by the name of ``fn``
        only; here any ``fn`` that changes a floating-point dtype (``.to(torch.float16)`` too) is reduced
        to its device move, unless ``set_dtype`` asked for the cast, which then casts the network only: the
        states (a float64 sum, a long count, the kept scores) keep their dtypes.
        """
        net_param = next(self._network.parameters())
        dtypes = {torch.float32, torch.float64, net_param.dtype}
        probes = [fn(torch.zeros((), dtype=d, device=net_param.device)) for d in dtypes]
        casts = any(p.dtype != d for p, d in zip(probes, dtypes))
        device = probes[0].device
        if casts and not self._dtype_convert:
            fn = functools.partial(_move_to, device=device)  # the device part of the cast
        if casts and self._dtype_convert:  # set_dtype: the network's dtype; the states keep theirs
            super()._apply(fn, exclude_state=tuple(self._defaults))
            move = functools.partial(_move_to, device=device)
            for key, default in self._defaults.items():
                value = getattr(self, key)
                self._defaults[key] = move(default) if isinstance(default, Tensor) else [move(v) for v in default]
                setattr(self, key, move(value) if isinstance(value, Tensor) else [move(v) for v in value])
        else:
            super()._apply(fn, *args, **kwargs)
        self._network._apply(fn)
        return self

    def _add(self, scores: Tensor) -> None:
        """Add one batch's per-image scores (N,) to the states."""
        self.score_sum += scores.sum().to(self.score_sum.dtype)
        self.count += scores.numel()
        if self.keep_scores:
            self.image_scores.append(scores.detach())

    def _out_dtype(self) -> torch.dtype:  # float64 only for a float64 network (after set_dtype(torch.float64))
        return torch.float64 if next(self._network.parameters()).dtype == torch.float64 else torch.float32

    def compute(self) -> Tensor:
        """Mean score over all images seen (float32 scalar; float64 after ``set_dtype(torch.float64)``).

        NaN with a warning when no image was seen.
        """
        if int(self.count) == 0:
            from torchmetrics.utilities import rank_zero_warn

            rank_zero_warn(f"{type(self).__name__}.compute() called before any update(); returning NaN.")
            return torch.tensor(float("nan"), dtype=self._out_dtype(), device=self.score_sum.device)
        return (self.score_sum / self.count).to(self._out_dtype())

    def scores(self) -> Tensor:
        """Every image's score seen so far, (N,) in update order, detached (needs ``keep_scores=True``).

        Synced like ``compute()`` (unless ``sync_on_compute=False``): in a distributed run each process gets
        all processes' scores, rank 0's first, then rank 1's and so on.

        Example:
            >>> import csv, io, torch
            >>> from ifqa_loss import IFQAMetric
            >>> metric = IFQAMetric(keep_scores=True)
            >>> names = ["a.png", "b.png", "c.png"]
            >>> metric.update(torch.rand(3, 3, 64, 64))
            >>> out = io.StringIO()
            >>> csv.writer(out).writerows(zip(names, metric.scores().tolist()))
            >>> len(out.getvalue().splitlines())
            3
        """
        if not self.keep_scores:
            name = type(self).__name__
            raise RuntimeError(f"{name}.scores() needs {name}(keep_scores=True); by default only the sum "
                               "and count of the scores are kept")

        def read() -> Tensor:
            kept = self.image_scores
            if isinstance(kept, list) and not kept:
                return torch.zeros(0, device=self.score_sum.device)
            return dim_zero_cat(kept).reshape(-1).clone()

        if self._is_synced:
            return read()
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync,
                               should_unsync=self._should_unsync):
            return read()

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


class IFQAMetric(MeanScoreMetric):
    """Mean IFQA score of all images seen (no reference needed); higher is better.

    ``update(preds, target=None)`` takes the images as ``preds``, like torchmetrics' own no-reference image
    metrics, and ignores ``target``: in a ``MetricCollection`` next to full-reference metrics (PSNR, SSIM,
    LPIPS) both ``collection.update(restored, hq)`` and ``collection.update(preds=restored, target=hq)``
    work. ``update(images=...)`` (the earlier name) still works as a keyword-only alias.

    States ``score_sum`` (float64) and ``count`` are reduced with ``sum`` across processes, so distributed
    evaluation over uneven shards gives the mean over all images. With ``keep_scores=True`` a list state of
    per-image scores is kept as well (reduced with ``cat``), read by :meth:`scores`. The quality network is
    not part of the metric's ``state_dict`` and has no parameters in the module tree.

    Dtypes: images of any float dtype (float16, bfloat16, float32, float64) are accepted; they are cast to
    the network's dtype (float32 by default), so a half or bfloat16 batch gives exactly the scores of
    ``preds.float()``. Like every torchmetrics metric, the metric ignores a parent's ``.half()``,
    ``.double()``, ``.to(dtype)`` (an ``nn.ModuleDict``, a ``MetricCollection``, a ``LightningModule``): its
    states and its network keep their dtypes and only follow device moves. :meth:`set_dtype` casts the
    network (the states keep their dtypes: a float64 sum, a long count): ``set_dtype(torch.float64)`` gives
    float64 scores and a float64 ``compute()``, ``set_dtype(torch.float16)`` runs the network in half.

    Class attributes:
        higher_is_better: ``True``; 1 = a realistic face.
        is_differentiable: ``True``; ``forward``'s batch value carries gradients to the images (a plain
            ``update`` runs without grad, as in every torchmetrics metric, so the states hold no graph).
        full_state_update: ``False``; ``update`` only adds to the states.
        plot_lower_bound, plot_upper_bound: 0 and 1, the score range.

    Args:
        backbone, weights, input_range: as for :class:`~ifqa_loss.IFQA`.
        keep_scores: also keep every image's score (a list state, memory grows with the dataset), for a
            per-image CSV from an evaluation loop; read them with :meth:`scores`.
        kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ``dist_sync_on_step``,
            ``compute_on_cpu``, ``dist_sync_fn``...).

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

    Per-image scores (``keep_scores=True``):
        >>> metric = IFQAMetric(keep_scores=True)
        >>> metric.update(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))  # the target is ignored
        >>> metric.scores().shape
        torch.Size([2])
    """

    def __init__(self, backbone: str | None = None, weights: str | os.PathLike | None = None,
                 input_range: Sequence[float] = (0, 1), keep_scores: bool = False, **kwargs: Any) -> None:
        input_range = check_input_range(input_range)
        super().__init__(IFQA(backbone, weights, input_range=input_range), keep_scores=keep_scores, **kwargs)
        self.input_range = input_range

    @property
    def model(self) -> IFQA:
        """The frozen :class:`~ifqa_loss.IFQA` model used for scoring."""
        return self._network

    def update(self, preds: Tensor | None = None, target: Tensor | None = None, *,
               images: Tensor | None = None) -> None:
        """Add a batch ``preds`` (N, 3, H, W) in ``input_range``; ``target`` is accepted and ignored.

        ``images=`` is a keyword-only alias of ``preds`` (give one of them, not both).
        """
        if images is not None:
            if preds is not None:
                raise TypeError("IFQAMetric.update() got both preds and images; images= is an alias of preds, "
                                "give one of them")
            preds = images
        if preds is None:
            raise TypeError("IFQAMetric.update() missing the images: update(preds) with preds (N, 3, H, W)")
        check_images(preds, name="preds")
        check_values_in_range(preds, self.input_range, name="preds")
        self._add(self._network(preds).score)
