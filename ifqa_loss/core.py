"""``IFQA``: a frozen, differentiable IFQA model that returns a score and a per-pixel quality map."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .preprocess import check_images, check_input_range, to_model_input
from .weights import load_model

if TYPE_CHECKING:
    from .io import ImageLike


class IFQAOutput(NamedTuple):
    """Result of :class:`IFQA`: ``score`` (N,) = mean of ``map`` (N, 1, h, w), both in [0, 1], 1 = realistic."""

    score: torch.Tensor
    map: torch.Tensor


class IFQA(nn.Module):
    """IFQA face-quality model: (N, 3, H, W) images -> per-pixel quality map and score.

    The network is frozen: its parameters never require grad, and it stays in eval mode even when a
    parent module calls ``.train()``. Gradients flow to the input, so the output can drive a loss.

    Args:
        backbone: "lite" (bundled default), "cnn" (official U-Net) or "vit" (IFQA++ ViT-H/14).
            ``None`` infers it from the weights.
        weights: a file path (official ``.pth``, bare state dict or ``.safetensors``) or a registered name;
            ``None`` uses the bundled ``ifqa-lite``.
        input_range: the value range of the input images, e.g. ``(0, 1)`` or ``(-1, 1)``.
        upsample_map: return the map at the input's resolution (bilinear) instead of the native 256/224.
        check_finite: reject NaN/Inf inputs (and outputs that overflow) with a clear error; costs one host
            sync per call, on the (N,) scores. Eager mode only: when the model is traced into a user's
            ``torch.compile`` graph (``torch.compiler.is_compiling()``) the check is skipped, so the graph has no
            break, and a NaN/Inf propagates into the score as with ``check_finite=False``.

    Output dtype: float32 for float32, bfloat16 and float16 models (and inputs of any float dtype, which are
    cast to the model's dtype); float64 for a float64 model (``IFQA().double()``).

    Example:
        >>> import torch
        >>> from ifqa_loss import IFQA
        >>> model = IFQA()
        >>> out = model(torch.rand(2, 3, 128, 128))
        >>> out.score.shape, out.map.shape
        (torch.Size([2]), torch.Size([2, 1, 256, 256]))
        >>> bool(((out.score >= 0) & (out.score <= 1)).all())
        True
    """

    def __init__(self, backbone: str | None = None, weights: str | os.PathLike | None = None,
                 input_range: Sequence[float] = (0, 1), upsample_map: bool = False, check_finite: bool = True) -> None:
        super().__init__()
        self.input_range = check_input_range(input_range)
        loaded = load_model(backbone, weights)
        self.net = loaded.model
        self.backbone = loaded.backbone
        self.weights_source = loaded.source
        self.upsample_map = bool(upsample_map)
        self.check_finite = bool(check_finite)
        super().train(False)

    @property
    def native_size(self) -> int:
        return int(self.net.native_size)

    def train(self, mode: bool = True) -> "IFQA":
        """No-op: the quality model always stays in eval mode."""
        return super().train(False)

    def compile(self, **kwargs) -> None:
        """Compile the network in place with ``torch.compile``; the input checks stay eager.

        Defaults to ``fullgraph=True`` (the whole network is one graph, so norms, activations and skips
        fuse around the convolutions) and ``dynamic=False``; ``kwargs`` go to ``torch.compile``, e.g.
        ``mode="max-autotune"``. Compilation happens on the first call and again for each new batch size,
        dtype, memory format, autocast or grad mode. Weights and ``state_dict`` keys are unchanged.
        ``fullgraph=True`` is tested on ``lite`` (``cnn`` shares its blocks); pass ``fullgraph=False`` to allow
        graph breaks.
        Measured in ``benchmarks/speed.py`` (``docs/speed.md``).
        """
        self.net.compile(**{"fullgraph": True, "dynamic": False, **kwargs})

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in ``input_range`` -> network input (N, 3, S, S) in [-1, 1]."""
        return to_model_input(x, self.backbone, self.input_range)

    def forward(self, x: torch.Tensor) -> IFQAOutput:
        check_images(x, check_finite=False)  # NaN/Inf are caught below from the score: one sync, no extra pass
        original = x
        param = next(self.net.parameters())
        if x.device != param.device:
            raise ValueError(f"input is on {x.device} but the IFQA model is on {param.device}; "
                             f"move one of them, e.g. model.to({str(x.device)!r})")
        if x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(param.dtype)
        qmap = self.net(self.preprocess(x))
        if qmap.dtype != torch.float64:  # float64 models keep float64; float32/bf16/half models give float32
            qmap = qmap.float()
        score = qmap.mean(dim=(1, 2, 3))
        # Eager only: a host sync would break a user's compiled graph, and a traced assert aborts the process.
        if self.check_finite and not torch.compiler.is_compiling() and not bool(torch.isfinite(score).all()):
            check_images(original, check_finite=True)  # NaN/Inf in the input: raises, counting them
            raise ValueError("the network output is not finite: input values far outside input_range "
                             f"{self.input_range} overflow float32; check the input_range and the image values")
        if self.upsample_map and qmap.shape[-2:] != x.shape[-2:]:
            qmap = F.interpolate(qmap, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return IFQAOutput(score, qmap)

    @torch.inference_mode()
    def score_images(self, images: Sequence["ImageLike"], batch_size: int = 8, apply_exif: bool = False) -> IFQAOutput:
        """Score a list of images of any sizes, ``batch_size`` at a time, through :meth:`forward`.

        This is the path ``ifqa score`` takes. Each image is resized on its own to the native size with the
        official resize (:func:`ifqa_loss.io.to_batch`), so the scores do not depend on the batching.
        No gradients are kept; use :meth:`forward` to train through the model.

        Args:
            images: file paths, (3, H, W) uint8 tensors (0-255) or float tensors already in ``input_range``.
            batch_size: images per forward pass.
            apply_exif: rotate files by their EXIF orientation (the official script does not).
        Returns:
            ``score`` (N,) and ``map`` (N, 1, S, S) at the native size S, on the model's device.

        Example:
            >>> import torch
            >>> from ifqa_loss import IFQA
            >>> images = [torch.randint(0, 256, (3, 300, 200), dtype=torch.uint8), torch.rand(3, 64, 64)]
            >>> out = IFQA().score_images(images)
            >>> out.score.shape, out.map.shape
            (torch.Size([2]), torch.Size([2, 1, 256, 256]))
        """
        from .io import to_batch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = next(self.net.parameters()).device
        scores, maps = [], []
        for start in range(0, len(images), batch_size):
            x = to_batch(images[start:start + batch_size], self.backbone, self.input_range, device, apply_exif)
            out = self(x)
            scores.append(out.score)
            maps.append(out.map)
        if not scores:
            raise ValueError("no images given")
        return IFQAOutput(torch.cat(scores), torch.cat(maps))

    def extra_repr(self) -> str:
        return f"backbone={self.backbone!r}, weights={self.weights_source!r}, input_range={self.input_range}"
