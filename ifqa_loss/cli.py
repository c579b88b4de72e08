"""``ifqa`` command line: ``ifqa score`` rates face images, ``ifqa train`` trains a model.

Exit status: 0 success, 1 when any file failed, 2 for usage errors, 130 when interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from .cpu_memory import reuse_freed_memory
from .io import find_images

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROGRESS_MIN_IMAGES = 8


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ifqa", description="IFQA face-quality assessment.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score face images (files or folders)")
    s.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    s.add_argument("--backbone", choices=["lite", "cnn", "vit"], default=None)
    s.add_argument("--weights", default=None, help="weights file or registered name (default: bundled ifqa-lite)")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    s.add_argument("--recursive", action="store_true", help="also look in sub-folders")
    s.add_argument("--apply-exif", action="store_true", help="rotate by EXIF orientation (the official script does not)")
    out = s.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON array of {path, score}")
    out.add_argument("--csv", metavar="FILE", help="write path,score rows to FILE")
    s.add_argument("--save-maps", metavar="DIR", help="write <stem>.npy (float32 map) and <stem>.png (heatmap)")
    s.add_argument("--no-progress", action="store_true")

    from .train.config import add_train_arguments

    t = sub.add_parser("train", help="train an IFQA discriminator with the paper's recipe",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(t)  # one flag per TrainConfig field (ifqa_loss/train/config.py)
    t.add_argument("--no-progress", action="store_true",
                   help="no progress bar (validation records still go to stderr as JSON lines)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    try:
        if args.command == "score":
            return score_command(args)
        return train_command(args)
    except UsageError as e:
        print(f"ifqa: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ifqa: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------- score


def _decode(path: str, apply_exif: bool):
    from . import io as image_io

    try:
        img = image_io.load_image(path, apply_exif=apply_exif)
        image_io.check_size(img, path)
        return img, None
    except ValueError as e:  # ImageDecodeError, or too small to score
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - a decoder bug must not stop the batch
        return None, f"{path}: cannot decode ({type(e).__name__}: {e})"


def _prefetch(files: list[str], apply_exif: bool, depth: int) -> Iterator[tuple[str, object, str | None]]:
    """Decode in a background thread, at most ``depth`` images ahead (bounded memory)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = []
        it = iter(files)
        for f in it:
            pending.append((f, pool.submit(_decode, f, apply_exif)))
            if len(pending) >= depth:
                break
        while pending:
            f, fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_decode, nxt, apply_exif)))
            img, err = fut.result()
            yield f, img, err


def score_command(args) -> int:
    import torch

    from .core import IFQA
    from .weights import WeightsError

    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available")
    if args.device == "cpu":  # reuse activation memory across batches instead of page-faulting it in again
        reuse_freed_memory()
    maps_dir = Path(args.save_maps) if args.save_maps else None
    if maps_dir is not None:  # check the outputs before scoring, not after
        try:
            maps_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--save-maps {maps_dir}: cannot create the folder ({e.strerror or e})") from None
        _check_writable(maps_dir, "--save-maps")
    if args.csv:
        if Path(args.csv).is_dir():
            raise UsageError(f"--csv {args.csv}: is a directory")
        _check_writable(Path(args.csv).parent, "--csv")
    files, problems = find_images(args.paths, args.recursive)
    try:
        model = IFQA(backbone=args.backbone, weights=args.weights).to(args.device)
    except (WeightsError, ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    # CPU scoring (benchmarks/speed.py): channels_last wins for lite; cnn is faster contiguous, where its
    # wide low-resolution layers use Winograd convolution. On CUDA neither format change pays.
    memory_format = torch.channels_last if model.backbone == "lite" and args.device == "cpu" else None
    if memory_format is not None:
        model.net.to(memory_format=memory_format)
    inputs = {os.path.realpath(f) for f in files}
    used_stems: set[str] = set()
    for path, why in problems:
        print(f"ifqa: {path}: {why}", file=sys.stderr)

    bar = None
    if len(files) > PROGRESS_MIN_IMAGES and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), file=sys.stderr, desc="scoring", unit="img", dynamic_ncols=True)
    results: list[dict] = []
    failed = len(problems)
    batch: list[tuple[str, torch.Tensor]] = []

    def flush() -> None:
        nonlocal failed
        if not batch:
            return
        out = model.score_images([img for _, img in batch], batch_size=len(batch))
        for (path, img), s, m in zip(batch, out.score.tolist(), out.map):
            results.append({"path": path, "score": s})
            if maps_dir is not None:
                try:
                    _save_map(maps_dir, path, m, img, used_stems, inputs)
                except OSError as e:  # e.g. disk full: this file failed, the run goes on
                    failed += 1
                    print(f"ifqa: {path}: cannot write its map to {maps_dir} ({e})", file=sys.stderr)
        if bar is not None:
            bar.update(len(batch))
        batch.clear()

    try:  # load_image refuses pixel bombs (PIL's DecompressionBombWarning is an error there)
        for path, img, err in _prefetch(files, args.apply_exif, depth=2 * args.batch_size):
            if err is not None:
                failed += 1
                print(f"ifqa: {err}", file=sys.stderr)
                if bar is not None:
                    bar.update(1)
                continue
            batch.append((path, img))
            if len(batch) >= args.batch_size:
                flush()
        flush()
    finally:
        if bar is not None:
            bar.close()
    try:
        _write_results(results, args)
    except OSError as e:
        print(f"ifqa: error: cannot write the results to {args.csv or 'stdout'}: {e}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK


def _check_writable(folder: Path, option: str) -> None:
    """Raise ``UsageError`` unless a file can be created in ``folder`` (tried, not guessed from permissions)."""
    folder = folder if str(folder) else Path(".")
    if not folder.is_dir():
        why = "is not a directory" if folder.exists() else "does not exist"
        raise UsageError(f"{option}: folder {folder} {why}")
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".ifqa-write-test."):
            pass
    except OSError as e:
        raise UsageError(f"{option}: cannot write in {folder} ({e.strerror or e})") from None


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _unique_stem(maps_dir: Path, path: str, used: set[str], inputs: set[str]) -> str:
    stem = Path(path).stem
    candidate, k = stem, 1
    while (candidate in used or os.path.realpath(maps_dir / f"{candidate}.npy") in inputs
           or os.path.realpath(maps_dir / f"{candidate}.png") in inputs):
        k += 1
        candidate = f"{stem}_{k}"
    used.add(candidate)
    return candidate


def _save_map(maps_dir: Path, path: str, qmap, img, used: set[str], inputs: set[str]) -> None:
    from PIL import Image

    from .viz import overlay, to_uint8_hwc

    stem = _unique_stem(maps_dir, path, used, inputs)
    buf = io.BytesIO()
    np.save(buf, qmap[0].detach().cpu().numpy().astype(np.float32))
    _atomic_write(maps_dir / f"{stem}.npy", buf.getvalue())
    rgb = img[None].float().div(255)
    heat = overlay(rgb.to(qmap.device), qmap[None].detach())[0]
    buf = io.BytesIO()
    Image.fromarray(to_uint8_hwc(heat)).save(buf, format="PNG")
    _atomic_write(maps_dir / f"{stem}.png", buf.getvalue())


def _write_results(results: list[dict], args) -> None:
    if args.json:
        sys.stdout.write(json.dumps(results) + "\n")
    elif args.csv:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path", "score"])
        for r in results:
            w.writerow([r["path"], repr(r["score"])])
        _atomic_write(Path(args.csv), buf.getvalue().encode())
    else:
        for r in results:
            sys.stdout.write(f"{r['score']:.6f}\t{r['path']}\n")


# ---------------------------------------------------------------- train


def _degradation_overrides(items: list[str]) -> dict:
    """``["p_jpeg=0.7", "jpeg_quality=30,95"]`` -> typed DegradationConfig overrides."""
    from .train.config import ConfigError, parse_degradation

    try:
        return parse_degradation(items)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def train_command(args) -> int:
    from .train import trainer
    from .train.config import ConfigError, config_from_args

    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if cfg.device == "cpu":
        reuse_freed_memory()
    try:
        card = trainer.train(cfg, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    if card:
        print(json.dumps({k: card[k] for k in ("name", "file", "sha256", "steps", "wall_time_s", "validation")}))
    return EXIT_OK
