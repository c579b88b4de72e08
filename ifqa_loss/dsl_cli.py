"""``ifqa score --backbone dsl``: DSL-FIQA scores of face images, with landmarks from a file or detected.

- ``--weights DIR``: the official ``ckpt/<scenario>/`` folder holding ``DE.pt`` and ``IQA.pt``.
- ``--landmarks FILE``: a ``landmarks68.npz`` (``names``: file names, ``landmarks``: (N, 68, 2) x, y in each
  image's pixels; the format ``ifqa align`` writes). An image is matched by its path as given, else by its
  file name; an image without an entry fails (stderr, exit status 1) and the others are scored.
- ``--detect`` (the ``faces`` extra): every face of each photo is found, aligned to 512 x 512 (the official
  landmark pipeline also scores 512-px aligned faces) and scored with its own landmarks: one row per face.
- ``--crops``: ``official`` (default: 20 crops, the official test protocol, the same offsets for every image
  so scores do not depend on file order), ``fixed`` (4 corners + centre) or ``center``.

Rows and exit statuses are those of ``ifqa score`` (:mod:`ifqa_loss.cli`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from .cli import PROGRESS_MIN_IMAGES, UsageError, _finish, _photo_bar, _write_face_rows, _write_results
from .io import find_images


def read_landmarks_file(path: str) -> dict[str, np.ndarray]:
    """``names`` -> (68, 2) float64 landmarks from a ``landmarks68.npz``; ``UsageError`` for a bad file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names, marks = z["names"], z["landmarks"]
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"--landmarks {path}: not a landmarks68.npz with 'names' and 'landmarks' arrays ({e})") \
            from None
    if marks.ndim != 3 or marks.shape[1:] != (68, 2) or len(names) != len(marks):
        raise UsageError(f"--landmarks {path}: expected 'landmarks' of shape (N, 68, 2) for N names, got "
                         f"{marks.shape} for {len(names)} names")
    table: dict[str, np.ndarray] = {}
    for name, lm in zip(names.tolist(), marks.astype(np.float64)):
        if str(name) in table:
            raise UsageError(f"--landmarks {path}: the name {name!r} appears twice")
        table[str(name)] = lm
    return table


def _lookup(table: dict[str, np.ndarray], path: str) -> np.ndarray | None:
    for key in (path, os.path.normpath(path), Path(path).name):
        if key in table:
            return table[key]
    return None


def _model(args):
    import torch

    from .dsl import DSLFIQA
    from .weights import WeightsError

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available")
    if args.save_maps:
        raise UsageError("--save-maps: DSL-FIQA gives one score per image, no quality map")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--backbone dsl does not split images across torchrun processes; run it as one process")
    try:
        return DSLFIQA(args.weights, crops=args.crops, crop_batch_size=args.batch_size).to(args.device)
    except (WeightsError, ValueError, TypeError) as e:
        raise UsageError(str(e)) from None


def dsl_score_command(args) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    if args.detect:
        return dsl_score_faces_command(args)
    if not isinstance(args.landmarks, str):
        raise UsageError("--backbone dsl needs the images' 68 landmarks: --landmarks FILE (a landmarks68.npz with "
                         "names and landmarks, as `ifqa align` writes), or --detect with the faces extra")
    from .io import load_image

    table = read_landmarks_file(args.landmarks)
    model = _model(args)
    files, problems = find_images(args.paths, args.recursive)
    for path, why in problems:
        print(f"ifqa: {path}: {why}", file=sys.stderr)
    failed = len(problems)
    bar = None
    if len(files) > PROGRESS_MIN_IMAGES and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), file=sys.stderr, desc="scoring", unit="img", dynamic_ncols=True)
    rows: list[dict] = []
    try:
        for path in files:
            if bar is not None:
                bar.update(1)
            lm = _lookup(table, path)
            if lm is None:
                failed += 1
                print(f"ifqa: {path}: no landmarks for it in {args.landmarks} (looked up by path and by file name)",
                      file=sys.stderr)
                continue
            try:
                score = float(model.score_images([load_image(path, apply_exif=args.apply_exif)], [lm])[0])
            except ValueError as e:  # undecodable, too small, landmarks outside the image
                failed += 1
                print(f"ifqa: {path}: {e}", file=sys.stderr)
                continue
            rows.append({"path": path, "score": score})
    finally:
        if bar is not None:
            bar.close()
    return _finish(_write_results, rows, args, failed)


def dsl_score_faces_command(args) -> int:
    """``--detect``: detect, align to 512 and score every face; rows as ``ifqa score --detect`` writes them."""
    from .cli import _detect_options, _require_faces
    from .faces import find_faces, load_photo
    from .io import ImageDecodeError

    if isinstance(args.landmarks, str):
        raise UsageError("--detect finds the landmarks itself; with --detect, --landmarks is a flag (add each "
                         "face's landmarks to the rows), not a FILE")
    options = _detect_options(args)
    _require_faces()
    model = _model(args)
    files, problems = find_images(args.paths, args.recursive)
    for path, why in problems:
        print(f"ifqa: {path}: {why}", file=sys.stderr)
    failed = len(problems)
    rows: list[dict] = []
    bar = _photo_bar(len(files), args, "faces")
    try:
        for path in files:
            if bar is not None:
                bar.update(1)
            try:
                photo = load_photo(path, apply_exif=not args.ignore_exif)
            except ImageDecodeError as e:
                failed += 1
                print(f"ifqa: {e}", file=sys.stderr)
                continue
            found, reason = find_faces(photo, 512, args.recipe or "ffhq", **options)
            if not found:
                print(f"ifqa: {path}: {reason}", file=sys.stderr)
                rows.append({"path": path, "face": None, "box": None, "confidence": None, "score": None,
                             "reason": reason})
                continue
            for r in found:
                try:
                    score = float(model.score_images([r.crop], [r.landmarks.numpy()])[0])
                except ValueError as e:  # e.g. landmarks far outside the aligned crop
                    failed += 1
                    print(f"ifqa: {path}: face {r.index}: {e}", file=sys.stderr)
                    continue
                rows.append({"path": path, "face": r.index, **r.face.to_dict(bool(args.landmarks)), "score": score})
    finally:
        if bar is not None:
            bar.close()
    return _finish(_write_face_rows, rows, args, failed)
