"""Image files into the library: decoding, folder walking and batching images of any size into model input.

Every route by which images enter the library goes through here: :meth:`ifqa_loss.IFQA.score_images`,
``ifqa score``, ``ifqa train``'s data, the benchmarks and the examples.

Decoding follows the official IFQA script: 8-bit RGB, grayscale replicated, alpha dropped without compositing,
EXIF orientation ignored unless asked for. Resizing follows it too: one resize policy, the official
non-antialiased one of :func:`ifqa_loss.preprocess.resize_to_native`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import torch

from .preprocess import MIN_SIDE, resize_to, resize_to_native

#: File suffixes (lower case) that folder walking treats as images.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

#: What :func:`to_batch` and :meth:`ifqa_loss.IFQA.score_images` accept as one image.
ImageLike = Union[str, os.PathLike, torch.Tensor]


class ImageDecodeError(ValueError):
    """A file that could not be decoded as an image; the message names the file and the reason."""


def load_image(path: str | os.PathLike, apply_exif: bool = False) -> torch.Tensor:
    """Decode an image file as the official script does: (3, H, W) uint8 RGB.

    Grayscale is replicated, alpha is dropped without compositing, 16-bit values are scaled to 8 bits.
    EXIF orientation is ignored by default, like the official script (so scores match it); pass
    ``apply_exif=True`` to rotate camera photos upright first. Images over PIL's pixel limit (about 89 Mpx)
    are refused before their pixels are allocated.

    Raises:
        ImageDecodeError: naming the file and the reason (missing, a folder, unreadable, not an image,
            corrupt or truncated, too many pixels).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = os.fspath(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            img.load()
            if apply_exif:
                img = ImageOps.exif_transpose(img)
            arr = _to_rgb8(img)
    except FileNotFoundError:
        raise ImageDecodeError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"{name}: is a directory") from None
    except PermissionError:
        raise ImageDecodeError(f"{name}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name}: not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"{name}: refused, too many pixels ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageDecodeError(f"{name}: corrupt or truncated image ({e})") from None
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageDecodeError(f"{name}: empty image")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _to_rgb8(img) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(np.round(a * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode == "F":
        a = np.clip(np.round(np.asarray(img, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L/LA/P/RGBA/CMYK...: alpha dropped, not composited, as the official script
    return np.asarray(img, dtype=np.uint8)


def to_float(img: torch.Tensor) -> torch.Tensor:
    """8-bit images to float32 in [0, 1] with a batch dimension.

    Args:
        img: (3, H, W) or (N, 3, H, W) uint8.
    Returns:
        (1, 3, H, W) or (N, 3, H, W) float32, on ``img``'s device.

    Example:
        >>> import torch
        >>> from ifqa_loss.io import to_float
        >>> to_float(torch.full((3, 4, 4), 255, dtype=torch.uint8)).shape
        torch.Size([1, 3, 4, 4])
    """
    if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8 or img.ndim not in (3, 4):
        what = f"dtype {img.dtype}, shape {tuple(img.shape)}" if isinstance(img, torch.Tensor) else type(img).__name__
        raise TypeError(f"to_float expects a (3, H, W) or (N, 3, H, W) uint8 tensor, got {what}")
    x = img.float().div_(255.0)
    return x.unsqueeze(0) if x.ndim == 3 else x


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] to uint8, rounded as an 8-bit file stores them (same shape)."""
    return x.detach().clamp(0, 1).mul(255.0).round_().to(torch.uint8)


def find_images(paths: Iterable[str | os.PathLike], recursive: bool = False) -> tuple[list[str], list[tuple[str, str]]]:
    """Expand files and folders into image files, in a stable order.

    Files are kept as given, whatever their suffix. A folder contributes its files with an
    :data:`IMAGE_SUFFIXES` suffix, sorted by path (with ``recursive``, sub-folders too, without following
    links to folders).

    Returns:
        ``(files, problems)``: the files, and ``(path, reason)`` for each path that does not exist.
    """
    files, problems = [], []
    for p in paths:
        p = os.fspath(p)
        path = Path(p)
        if path.is_dir():
            found = []
            walker = os.walk(path, followlinks=False) if recursive else [(str(path), [], os.listdir(path))]
            for root, dirs, names in walker:
                dirs.sort()
                for n in names:
                    f = Path(root) / n
                    # a link to a folder is skipped (as os.walk does); dangling or looping links are kept as files,
                    # so that decoding reports them
                    if f.suffix.lower() in IMAGE_SUFFIXES and (f.is_file() or (f.is_symlink() and not f.is_dir())):
                        found.append(str(f))
            files.extend(sorted(found))
        elif path.exists() or path.is_symlink():
            files.append(p)
        else:
            problems.append((p, "no such file or directory"))
    return files, problems


def list_images(folder: str | os.PathLike, names: Iterable[str] | None = None, limit: int | None = None) -> list[Path]:
    """Image files directly in ``folder``, sorted by name.

    Args:
        names: keep only files with these names (e.g. a validation list).
        limit: keep at most the first ``limit`` files.
    Raises:
        FileNotFoundError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    keep = None if names is None else set(names)
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and (keep is None or p.name in keep))
    return files[:limit] if limit is not None else files


def load_folder(folder: str | os.PathLike, size: int | None = None, names: Iterable[str] | None = None,
                limit: int | None = None, skip_bad: bool = False) -> tuple[list[str], torch.Tensor]:
    """Decode the images of a folder (see :func:`list_images`) into one uint8 batch.

    Args:
        size: resize every image to ``size`` x ``size`` with the library's resize policy
            (:func:`ifqa_loss.preprocess.resize_to`), rounded to 8 bits as a file of that size would hold.
            ``None`` keeps the sizes, which must then all be equal.
        skip_bad: leave out files that cannot be decoded instead of raising :class:`ImageDecodeError`.
    Returns:
        ``(names, images)``: file names and (N, 3, S, S) uint8.
    """
    kept, images = [], []
    for path in list_images(folder, names, limit):
        try:
            img = load_image(path)
        except ImageDecodeError:
            if skip_bad:
                continue
            raise
        if size is not None and tuple(img.shape[-2:]) != (size, size):
            img = to_uint8(resize_to(to_float(img), size))[0]
        kept.append(path.name)
        images.append(img)
    if not images:
        raise ValueError(f"no decodable images found in {folder}")
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) > 1:
        raise ValueError(f"images in {folder} have different sizes {sorted(shapes)[:3]}...; pass size=")
    return kept, torch.stack(images)


def check_size(img: torch.Tensor, name: str = "image") -> None:
    """Raise ``ValueError`` if ``img`` (..., H, W) is smaller than the 16 x 16 pixels the models accept."""
    h, w = img.shape[-2:]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"{name} is {h}x{w}; images must be at least {MIN_SIDE}x{MIN_SIDE} pixels")


def to_batch(images: Sequence[ImageLike], backbone: str, input_range: tuple[float, float] = (0.0, 1.0),
             device: torch.device | str | None = None, apply_exif: bool = False) -> torch.Tensor:
    """Images of any sizes to one (N, 3, S, S) batch at the native size S of ``backbone``.

    Each image is resized on its own with :func:`ifqa_loss.preprocess.resize_to_native` (the official
    resize), so the batch scores as the images would one by one.

    Args:
        images: file paths (decoded with :func:`load_image`), (3, H, W) / (1, 3, H, W) uint8 tensors (mapped to
            ``input_range``), or float tensors of those shapes already in ``input_range``.
        backbone: "cnn", "lite" (S = 256) or "vit" (S = 224).
        device: where the batch goes; default: where each tensor is (CPU for files).
    Returns:
        (N, 3, S, S) float32.
    """
    if len(images) == 0:
        raise ValueError("no images given")
    lo, hi = input_range
    out = []
    for i, img in enumerate(images):
        if isinstance(img, (str, os.PathLike)):
            img = load_image(img, apply_exif=apply_exif)
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"image {i} is a {type(img).__name__}; expected a path or a (3, H, W) tensor")
        if img.ndim == 4 and img.shape[0] == 1:
            img = img[0]
        if img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"image {i} has shape {tuple(img.shape)}; expected (3, H, W) or (1, 3, H, W)")
        check_size(img, f"image {i}")
        if device is not None:
            img = img.to(device)
        if img.dtype == torch.uint8:
            x = to_float(img)
            if (lo, hi) != (0.0, 1.0):
                x = x * (hi - lo) + lo
        elif img.is_floating_point():
            x = img[None].float()
        else:
            raise TypeError(f"image {i} has dtype {img.dtype}; expected uint8 or floating point")
        out.append(resize_to_native(x, backbone))
    return torch.cat(out)
