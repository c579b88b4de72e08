"""DSL-FIQA (CVPR 2024) behind the library's API: ``DSLFIQA`` (frozen model), ``DSLFIQALoss``, ``DSLFIQAMetric``.

DSL-FIQA regresses a mean opinion score from 384x384 crops of a face image, each with the vector of which of
the face's 68 landmarks lie inside it; the image score is the mean over crops (architecture:
:mod:`ifqa_loss.models.dsl`). Separate classes rather than ``IFQA(backbone="dsl")``: the model needs landmarks
as a second input, returns an unbounded opinion score (not a [0, 1] realism score with a per-pixel map), and
loads from a pair of files, so every IFQA signature would have to grow arguments only one backbone uses.

Crops (``crops=``), no resizing anywhere (the official pipeline has none):

- ``"official"``: the official test protocol, 20 crops. The official script seeds NumPy's legacy global
  generator with 20 once and draws, per image in list order and per crop, ``top = randint(0, H - 384)`` then
  ``left = randint(0, W - 384)`` (upper bound exclusive), so a later image's crops depend on the images before
  it. Here every image gets the 20 offsets the official script draws for the *first* image of a run
  (``np.random.RandomState(20)``), so a score does not depend on file order; the official script's scores of
  later images in a list differ only by this. Needs each side > 384.
- ``"fixed"``: 5 deterministic crops, the four corners and the centre (``(H - 384) // 2``, ``(W - 384) // 2``);
  identical offsets (a 384-px side) are scored once.
- ``"center"``: the centre crop alone (5x cheaper than ``"fixed"``, 20x cheaper than ``"official"``).
- a sequence of ``(top, left)`` offsets.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .models.dsl import CROP, DSLFIQANet
from .models.dsl.landmarks import NUM_LANDMARKS, landmark_vector
from .metric import MeanScoreMetric
from .preprocess import check_images, check_input_range, check_values_in_range
from .weights import WeightsError, load_into, read_state_dict, verify_sha256

OFFICIAL_CROPS = 20
OFFICIAL_SEED = 20
CROP_MODES = ("official", "fixed", "center")
#: weight file stems in a checkpoint folder, and the suffixes looked for, in this order
WEIGHT_FILES = ("DE", "IQA")
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors")
#: how far (a fraction of the side) landmarks may lie outside the image before the frame is called wrong:
#: faces cut by the border have points just outside; points further out are in another image's coordinates
LANDMARK_MARGIN = 0.25

DSL_WEIGHTS_HELP = (
    "The official DSL-FIQA checkpoints are linked from the README of https://github.com/DSL-FIQA/DSL-FIQA "
    "(a Google Drive folder with ckpt/GFIQA, ckpt/CGFIQA and ckpt/custom, each holding DE.pt and IQA.pt; no "
    "licence is stated for them). Download one scenario folder and pass it: DSLFIQA(weights='ckpt/CGFIQA') or "
    "`ifqa score --backbone dsl --weights ckpt/CGFIQA --landmarks landmarks68.npz ...`."
)


# ---------------------------------------------------------------- crops


def official_offsets(height: int, width: int, n: int = OFFICIAL_CROPS, seed: int = OFFICIAL_SEED
                     ) -> list[tuple[int, int]]:
    """The ``n`` (top, left) offsets the official test script draws for the first image of a run.

    Example:
        >>> official_offsets(512, 512)[:3]
        [(99, 90), (15, 95), (28, 90)]
    """
    return official_run_offsets([(height, width)], n, seed)[0]


def official_run_offsets(sizes: Sequence[tuple[int, int]], n: int = OFFICIAL_CROPS, seed: int = OFFICIAL_SEED
                         ) -> list[list[tuple[int, int]]]:
    """The offsets the official script draws for a whole run over images of ``sizes`` ((H, W) each, in list order):
    one generator for the run, so an image's crops depend on the images before it. For reproducing an
    official run exactly; :func:`official_offsets` is the first image's share, the one ``crops="official"`` uses."""
    rng = np.random.RandomState(seed)  # the legacy generator that the official np.random.seed(20) seeds
    out = []
    for height, width in sizes:
        _check_side(height, width, CROP + 1, "crops='official'")
        image = []
        for _ in range(n):
            top = int(rng.randint(0, height - CROP))
            image.append((top, int(rng.randint(0, width - CROP))))
        out.append(image)
    return out


def fixed_offsets(height: int, width: int) -> list[tuple[int, int]]:
    """Four corners then the centre: ``[(0, 0), (0, W-384), (H-384, 0), (H-384, W-384), centre]``, duplicates dropped.

    Example:
        >>> fixed_offsets(512, 512)
        [(0, 0), (0, 128), (128, 0), (128, 128), (64, 64)]
    """
    _check_side(height, width, CROP, "crops='fixed'")
    b, r = height - CROP, width - CROP
    return list(dict.fromkeys([(0, 0), (0, r), (b, 0), (b, r), (b // 2, r // 2)]))


def crop_offsets(crops: str | Sequence[Sequence[int]], height: int, width: int) -> list[tuple[int, int]]:
    """The (top, left) offsets of ``crops`` (a mode of :data:`CROP_MODES` or explicit offsets) for an H x W image."""
    if isinstance(crops, str):
        if crops == "official":
            return official_offsets(height, width)
        if crops == "fixed":
            return fixed_offsets(height, width)
        if crops == "center":
            _check_side(height, width, CROP, "crops='center'")
            return [((height - CROP) // 2, (width - CROP) // 2)]
        raise ValueError(f"crops must be one of {', '.join(CROP_MODES)} or a list of (top, left), got {crops!r}")
    _check_side(height, width, CROP, "explicit crops")
    out = []
    for o in crops:
        if len(o) != 2:
            raise ValueError(f"each crop offset must be (top, left), got {o!r}")
        top, left = int(o[0]), int(o[1])
        if not (0 <= top <= height - CROP and 0 <= left <= width - CROP):
            raise ValueError(f"crop offset (top={top}, left={left}) puts a {CROP}x{CROP} crop outside the "
                             f"{height}x{width} image (top <= {height - CROP}, left <= {width - CROP})")
        out.append((top, left))
    if not out:
        raise ValueError("crops is an empty list of offsets")
    return out


def _check_side(height: int, width: int, minimum: int, what: str) -> None:
    if height < minimum or width < minimum:
        extra = (" (the official script's randint(0, side - 384) has no value for a side of 384; use "
                 "crops='fixed' or 'center' there)") if minimum > CROP and min(height, width) == CROP else ""
        raise ValueError(f"DSL-FIQA {what} needs images of at least {minimum}x{minimum} pixels, got {height}x{width}"
                         f"{extra}. It scores {CROP}x{CROP} crops and never resizes (as the official pipeline); "
                         "upscale or pad smaller faces yourself, e.g. to 512 as the official landmark pipeline "
                         "aligns them")


# ---------------------------------------------------------------- landmarks


def check_landmarks(landmarks: Any, n: int, height: int, width: int) -> Tensor:
    """Validate 68-point landmarks for ``n`` images of ``height`` x ``width``; returns (n, 68, 2) float64 (CPU).

    Accepts a tensor or array of shape (n, 68, 2), or (68, 2) for n = 1, as (x, y) in the images' pixels.
    Raises ``ValueError`` for missing, mis-shaped or non-finite landmarks, and for landmarks that cannot be in
    the images' pixel frame: normalised to [0, 1], beyond a quarter of a side outside the image, or none of
    the 68 inside it.
    """
    if landmarks is None:
        raise ValueError("DSL-FIQA needs the 68 facial landmarks of each image (which of them fall inside a crop "
                         "is one of its inputs): pass landmarks=(N, 68, 2), (x, y) in the images' pixels. Get them "
                         "with ifqa_loss.dsl.detect_landmarks(images) (pip install \"ifqa-loss[faces]\"), or from a "
                         "landmarks68.npz such as `ifqa align` writes")
    if isinstance(landmarks, np.ndarray):
        landmarks = torch.from_numpy(landmarks)
    if not isinstance(landmarks, Tensor):
        raise TypeError("landmarks must be a tensor or NumPy array of shape (N, 68, 2), got "
                        f"{type(landmarks).__name__}")
    lm = landmarks.detach().to("cpu", torch.float64)
    if lm.ndim == 2 and n == 1:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1:] != (NUM_LANDMARKS, 2) or lm.shape[0] != n:
        hint = ""
        if lm.ndim == 3 and lm.shape[1:] == (2, NUM_LANDMARKS):
            hint = " (transpose the last two dimensions: points are rows of (x, y))"
        elif lm.ndim >= 2 and lm.shape[-2] != NUM_LANDMARKS:
            hint = f" (DSL-FIQA uses the 68-point iBUG 300-W layout; {lm.shape[-2]} points were given)"
        raise ValueError(f"landmarks must have shape ({n}, 68, 2) for {n} image(s), got {tuple(landmarks.shape)}{hint}")
    bad = ~torch.isfinite(lm).all(dim=(1, 2))
    if bool(bad.any()):
        raise ValueError(f"landmarks of image(s) {bad.nonzero().flatten().tolist()} contain NaN or Inf")
    for i in range(n):
        x, y = lm[i, :, 0], lm[i, :, 1]
        if float(lm[i].abs().max()) <= 1.0 + 1e-6 and min(height, width) > 2:
            raise ValueError(f"landmarks of image {i} all lie within [-1, 1]: they look normalised; DSL-FIQA needs "
                             f"pixel coordinates of the {height}x{width} input (multiply x by {width}, y by {height})")
        mx, my = LANDMARK_MARGIN * width, LANDMARK_MARGIN * height
        out = (x < -mx) | (x > width + mx) | (y < -my) | (y > height + my)
        inside = (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
        if bool(out.any()) or not bool(inside.any()):
            k = int(out.nonzero()[0]) if bool(out.any()) else 0
            raise ValueError(f"landmarks of image {i} are not in its pixel frame: point {k} is at "
                             f"({float(x[k]):.1f}, {float(y[k]):.1f}) on a {width}x{height} (W x H) image, and "
                             f"{int(inside.sum())} of 68 lie inside it. Give (x, y) in the pixels of the image "
                             "passed (after any resize or crop of yours), x first")
    return lm


def landmark_vectors(landmarks: Tensor, offsets: Sequence[tuple[int, int]]) -> Tensor:
    """(N, 68, 2) landmarks -> (N, K, 500) official landmark vectors, one per crop offset (float32)."""
    return torch.stack([landmark_vector(landmarks, top, left, CROP) for top, left in offsets], dim=1)


def detect_landmarks(images: Sequence[Any] | Tensor, input_range: Sequence[float] = (0, 1)) -> Tensor:
    """The 68 landmarks of the largest face of each image, (N, 68, 2) float32 in its pixels (``faces`` extra).

    Args:
        images: (N, 3, H, W) float tensor in ``input_range``, or a list of paths / (3, H, W) uint8 tensors.
    Raises:
        FacesUnavailableError: without ``pip install "ifqa-loss[faces]"``.
        ValueError: when an image has no face.
    """
    from .faces import detect_faces

    if isinstance(images, Tensor):
        lo, hi = check_input_range(input_range)
        images = [((im.detach().float().cpu() - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8)
                  for im in images]
    out = []
    for i, im in enumerate(images):
        faces = detect_faces(im, largest_only=True)
        if not faces:
            raise ValueError(f"image {i}: no face found, so no landmarks for DSL-FIQA")
        out.append(faces[0].landmarks.float())
    return torch.stack(out)


# ---------------------------------------------------------------- weights


def weight_files(weights: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[Path, Path]:
    """``(DE file, IQA file)`` from a checkpoint folder (``DE.pt`` + ``IQA.pt``, or ``.pth``/``.safetensors``) or
    an explicit pair of paths."""
    if weights is None:
        raise WeightsError(f"DSL-FIQA needs weights. {DSL_WEIGHTS_HELP}")
    if isinstance(weights, (str, os.PathLike)):
        folder = Path(weights)
        if not folder.is_dir():
            why = "is a file" if folder.is_file() else "does not exist"
            raise WeightsError(f"DSL-FIQA weights {os.fspath(folder)!r} {why}: give the folder holding DE.pt and "
                               f"IQA.pt (or the pair of paths). {DSL_WEIGHTS_HELP}")
        found = []
        for stem in WEIGHT_FILES:
            hits = [folder / f"{stem}{s}" for s in WEIGHT_SUFFIXES if (folder / f"{stem}{s}").is_file()]
            if not hits:
                present = ", ".join(sorted(p.name for p in folder.iterdir())[:10]) or "nothing"
                raise WeightsError(f"{os.fspath(folder)} has no {stem}.pt (nor {stem}.pth / {stem}.safetensors); it "
                                   f"holds: {present}. {DSL_WEIGHTS_HELP}")
            found.append(hits[0])
        return found[0], found[1]
    pair = list(weights)
    if len(pair) != 2:
        raise WeightsError(f"DSL-FIQA weights must be a folder or a (DE file, IQA file) pair, got {len(pair)} items")
    de, iqa = (Path(p) for p in pair)
    for p in (de, iqa):
        if not p.is_file():
            raise WeightsError(f"DSL-FIQA weights file {os.fspath(p)} does not exist. {DSL_WEIGHTS_HELP}")
    return de, iqa


def _hint(part: str, state: Mapping[str, Tensor]) -> str:
    keys = list(state)
    if part == "IQA" and keys and all(k.startswith(("E.", "mlp.")) for k in keys):
        return " It holds the degradation encoder (DE.pt keys E.*, mlp.*): are DE.pt and IQA.pt swapped?"
    if part == "DE" and any(k.startswith("vit.") for k in keys):
        return " It holds the IQA network (IQA.pt keys vit.*, tablock*...): are DE.pt and IQA.pt swapped?"
    if any(k.startswith(("encoder128.", "patch_embed.", "blocks.")) for k in keys):
        return " It looks like an IFQA checkpoint: use ifqa_loss.IFQA for it."
    return ""


def load_part(module: nn.Module, path: Path, part: str, sha256: str | None = None) -> dict[str, str]:
    """Strictly load ``path`` into ``module`` (on the meta device: assigned); itemised errors; returns metadata."""
    if sha256:
        verify_sha256(path, sha256)
    state, metadata = read_state_dict(path)
    try:
        load_into(module, state, os.fspath(path), f"dsl ({part}.pt)")
    except WeightsError as e:
        raise WeightsError(f"{e}{_hint(part, state)}") from None
    return metadata


def load_dsl(weights: str | os.PathLike | Sequence[str | os.PathLike],
             sha256: Mapping[str, str] | None = None) -> DSLFIQANet:
    """Build :class:`~ifqa_loss.models.dsl.DSLFIQANet` from the official pair of files, strictly, frozen, eval, CPU.

    Args:
        weights: a folder with ``DE.pt`` and ``IQA.pt`` (the official ``ckpt/<scenario>/``; ``.safetensors``
            files of the same stems work too), or a ``(DE file, IQA file)`` pair. Bare state dicts, wrapped ones
            (``{'state_dict': ...}``) and a DataParallel ``module.`` prefix are read; no pickled code is run.
        sha256: expected checksums ``{"DE": ..., "IQA": ...}`` (either may be left out).
    """
    de_path, iqa_path = weight_files(weights)
    sha256 = dict(sha256 or {})
    with torch.device("meta"):
        net = DSLFIQANet()
    load_part(net.de, de_path, "DE", sha256.get("DE"))
    load_part(net.iqa, iqa_path, "IQA", sha256.get("IQA"))
    return net.eval().requires_grad_(False)


def save_safetensors(net: DSLFIQANet, folder: str | os.PathLike) -> dict[str, str]:
    """Write ``folder/DE.safetensors`` and ``folder/IQA.safetensors`` (the official keys); returns their sha256."""
    from .weights import save_weights

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {part: save_weights(getattr(net, part.lower()), folder / f"{part}.safetensors", backbone=f"dsl-{part}")
            for part in WEIGHT_FILES}


# ---------------------------------------------------------------- the frozen model


class DSLFIQAOutput(NamedTuple):
    """``score`` (N,) = mean of ``crop_scores`` (N, K) over the K crops at ``offsets`` ((top, left) each)."""

    score: Tensor
    crop_scores: Tensor
    offsets: list[tuple[int, int]]


class DSLFIQA(nn.Module):
    """DSL-FIQA: (N, 3, H, W) images + (N, 68, 2) landmarks -> opinion score per image (higher = better).

    Frozen like :class:`~ifqa_loss.IFQA`: no parameter requires grad, eval mode holds under a parent's
    ``.train()``, and gradients flow to the images. The landmarks carry no gradient: only which of them fall
    inside each crop enters the model, as in the official pipeline.

    Args:
        weights: the official checkpoint folder (``DE.pt`` + ``IQA.pt``) or a pair of files; see :func:`load_dsl`.
        crops: ``"official"`` (default: 20 crops, the official test protocol), ``"fixed"`` (4 corners + centre),
            ``"center"``, or explicit ``(top, left)`` offsets; see the module docstring.
        input_range: the images' value range, e.g. ``(0, 1)`` or ``(-1, 1)``.
        crop_batch_size: crops per forward pass of the network (memory vs speed).
        check_finite: reject NaN/Inf images (one host sync).
        sha256: expected checksums of the files, ``{"DE": ..., "IQA": ...}``.

    The score is not bounded: real checkpoints predict min-max normalised opinion scores, about [0, 1].
    """

    def __init__(self, weights: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                 crops: str | Sequence[Sequence[int]] = "official", input_range: Sequence[float] = (0, 1),
                 crop_batch_size: int = 8, check_finite: bool = True, sha256: Mapping[str, str] | None = None) -> None:
        super().__init__()
        if crop_batch_size < 1:
            raise ValueError(f"crop_batch_size must be >= 1, got {crop_batch_size}")
        if isinstance(crops, str) and crops not in CROP_MODES:
            raise ValueError(f"crops must be one of {', '.join(CROP_MODES)} or a list of (top, left), got {crops!r}")
        self.input_range = check_input_range(input_range)
        self.net = load_dsl(weights, sha256)
        self.crops = crops
        self.crop_batch_size = int(crop_batch_size)
        self.check_finite = bool(check_finite)
        self.weights_source = os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else str(weights)
        super().train(False)

    def train(self, mode: bool = True) -> "DSLFIQA":
        """No-op: the quality model always stays in eval mode."""
        return super().train(False)

    def normalise(self, x: Tensor) -> Tensor:
        """Images in ``input_range`` -> the network's [-1, 1] (the official ``(x - 0.5) / 0.5`` on [0, 1])."""
        lo, hi = self.input_range
        if (lo, hi) != (0.0, 1.0):
            x = (x - lo) / (hi - lo)
        return (x - 0.5) / 0.5

    def forward(self, x: Tensor, landmarks: Tensor | np.ndarray | None,
                crops: str | Sequence[Sequence[int]] | None = None) -> DSLFIQAOutput:
        """Score a batch of same-size images; ``crops`` overrides the instance's crop mode for this call."""
        check_images(x, check_finite=self.check_finite)
        n, _, h, w = x.shape
        offsets = crop_offsets(self.crops if crops is None else crops, h, w)
        lm = check_landmarks(landmarks, n, h, w)
        param = next(self.net.parameters())
        if x.device != param.device:
            raise ValueError(f"input is on {x.device} but the DSL-FIQA model is on {param.device}; "
                             f"move one of them, e.g. model.to({str(x.device)!r})")
        if x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(param.dtype)
        unique = list(dict.fromkeys(offsets))  # a repeated offset (e.g. a 385-px side) is computed once
        vectors = landmark_vectors(lm, unique).to(x.device)  # (N, U, 500)
        z = self.normalise(x)
        crops_t = torch.stack([z[:, :, t:t + CROP, s:s + CROP] for t, s in unique], dim=1).flatten(0, 1)
        vec = vectors.flatten(0, 1)
        b = self.crop_batch_size
        scores = torch.cat([self.net(crops_t[i:i + b], vec[i:i + b]) for i in range(0, crops_t.shape[0], b)])
        if scores.dtype != torch.float64:
            scores = scores.float()
        per_unique = scores.view(n, len(unique))
        crop_scores = per_unique[:, [unique.index(o) for o in offsets]]
        return DSLFIQAOutput(crop_scores.sum(dim=1) / len(offsets), crop_scores, offsets)

    @torch.inference_mode()
    def score_images(self, images: Sequence[Any], landmarks: Sequence[Any]) -> Tensor:
        """Score images of any sizes (paths, (3, H, W) uint8 tensors or float tensors in ``input_range``) one by
        one, each with its (68, 2) landmarks; (N,) scores. The path ``ifqa score --backbone dsl`` takes."""
        from .io import load_image

        if len(images) != len(landmarks):
            raise ValueError(f"{len(images)} images but {len(landmarks)} landmark sets")
        device = next(self.net.parameters()).device
        out = []
        for img, lm in zip(images, landmarks):
            if isinstance(img, (str, os.PathLike)):
                img = load_image(img)
            if not img.is_floating_point():
                lo, hi = self.input_range
                img = img.float() / 255 * (hi - lo) + lo if (lo, hi) != (0.0, 1.0) else img.float() / 255
            out.append(self(img[None].to(device), torch.as_tensor(lm)[None]).score)
        if not out:
            raise ValueError("no images given")
        return torch.cat(out)

    def extra_repr(self) -> str:
        return f"weights={self.weights_source!r}, crops={self.crops!r}, input_range={self.input_range}"


# ---------------------------------------------------------------- loss


_REDUCTIONS = ("mean", "sum", "none")


class DSLFIQALoss(nn.Module):
    """DSL-FIQA opinion-score loss: ``1 - score`` per image (real checkpoints score about [0, 1], higher = better).

    The network is frozen and kept out of the module tree (no parameters or ``state_dict`` entries in a model
    holding the loss; ``.to()`` still moves it). Gradients reach the images only; the landmarks are inputs.

    Args:
        weights, input_range, crop_batch_size, check_finite: as for :class:`DSLFIQA`.
        crops: default ``"fixed"`` (4 corners + centre: every pixel is in a crop); ``"center"`` is 5x cheaper;
            ``"official"`` gives the official scores at 20 crops' cost.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, weights: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                 crops: str | Sequence[Sequence[int]] = "fixed", input_range: Sequence[float] = (0, 1),
                 reduction: str = "mean", crop_batch_size: int = 8, check_finite: bool = True) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        object.__setattr__(self, "_dsl", DSLFIQA(weights, crops, input_range, crop_batch_size, check_finite))

    @property
    def dsl(self) -> DSLFIQA:
        """The frozen :class:`DSLFIQA` model."""
        return self._dsl

    def _apply(self, fn, *args, **kwargs):  # move/cast the hidden model with the loss
        super()._apply(fn, *args, **kwargs)
        self._dsl._apply(fn)
        return self

    def train(self, mode: bool = True) -> "DSLFIQALoss":
        return super().train(False)

    def forward(self, restored: Tensor, landmarks: Tensor | np.ndarray) -> Tensor:
        """Loss for ``restored`` (N, 3, H, W) in ``input_range`` with its (N, 68, 2) landmarks."""
        loss = 1.0 - self._dsl(restored, landmarks).score
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, crops={self._dsl.crops!r}"


# ---------------------------------------------------------------- metric


class DSLFIQAMetric(MeanScoreMetric):
    """Mean DSL-FIQA score of all images seen, as a ``torchmetrics`` metric (higher is better).

    ``update(preds, target=None, *, landmarks)``: the images, an ignored target (so it sits in a
    ``MetricCollection`` next to full-reference metrics: ``collection.update(restored, hq, landmarks=lm)``; the
    collection hands ``landmarks`` only to the metrics that take it) and their (N, 68, 2) landmarks.
    States, dtypes and distributed behaviour are those of :class:`~ifqa_loss.IFQAMetric` (both are
    :class:`~ifqa_loss.metric.MeanScoreMetric`): a float64 ``score_sum`` and a ``count`` summed across
    processes; the network is not in the metric's ``state_dict``, follows device moves and keeps its dtype
    against a parent's ``.half()``.

    Args:
        weights, crops, input_range, crop_batch_size: as for :class:`DSLFIQA` (default crops ``"official"``).
        keep_scores: also keep every image's score (read with :meth:`scores`).
        kwargs: passed to :class:`torchmetrics.Metric`.
    """

    def __init__(self, weights: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                 crops: str | Sequence[Sequence[int]] = "official", input_range: Sequence[float] = (0, 1),
                 crop_batch_size: int = 8, keep_scores: bool = False, **kwargs: Any) -> None:
        super().__init__(DSLFIQA(weights, crops, input_range, crop_batch_size), keep_scores=keep_scores, **kwargs)
        self.input_range = self._network.input_range

    @property
    def model(self) -> DSLFIQA:
        """The frozen :class:`DSLFIQA` model used for scoring."""
        return self._network

    def update(self, preds: Tensor, target: Tensor | None = None, *, landmarks: Tensor | np.ndarray) -> None:
        """Add ``preds`` (N, 3, H, W) in ``input_range`` with ``landmarks`` (N, 68, 2); ``target`` is ignored."""
        check_images(preds, name="preds")
        check_values_in_range(preds, self.input_range, name="preds")
        self._add(self._network(preds, landmarks).score)


__all__ = ["CROP", "CROP_MODES", "DSLFIQA", "DSLFIQALoss", "DSLFIQAMetric", "DSLFIQAOutput", "check_landmarks",
           "crop_offsets", "detect_landmarks", "fixed_offsets", "landmark_vectors", "load_dsl", "official_offsets",
           "official_run_offsets", "save_safetensors", "weight_files"]
