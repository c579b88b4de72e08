"""Faces in whole photos: detect them, align each one, score it, and paint the maps back onto the photo.

IFQA only means something on an aligned face (the models were trained on FFHQ-style crops). This module takes
the photos people have (group shots, holiday photos, a restorer's whole-image output) and turns each face into
the crop the metric expects:

- :func:`detect_faces`: boxes, confidences and 68 landmarks (iBUG 300-W order, as ``landmarks68.npz``), with
  dlib's HOG detector (default) or its MMOD CNN, and dlib's 68-point shape predictor;
- :func:`align_face`: the crop and its :class:`AlignTransform`, with the FFHQ dataset's recipe (``"ffhq"``, from
  68 landmarks) or the 5-point template of GFPGAN / CodeFormer / pyiqa (``"facexlib"``);
- :func:`paste_back`: a crop, a quality map or any aligned tensor back into the photo with a feathered mask;
- :func:`score_faces` / :func:`score_photos`: detection, alignment and :meth:`ifqa_loss.IFQA.score_images` for
  one photo or many (batched across photos), the path ``ifqa score --detect`` takes.

Detection needs the optional extra ``pip install "ifqa-loss[faces]"`` (``dlib-bin`` and
``face-recognition-models``, whose model files ship inside the wheel: nothing is downloaded at run time).
Alignment, pasting back and everything else work on given landmarks without it.

Coordinates are (x, y) pixels with pixel centres at integers (landmarks, transforms); boxes are
(x0, y0, x1, y1) with ``x1 - x0`` the width. Photos given as files are rotated upright by their EXIF
orientation by default (``apply_exif=True``), unlike :func:`ifqa_loss.io.load_image`: the detector only finds
upright faces, and the aligned crop is a new image, so scores no longer follow the official script's decoding.
"""
from __future__ import annotations

import functools
import importlib.util
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .core import IFQA

#: The command that installs what detection needs.
INSTALL_HINT = 'pip install "ifqa-loss[faces]"'

#: The recipes :func:`align_face` knows.
RECIPES = ("ffhq", "facexlib")

#: facexlib's 5-point template for 512 x 512 crops (left eye, right eye, nose tip, left and right mouth corners,
#: as seen in the image), the one GFPGAN, CodeFormer and pyiqa align to.
FACEXLIB_TEMPLATE_512 = ((192.98138, 239.94708), (318.90277, 240.1936), (256.63416, 314.01935),
                         (201.26117, 371.41043), (313.08905, 371.15118))

#: facexlib fills what lies outside the photo with this colour (8-bit RGB).
FACEXLIB_FILL = (135, 133, 132)

#: The smallest face box side (pixels) :func:`detect_faces` keeps by default: smaller faces have too few pixels
#: for landmarks or a score to mean anything.
DEFAULT_MIN_SIZE = 32

#: The HOG detector's score under which a detection is dropped by default. dlib's own default is 0; on the
#: project's test photos true faces scored 0.5-3 (faces cut by the border down to ~0.2) and the spurious boxes
#: HOG found on scikit-image's photos at most 0.12.
DEFAULT_THRESHOLD = 0.3

#: Photos whose long side exceeds this are downscaled to it for detection only (landmarks use every pixel).
DEFAULT_DETECT_MAX_SIDE = 2048

#: What :func:`load_photo` and the functions taking a photo accept.
PhotoLike = Union[str, os.PathLike, torch.Tensor, "PIL.Image.Image", np.ndarray]  # noqa: F821


class FacesUnavailableError(ImportError):
    """Face detection was called without the optional ``faces`` extra installed."""


# ---------------------------------------------------------------- the detector models


def _missing(what: str) -> FacesUnavailableError:
    return FacesUnavailableError(f"face detection needs {what}, from the optional extra: {INSTALL_HINT}")


def _dlib():
    try:
        import dlib
    except ImportError:
        raise _missing("dlib") from None
    return dlib


def _model_file(name: str) -> str:
    # find_spec locates the package without importing it: its __init__ needs pkg_resources, which new
    # setuptools no longer has
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _missing("face-recognition-models")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise _missing(f"{name} (face-recognition-models is installed but lacks it; reinstall it)")
    return str(path)


@functools.lru_cache(maxsize=None)
def _hog():
    return _dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def _mmod():
    return _dlib().cnn_face_detection_model_v1(_model_file("mmod_human_face_detector.dat"))


@functools.lru_cache(maxsize=None)
def _predictor68():
    return _dlib().shape_predictor(_model_file("shape_predictor_68_face_landmarks.dat"))


def faces_available() -> bool:
    """Whether :func:`detect_faces` can run (the ``faces`` extra is installed)."""
    try:
        _dlib()
        _model_file("shape_predictor_68_face_landmarks.dat")
    except FacesUnavailableError:
        return False
    return True


# ---------------------------------------------------------------- photos in


def load_photo(photo: PhotoLike, apply_exif: bool = True) -> torch.Tensor:
    """A photo as (3, H, W): files and PIL images decoded to uint8 RGB, tensors checked and kept.

    Args:
        photo: a path (decoded by :func:`ifqa_loss.io.load_image`), a PIL image, an (H, W, 3) / (H, W) uint8
            numpy array, or a (3, H, W) / (1, 3, H, W) / (1, H, W) tensor (uint8, or float in [0, 1]).
        apply_exif: rotate files and PIL images upright by their EXIF orientation first (the default here).
    Returns:
        (3, H, W) uint8, or float32 for float tensors.
    Raises:
        ifqa_loss.io.ImageDecodeError: a file that cannot be decoded.
    """
    from . import io as image_io

    if isinstance(photo, (str, os.PathLike)):
        return image_io.load_image(photo, apply_exif=apply_exif)
    if isinstance(photo, np.ndarray):
        photo = torch.from_numpy(np.ascontiguousarray(photo))
        photo = photo[None] if photo.ndim == 2 else photo.permute(2, 0, 1)
    if not isinstance(photo, torch.Tensor):
        try:
            from PIL import Image, ImageOps
        except ImportError:  # pragma: no cover - pillow is a dependency
            Image = None
        if Image is None or not isinstance(photo, Image.Image):
            raise TypeError(f"a photo must be a path, a PIL image, an array or a tensor, got {type(photo).__name__}")
        img = ImageOps.exif_transpose(photo) if apply_exif else photo
        return torch.from_numpy(np.ascontiguousarray(image_io._to_rgb8(img).transpose(2, 0, 1)))
    if photo.ndim == 4 and photo.shape[0] == 1:
        photo = photo[0]
    if photo.ndim == 3 and photo.shape[0] == 1:
        photo = photo.expand(3, -1, -1)
    if photo.ndim == 3 and photo.shape[0] == 4:
        photo = photo[:3]  # alpha dropped, as files are decoded
    if photo.ndim != 3 or photo.shape[0] != 3:
        raise ValueError(f"a photo tensor must be (3, H, W), (1, 3, H, W) or (1, H, W), got {tuple(photo.shape)}")
    if photo.dtype != torch.uint8 and not photo.is_floating_point():
        raise TypeError(f"a photo tensor must be uint8 or float in [0, 1], got {photo.dtype}")
    if photo.shape[1] < 1 or photo.shape[2] < 1:
        raise ValueError("empty photo")
    return photo


def _as_uint8_hwc(photo: torch.Tensor) -> np.ndarray:
    if photo.is_floating_point():
        photo = photo.detach().clamp(0, 1).mul(255).round().to(torch.uint8)
    return np.ascontiguousarray(photo.cpu().permute(1, 2, 0).numpy())


# ---------------------------------------------------------------- detection


@dataclass(frozen=True)
class Face:
    """One detected face, in the photo's pixel coordinates.

    Attributes:
        box: (4,) float32 (x0, y0, x1, y1) from the detector; may reach beyond the photo for a face cut by its
            border.
        confidence: the detector's score (HOG: SVM margin, about 0-3; MMOD: about 1); higher is surer. The two
            detectors' values are not comparable.
        landmarks: (68, 2) float32 (x, y), iBUG 300-W order (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
            mouth 48-67); points of a face cut by the border may lie outside the photo.
    """

    box: torch.Tensor
    confidence: float
    landmarks: torch.Tensor

    @property
    def points5(self) -> torch.Tensor:
        """(5, 2): eye centres, nose tip and mouth corners (see :func:`five_points`)."""
        return five_points(self.landmarks)

    @property
    def size(self) -> float:
        """The box's side (the mean of its width and height), in pixels."""
        return float((self.box[2] - self.box[0] + self.box[3] - self.box[1]) / 2)

    def to_dict(self, landmarks: bool = False) -> dict:
        """JSON-ready: ``box`` (4 floats), ``confidence`` and, with ``landmarks``, 68 ``[x, y]`` pairs."""
        d = {"box": [round(float(v), 2) for v in self.box], "confidence": round(float(self.confidence), 4)}
        if landmarks:
            d["landmarks"] = [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]
        return d


def five_points(landmarks: torch.Tensor) -> torch.Tensor:
    """The 5 points facexlib-style aligners use, from 68 landmarks.

    Args:
        landmarks: (..., 68, 2) iBUG order.
    Returns:
        (..., 5, 2): the centre of the eye on the image's left (points 36-41), of the one on its right (42-47),
        the nose tip (30), the left (48) and right (54) mouth corners.
    """
    lm = landmarks.float()
    return torch.stack([lm[..., 36:42, :].mean(-2), lm[..., 42:48, :].mean(-2), lm[..., 30, :],
                        lm[..., 48, :], lm[..., 54, :]], dim=-2)


def detect_faces(image: PhotoLike, min_size: int = DEFAULT_MIN_SIZE, largest_only: bool = False,
                 max_faces: int | None = None, upsample: int = 1, detector: str = "hog",
                 max_side: int | None = DEFAULT_DETECT_MAX_SIDE, threshold: float = DEFAULT_THRESHOLD,
                 apply_exif: bool = True) -> list[Face]:
    """Find the faces of a photo and their 68 landmarks.

    Args:
        image: a photo (see :func:`load_photo`).
        min_size: drop faces whose box side is under this many pixels (of the photo).
        largest_only: keep only the largest face (by box area).
        max_faces: keep at most this many faces, the largest ones.
        upsample: how many times the detector doubles the image first. HOG finds faces down to about
            80 px at 0, 40 px at 1 (the default), 20 px at 2; each step costs about 4x the time.
        detector: ``"hog"`` (dlib's frontal HOG detector: fast, upright frontal faces) or ``"mmod"`` (dlib's CNN:
            more poses, ~50x slower on a CPU).
        max_side: downscale the photo to this long side for detection only (huge photos); None never does.
            Landmarks are always found at full resolution.
        threshold: drop detections scoring under this (:data:`DEFAULT_THRESHOLD`; dlib's default is 0: lower it
            to keep faces cut by the border, raise it to drop doubtful ones). MMOD scores sit near 1.
        apply_exif: rotate files and PIL images upright by EXIF first.
    Returns:
        The faces, ordered left to right by box centre (ties: top to bottom). With ``max_faces`` the largest
        ones are kept, then put in that order.
    Raises:
        FacesUnavailableError: the ``faces`` extra is not installed (the message gives the ``pip`` command).
    """
    return _detect(load_photo(image, apply_exif), min_size, largest_only, max_faces, upsample, detector,
                   max_side, threshold)[0]


def _detect(photo: torch.Tensor, min_size: int, largest_only: bool, max_faces: int | None, upsample: int,
            detector: str, max_side: int | None, threshold: float) -> tuple[list[Face], int]:
    """:func:`detect_faces` on a loaded photo; also returns how many faces were dropped for ``min_size``."""
    dlib = _dlib()
    if detector not in ("hog", "mmod"):
        raise ValueError(f"detector must be 'hog' or 'mmod', got {detector!r}")
    if upsample < 0 or (max_faces is not None and max_faces < 1) or min_size < 0:
        raise ValueError("upsample and min_size must be >= 0, max_faces >= 1")
    predictor = _predictor68()
    full = _as_uint8_hwc(photo)
    h, w = full.shape[:2]
    scale = 1.0
    small = full
    if max_side is not None and max(h, w) > max_side:
        scale = max_side / max(h, w)
        x = torch.from_numpy(full).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear",
                          antialias=True, align_corners=False)
        small = np.ascontiguousarray(x[0].clamp(0, 255).round().byte().permute(1, 2, 0).numpy())
    if detector == "hog":
        rects, scores, _ = _hog().run(small, upsample, threshold)
        found = list(zip(rects, scores))
    else:
        found = [(d.rect, d.confidence) for d in _mmod()(small, upsample) if d.confidence >= threshold]
    faces, n_small = [], 0
    for rect, score in found:
        box = torch.tensor([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=torch.float64)
        box = (box / scale).float()
        side = float((box[2] - box[0] + box[3] - box[1]) / 2)
        if side < min_size:
            n_small += 1
            continue
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        shape = predictor(full, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        lm = torch.tensor([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=torch.float32)
        faces.append(Face(box, float(score), lm))
    if largest_only or max_faces is not None:
        keep = 1 if largest_only else max_faces
        faces = sorted(faces, key=lambda f: -float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))[:keep]
    faces.sort(key=lambda f: (float(f.box[0] + f.box[2]), float(f.box[1] + f.box[3])))
    return faces, n_small


# ---------------------------------------------------------------- alignment


@dataclass(frozen=True)
class AlignTransform:
    """The similarity that maps photo pixels to an aligned crop's pixels.

    Attributes:
        matrix: (2, 3) float64; ``crop_xy = matrix[:, :2] @ photo_xy + matrix[:, 2]``.
        size: the crop's side.
        photo_size: the photo's (H, W).
        recipe: ``"ffhq"`` or ``"facexlib"`` (or ``"custom"``).
    """

    matrix: torch.Tensor
    size: int
    photo_size: tuple[int, int]
    recipe: str = "custom"

    @property
    def scale(self) -> float:
        """Crop pixels per photo pixel."""
        return float(self.matrix[:, :2].det().abs().sqrt())

    def to_crop(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 2) photo (x, y) -> crop (x, y), float32."""
        return _apply(self.matrix, points)

    def to_photo(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 2) crop (x, y) -> photo (x, y), float32."""
        return _apply(_invert(self.matrix), points)

    def resized(self, size: int) -> "AlignTransform":
        """The same crop at another side (e.g. the 256 x 256 map of a 512 x 512 crop)."""
        r = size / self.size
        m = self.matrix.clone()
        m[:, :2] *= r
        m[:, 2] = (self.matrix[:, 2] + 0.5) * r - 0.5  # pixel centres sit half a pixel in from the edges
        return AlignTransform(m, size, self.photo_size, self.recipe)


def _apply(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    p = points.double()
    return (p @ matrix[:, :2].T.to(p.device) + matrix[:, 2].to(p.device)).float()


def _invert(matrix: torch.Tensor) -> torch.Tensor:
    a = torch.linalg.inv(matrix[:, :2])
    return torch.cat([a, -(a @ matrix[:, 2:])], dim=1)


def ffhq_transform(landmarks: torch.Tensor, size: int = 512) -> torch.Tensor:
    """The FFHQ dataset's alignment as a (2, 3) photo -> crop matrix.

    An oriented square centred a tenth of the way from the eyes' midpoint to the mouth's, turned so the eyes
    line up with its top side; its half-side is the larger of twice the eye-to-eye distance and 1.8 times the
    eye-to-mouth distance, along the direction that balances the eye line against the perpendicular of the
    eye-to-mouth line. The square's corners map to the crop's corners.

    Args:
        landmarks: (68, 2) iBUG order, photo pixels.
    """
    lm = landmarks.double().cpu()
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - torch.stack([-eye_to_mouth[1], eye_to_mouth[0]])
    x = x / x.norm() * max(float(eye_to_eye.norm()) * 2.0, float(eye_to_mouth.norm()) * 1.8)
    y = torch.stack([-x[1], x[0]])
    centre = eye_avg + eye_to_mouth * 0.1
    top_left = centre - x - y
    # the square's corners are pixel edges of the crop: top_left -> (-0.5, -0.5), 2x -> +size along the crop's x
    k = size / (2 * float(x.norm()))
    ux, uy = x / x.norm(), y / y.norm()
    a = torch.stack([ux, uy]) * k
    b = -a @ top_left - 0.5
    return torch.cat([a, b[:, None]], dim=1)


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, shift; no reflection) taking ``src`` to ``dst``.

    Args:
        src, dst: (K, 2) matching points, K >= 2.
    Returns:
        (2, 3) float64 matrix.
    """
    s, d = src.double().cpu(), dst.double().cpu()
    ms, md = s.mean(0), d.mean(0)
    sc, dc = s - ms, d - md
    # dst ~ [[a, -b], [b, a]] src + t: linear least squares in (a, b)
    a = (sc * dc).sum() / sc.square().sum()
    b = (sc[:, 0] * dc[:, 1] - sc[:, 1] * dc[:, 0]).sum() / sc.square().sum()
    r = torch.stack([torch.stack([a, -b]), torch.stack([b, a])])
    return torch.cat([r, (md - r @ ms)[:, None]], dim=1)


def facexlib_transform(points5: torch.Tensor, size: int = 512) -> torch.Tensor:
    """The 5-point similarity to facexlib's template (:data:`FACEXLIB_TEMPLATE_512`, scaled to ``size``).

    Args:
        points5: (5, 2) from :func:`five_points`, photo pixels.
    """
    template = torch.tensor(FACEXLIB_TEMPLATE_512, dtype=torch.float64) * (size / 512.0)
    return similarity_transform(points5, template)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(C, H, W) blurred by a separable Gaussian, the edges repeated (the part's edges are the photo's, or
    lie a margin away from anything the output reads)."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[0]
    y = F.pad(x[:, None], (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return F.conv2d(y, k.view(1, 1, -1, 1))[:, 0].reshape(c, *x.shape[-2:])


def warp_affine(src: torch.Tensor, matrix: torch.Tensor, out_size: tuple[int, int], padding: str = "reflection",
                fill: Sequence[float] | None = None, mode: str = "bilinear") -> torch.Tensor:
    """Resample ``src`` through ``matrix`` (src pixels -> output pixels), antialiased when shrinking.

    Only the part of ``src`` the output sees is read, so a small crop of a huge photo is cheap. When the
    output has fewer pixels per source pixel than 1, that part is low-passed first (so the result is not
    aliased, as a plain lookup would be): shrinks under 1/2 are first resized with an antialiasing filter to
    twice the output's density, and the rest is a Gaussian blur of the source in place, so a near-identity
    warp (re-aligning an aligned face) interpolates once and blurs no more than an enlarging one.

    Args:
        src: (C, H, W) float.
        matrix: (2, 3) float64.
        out_size: (h, w) of the output.
        padding: ``"reflection"`` (mirror the source at its edges), ``"zeros"`` or ``"border"``.
        fill: with ``"zeros"``, the value (one per channel) outside the source instead of 0.
        mode: ``"bilinear"`` or ``"bicubic"`` (sharper; may overshoot the input's range a little).
    Returns:
        (C, h, w) float32.
    """
    src = src.float()
    h, w = out_size
    H, W = src.shape[-2:]
    m = matrix.double().cpu()
    inv = _invert(m)
    corners = torch.tensor([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]], dtype=torch.float64)
    reach = _apply(inv, corners).double()
    scale = float(m[:, :2].det().abs().sqrt())
    margin = 2.0 + 2.0 / max(scale, 1e-6)
    x0 = max(0, int(math.floor(float(reach[:, 0].min()) - margin)))
    y0 = max(0, int(math.floor(float(reach[:, 1].min()) - margin)))
    x1 = min(W, int(math.ceil(float(reach[:, 0].max()) + margin)) + 1)
    y1 = min(H, int(math.ceil(float(reach[:, 1].max()) + margin)) + 1)
    # an output wholly outside the source still reads the nearest edge pixels (what padding repeats)
    x0, y0 = min(x0, W - 1), min(y0, H - 1)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    part = src[..., y0:y1, x0:x1]
    # part pixel = src pixel - offset
    shift = torch.tensor([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    to_part = shift
    # Shrinking needs a low-pass first, but every resampling blurs: a face shrunk by 1 % (re-aligning an
    # aligned crop) must be resampled once, not resized to 99 % and then interpolated again. So a strong
    # shrink is first resized (antialiased) to twice the output's density, cheap even for a 4,000 px face,
    # and what remains below 1 is low-passed in place with a Gaussian, without resampling.
    rest = scale
    if scale < 0.5:
        ph, pw = part.shape[-2:]
        nh, nw = max(1, round(ph * 2 * scale)), max(1, round(pw * 2 * scale))
        part = F.interpolate(part[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
        rx, ry = nw / pw, nh / ph
        resize = torch.tensor([[rx, 0.0, 0.5 * rx - 0.5], [0.0, ry, 0.5 * ry - 0.5], [0.0, 0.0, 1.0]],
                              dtype=torch.float64)
        to_part = resize @ shift
        rest = scale / math.sqrt(rx * ry)
    if rest < 0.999:
        # a source pixel acts like a blur of sigma ~0.5 px; add what brings it to 0.5 output px
        part = _gaussian_blur(part, 0.5 * math.sqrt(1.0 / rest ** 2 - 1.0))
    full = torch.cat([m, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)])
    out_to_part = (to_part @ torch.linalg.inv(full))[:2]  # output pixel -> part pixel
    ph, pw = part.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    grid = torch.stack([xs, ys], dim=-1) @ out_to_part[:, :2].T + out_to_part[:, 2]
    grid = torch.stack([(grid[..., 0] + 0.5) / pw * 2 - 1, (grid[..., 1] + 0.5) / ph * 2 - 1], dim=-1)
    grid = grid.float().to(src.device)[None]
    if fill is not None and padding == "zeros":
        f = torch.as_tensor(fill, dtype=torch.float32, device=src.device).view(-1, 1, 1)
        return F.grid_sample((part - f)[None], grid, mode=mode, padding_mode="zeros", align_corners=False)[0] + f
    return F.grid_sample(part[None], grid, mode=mode, padding_mode=padding, align_corners=False)[0]


def align_face(image: PhotoLike, face: Face | torch.Tensor, size: int = 512, recipe: str = "ffhq",
               apply_exif: bool = True, interpolation: str = "bicubic") -> tuple[torch.Tensor, AlignTransform]:
    """Cut one face out of a photo, aligned as the metric expects.

    Recipes:
        ``"ffhq"``: the FFHQ dataset's recipe from the 68 landmarks (:func:`ffhq_transform`), what the IFQA models
        were trained on; what lies outside the photo is mirrored (reflective padding; FFHQ also blurs the
        mirrored band, this does not).
        ``"facexlib"``: the 5-point similarity to the template GFPGAN, CodeFormer and pyiqa use
        (:func:`facexlib_transform`); outside the photo is filled with facexlib's grey (135, 133, 132).

    Args:
        image: the photo (see :func:`load_photo`).
        face: a :class:`Face`, or its (68, 2) landmarks.
        size: the crop's side.
        interpolation: ``"bicubic"`` (default: a crop pasted back loses less than with bilinear, 2.6 against
            4.0 mean 8-bit error on the astronaut's face) or ``"bilinear"``.
    Returns:
        ``(crop, transform)``: (3, size, size), uint8 for a uint8 photo, else float32; and the
        :class:`AlignTransform` (its ``to_crop`` carries landmarks into the crop).
    """
    photo = load_photo(image, apply_exif)
    landmarks = face.landmarks if isinstance(face, Face) else face
    if landmarks.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), got {tuple(landmarks.shape)}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if recipe == "ffhq":
        matrix = ffhq_transform(landmarks, size)
        crop = warp_affine(photo.float(), matrix, (size, size), "reflection", mode=interpolation)
    elif recipe == "facexlib":
        matrix = facexlib_transform(five_points(landmarks), size)
        fill = [c if photo.dtype == torch.uint8 else c / 255.0 for c in FACEXLIB_FILL]
        crop = warp_affine(photo.float(), matrix, (size, size), "zeros", fill=fill, mode=interpolation)
    else:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    crop = crop.clamp(0, 255).round().to(torch.uint8) if photo.dtype == torch.uint8 else crop.clamp(0, 1)
    transform = AlignTransform(matrix, size, (int(photo.shape[-2]), int(photo.shape[-1])), recipe)
    return crop, transform


def crop_landmarks(face: Face | torch.Tensor, transform: AlignTransform) -> torch.Tensor:
    """(68, 2) landmarks carried into the crop's pixels, e.g. for
    ``regions.primary_region_weight_map(size, landmarks=lm[None], landmark_size=transform.size)``."""
    return transform.to_crop(face.landmarks if isinstance(face, Face) else face)


# ---------------------------------------------------------------- back into the photo


def feather_mask(size: int, feather: float = 0.1, device=None) -> torch.Tensor:
    """(1, size, size) mask: 1 inside, ramping smoothly to 0 over ``feather`` of the side at each edge."""
    if feather <= 0:
        return torch.ones(1, size, size, device=device)
    c = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size
    d = torch.minimum(c, 1 - c) / feather
    ramp = d.clamp(0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    return torch.minimum(ramp[None, :, None], ramp[None, None, :])


def paste_back(photo: torch.Tensor, aligned: torch.Tensor, transform: AlignTransform, feather: float = 0.1,
               mask: torch.Tensor | None = None, return_mask: bool = False, interpolation: str = "bicubic"):
    """Warp an aligned tensor back to the photo and blend it in with a feathered mask.

    Args:
        photo: (C, H, W) canvas, uint8 or float; e.g. the photo itself, or zeros for a map.
        aligned: (C, s, s) in the canvas's value range (uint8 or float); a crop, its quality map (any side s:
            the transform is rescaled to it) or a coloured heatmap.
        transform: from :func:`align_face`.
        feather: the width of the mask's soft edge, as a fraction of the crop side (0: hard edge).
        mask: (1, s, s) in [0, 1] instead of the feathered square.
        return_mask: also return the (1, H, W) mask as it lands in the photo.
        interpolation: ``"bicubic"`` or ``"bilinear"`` (for the aligned tensor; the mask is always bilinear).
    Returns:
        (C, H, W) with the canvas's dtype; with ``return_mask``, ``(canvas, mask)``.
    """
    if aligned.ndim != 3 or aligned.shape[-1] != aligned.shape[-2]:
        raise ValueError(f"aligned must be (C, s, s), got {tuple(aligned.shape)}")
    if photo.ndim != 3 or photo.shape[0] != aligned.shape[0]:
        raise ValueError(f"photo must be (C, H, W) with C = {aligned.shape[0]}, got {tuple(photo.shape)}")
    s = aligned.shape[-1]
    t = transform.resized(s) if s != transform.size else transform
    m = feather_mask(s, feather, aligned.device) if mask is None else mask.float()
    H, W = photo.shape[-2:]
    inv = _invert(t.matrix)
    corners = torch.tensor([[-0.5, -0.5], [s - 0.5, -0.5], [-0.5, s - 0.5], [s - 0.5, s - 0.5]], dtype=torch.float64)
    reach = _apply(inv, corners).double()
    x0 = max(0, int(math.floor(float(reach[:, 0].min()))))
    y0 = max(0, int(math.floor(float(reach[:, 1].min()))))
    x1 = min(W, int(math.ceil(float(reach[:, 0].max()))) + 1)
    y1 = min(H, int(math.ceil(float(reach[:, 1].max()))) + 1)
    out = photo.clone()
    full_mask = torch.zeros(1, H, W, device=photo.device)
    if x1 > x0 and y1 > y0:
        # crop pixel -> region pixel: the inverse transform, shifted to the region's origin
        to_region = inv.clone()
        to_region[0, 2] -= x0
        to_region[1, 2] -= y0
        w_img = warp_affine(aligned.float(), to_region, (y1 - y0, x1 - x0), "zeros", mode=interpolation)
        w_mask = warp_affine(m.to(aligned.device), to_region, (y1 - y0, x1 - x0), "zeros").clamp(0, 1)
        w_img, w_mask = w_img.to(photo.device), w_mask.to(photo.device)
        region = out[:, y0:y1, x0:x1].float()
        blended = region * (1 - w_mask) + w_img * w_mask
        if photo.dtype == torch.uint8:
            blended = blended.clamp(0, 255).round().to(torch.uint8)
        out[:, y0:y1, x0:x1] = blended.to(out.dtype)
        full_mask[:, y0:y1, x0:x1] = w_mask
    return (out, full_mask) if return_mask else out


def paint_maps(photo: torch.Tensor, faces: Sequence["FaceResult"], alpha: float = 0.5,
               feather: float = 0.1) -> torch.Tensor:
    """The photo with every face's quality map painted back at its place (as :func:`ifqa_loss.viz.overlay`).

    Args:
        photo: (3, H, W) uint8 or float in [0, 1].
        faces: from :func:`score_faces`.
    Returns:
        (3, H, W) float in [0, 1].
    """
    from .viz import overlay

    canvas = photo.float() / 255.0 if photo.dtype == torch.uint8 else photo.float()
    for r in faces:
        crop = r.crop.float()[None] / 255.0 if r.crop.dtype == torch.uint8 else r.crop.float()[None]
        heat = overlay(crop, r.map[None].float().cpu(), alpha)[0]
        canvas = paste_back(canvas, heat, r.transform, feather=feather)
    return canvas.clamp(0, 1)


# ---------------------------------------------------------------- scoring


@dataclass
class FaceResult:
    """One face of a photo, aligned and scored.

    Attributes:
        index: the face's place in the photo's order (see :func:`detect_faces`).
        face: the detection, in photo pixels.
        crop: (3, S, S) the aligned crop (uint8 for uint8 photos).
        transform: photo -> crop.
        landmarks: (68, 2) the landmarks in crop pixels.
        score: the model's score for the crop.
        map: (1, s, s) the model's quality map at its native size s.
    """

    index: int
    face: Face
    crop: torch.Tensor
    transform: AlignTransform
    landmarks: torch.Tensor
    score: float | None = None
    map: torch.Tensor | None = None

    def weight_map(self, size: int = 256, weight: float = 2.0) -> torch.Tensor:
        """(1, 1, size, size) primary-region weight map of this face (eyes, nose, mouth weighted ``1 + weight``),
        from its own landmarks, for ``IFQALoss(weight_map=...)``."""
        from .regions import primary_region_weight_map

        lm = self.transform.resized(size).to_crop(self.face.landmarks)
        return primary_region_weight_map(size, weight, landmarks=lm[None], landmark_size=size)


@dataclass
class PhotoFaces:
    """The faces of one photo, from :func:`score_photos`.

    Attributes:
        source: what was given (a path, or the photo's position for in-memory photos).
        faces: the faces in order; empty when none was found or the photo failed.
        error: why the photo could not be read (then ``faces`` is empty), else None.
        reason: why ``faces`` is empty (no face, or only faces under ``min_size``), else None.
        photo: (3, H, W) the decoded photo, kept with ``keep_photos``.
    """

    source: object
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None
    reason: str | None = None
    photo: torch.Tensor | None = None


def find_faces(photo: torch.Tensor, size: int = 512, recipe: str = "ffhq", min_size: int = DEFAULT_MIN_SIZE,
               largest_only: bool = False, max_faces: int | None = None, upsample: int = 1, detector: str = "hog",
               max_side: int | None = DEFAULT_DETECT_MAX_SIDE,
               threshold: float = DEFAULT_THRESHOLD) -> tuple[list[FaceResult], str | None]:
    """Detect and align the faces of a loaded (3, H, W) photo, without scoring them.

    Returns:
        ``(faces, reason)``: :class:`FaceResult` with ``score`` and ``map`` None, and why there are none
        (None when there are some).
    """
    faces, n_small = _detect(photo, min_size, largest_only, max_faces, upsample, detector, max_side, threshold)
    out = []
    for i, face in enumerate(faces):
        crop, t = align_face(photo, face, size, recipe)
        out.append(FaceResult(i, face, crop, t, t.to_crop(face.landmarks)))
    reason = None
    if not out:
        reason = "no face found"
        if n_small:
            reason += f" ({n_small} smaller than min_size={min_size} px ignored)"
    return out, reason


def score_photos(photos: Iterable[PhotoLike], model: "IFQA | None" = None, size: int = 512, recipe: str = "ffhq",
                 batch_size: int = 8, apply_exif: bool = True, keep_photos: bool = False,
                 **detect_options) -> Iterator[PhotoFaces]:
    """Detect, align and score the faces of many photos, batching the crops across photos.

    This is the path ``ifqa score --detect`` takes. Photos are yielded in the order given, each once all its
    faces are scored. A photo that cannot be read gives a :class:`PhotoFaces` with ``error`` set; the run goes on.

    Args:
        photos: paths, PIL images or tensors (see :func:`load_photo`).
        model: any :class:`ifqa_loss.IFQA` (default: the bundled ``ifqa-lite`` on the CPU).
        size, recipe: the crops (see :func:`align_face`); the map is at the model's native size.
        batch_size: crops per forward pass.
        apply_exif: rotate files upright by EXIF first.
        keep_photos: keep each decoded photo in its result (to paint maps back).
        detect_options: ``min_size``, ``largest_only``, ``max_faces``, ``upsample``, ``detector``, ``max_side``,
            ``threshold`` of :func:`detect_faces`.
    """
    from .core import IFQA
    from .io import ImageDecodeError

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    _dlib(), _model_file("shape_predictor_68_face_landmarks.dat")  # fail before any work without the extra
    model = IFQA() if model is None else model
    pending: list[PhotoFaces] = []

    def flush() -> Iterator[PhotoFaces]:
        todo = [r for p in pending for r in p.faces]
        if todo:
            out = model.score_images([r.crop for r in todo], batch_size=batch_size)
            for r, s, m in zip(todo, out.score.tolist(), out.map):
                r.score, r.map = float(s), m
        yield from pending
        pending.clear()

    for k, item in enumerate(photos):
        source = os.fspath(item) if isinstance(item, (str, os.PathLike)) else k
        try:
            photo = load_photo(item, apply_exif)
        except (ImageDecodeError, ValueError, TypeError) as e:
            pending.append(PhotoFaces(source, error=str(e)))
            continue
        except Exception as e:  # noqa: BLE001 - a decoder bug must not stop the run
            pending.append(PhotoFaces(source, error=f"{source}: cannot decode ({type(e).__name__}: {e})"))
            continue
        faces, reason = find_faces(photo, size, recipe, **detect_options)
        pending.append(PhotoFaces(source, faces, reason=reason, photo=photo if keep_photos else None))
        if sum(len(p.faces) for p in pending) >= batch_size:
            yield from flush()
    yield from flush()


def score_faces(photo: PhotoLike, model: "IFQA | None" = None, size: int = 512, recipe: str = "ffhq",
                batch_size: int = 8, apply_exif: bool = True, **detect_options) -> list[FaceResult]:
    """Every face of one photo, aligned and scored by ``model`` (default: the bundled ``ifqa-lite``).

    Args:
        photo: a path, PIL image or tensor (see :func:`load_photo`).
        model: any :class:`ifqa_loss.IFQA`; scores come from :meth:`ifqa_loss.IFQA.score_images` on the crops.
        size, recipe, batch_size, apply_exif, detect_options: as :func:`score_photos`.
    Returns:
        One :class:`FaceResult` per face (``score``, ``map``, ``crop``, ``transform``, ``landmarks``), in
        :func:`detect_faces` order; empty when there is none.
    Raises:
        ifqa_loss.io.ImageDecodeError: ``photo`` is a file that cannot be decoded.
        FacesUnavailableError: the ``faces`` extra is not installed.
    """
    from .io import ImageDecodeError

    result = next(score_photos([photo], model, size, recipe, batch_size, apply_exif, **detect_options))
    if result.error is not None:
        raise ImageDecodeError(result.error)
    return result.faces
