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

    t = sub.add_parser("train", help="train an IFQA discriminator with the paper's recipe")
    t.add_argument("--data", required=True, help="folder of aligned HQ faces")
    t.add_argument("--landmarks", help=".npz with names and 68-point landmarks")
    t.add_argument("--val-list", help="file names held out for validation")
    t.add_argument("--train-list", help="train only on these file names (one per line); the val list stays out")
    t.add_argument("--arch", choices=["lite", "cnn"], default="lite")
    t.add_argument("--out", required=True, help="output folder (checkpoint, weights, model card)")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr-d", type=float, default=2e-4)
    t.add_argument("--lr-g", type=float, default=2e-4)
    t.add_argument("--adv-weight", type=float, default=0.02)
    t.add_argument("--primary-weight", type=float, default=2.0)
    t.add_argument("--fprs-prob", type=float, default=0.5)
    t.add_argument("--cutmix-prob", type=float, default=0.25)
    t.add_argument("--no-augment", action="store_true", help="no colour/zoom augmentation of real faces")
    t.add_argument("--max-zoom", type=float, default=1.2, help="augmentation zooms real faces in by 1..Z")
    t.add_argument("--raw-fake-frac", type=float, default=0.5,
                   help="share of fakes that are raw degraded faces; 1 = discriminator only, no generator")
    t.add_argument("--init", metavar="WEIGHTS", help="start the discriminator from these weights (path or registered name)")
    t.add_argument("--degradation", action="append", default=[], metavar="KEY=VALUE",
                   help="override a degradation setting, e.g. p_jpeg=0.7 or jpeg_quality=30,95 (repeatable)")
    t.add_argument("--rank-weight", type=float, default=0.0,
                   help="weight of the severity-ranking hinge (harsher twin scores lower; 0 = off)")
    t.add_argument("--rank-margin", type=float, default=0.15, help="score margin per unit of severity gap")
    t.add_argument("--rank-kinds", default="jpeg,jpeg,jpeg,blur,noise,downup",
                   help="comma-separated kinds for severity pairs: jpeg, blur, noise, downup, sharpen "
                        "(repeat one to draw it more often)")
    t.add_argument("--region-rank-weight", type=float, default=0.0,
                   help="weight of the hinge that makes primary-region damage cost more than damage elsewhere")
    t.add_argument("--region-rank-margin", type=float, default=0.03)
    t.add_argument("--rank-pairs", type=int, default=8, help="faces per batch that also form ranking pairs")
    t.add_argument("--rank-zoom", type=float, default=1.0,
                   help="zoom ranking faces in by a further 1..Z (tighter framings; 1 = off)")
    t.add_argument("--rank-soften", type=float, default=0.0,
                   help="share of ranking faces blurred slightly (sigma 0.4-1.2) before both twins are degraded")
    t.add_argument("--flip-weight", type=float, default=0.0,
                   help="weight of the mirror-consistency term: a face's map and its mirror image's map must agree")
    t.add_argument("--flip-pairs", type=int, default=4, help="real faces per batch also scored mirrored")
    t.add_argument("--ema-decay", type=float, default=0.0,
                   help="export an exponential moving average of the discriminator's weights (e.g. 0.99; 0 = off)")
    t.add_argument("--val-every", type=int, default=250)
    t.add_argument("--val-images", type=int, default=64)
    t.add_argument("--ckpt-every", type=int, default=100)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--limit", type=int, help="use only the first N training images (smoke runs)")
    t.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    t.add_argument("--export-official", action="store_true", help="also write IFQA_Metric.pth ({'D': ...}, cnn only)")
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
    from dataclasses import fields

    from .train.degradations import DegradationConfig

    known = {f.name: f for f in fields(DegradationConfig)}
    defaults = DegradationConfig()
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise UsageError(f"--degradation {item!r}: expected KEY=VALUE with KEY one of {', '.join(known)}")
        default = getattr(defaults, key)
        try:
            if isinstance(default, tuple):
                parts = [type(default[0])(v) for v in value.split(",")]
                if len(parts) != 2 or parts[0] > parts[1]:
                    raise ValueError
                out[key] = tuple(parts)
            elif isinstance(default, str):
                out[key] = value
            else:
                out[key] = type(default)(value)
        except ValueError:
            raise UsageError(f"--degradation {item!r}: bad value for {key} (default {default!r})") from None
    return out


def train_command(args) -> int:
    from .train.trainer import TrainConfig, train

    if args.steps < 1 or args.batch_size < 1:
        raise UsageError("--steps and --batch-size must be >= 1")
    if args.device == "cpu":
        reuse_freed_memory()
    cfg = TrainConfig(
        data=args.data, out=args.out, landmarks=args.landmarks, val_list=args.val_list, train_list=args.train_list,
        arch=args.arch, degradation=_degradation_overrides(args.degradation),
        steps=args.steps, batch_size=args.batch_size, lr_d=args.lr_d, lr_g=args.lr_g, adv_weight=args.adv_weight,
        primary_weight=args.primary_weight, fprs_prob=args.fprs_prob, cutmix_prob=args.cutmix_prob, augment=not args.no_augment, raw_fake_frac=args.raw_fake_frac,
        val_every=args.val_every, val_images=args.val_images, ckpt_every=args.ckpt_every, seed=args.seed,
        device=args.device, limit=args.limit, resume=not args.no_resume, export_official=args.export_official,
        init=args.init, rank_weight=args.rank_weight, rank_margin=args.rank_margin,
        rank_kinds=[k.strip() for k in args.rank_kinds.split(",") if k.strip()],
        region_rank_weight=args.region_rank_weight, region_rank_margin=args.region_rank_margin,
        rank_pairs=args.rank_pairs, rank_zoom=args.rank_zoom, rank_soften=args.rank_soften, max_zoom=args.max_zoom,
        flip_weight=args.flip_weight, flip_pairs=args.flip_pairs, ema_decay=args.ema_decay,
    )
    try:
        card = train(cfg, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    if card:
        print(json.dumps({k: card[k] for k in ("name", "file", "sha256", "steps", "wall_time_s", "validation")}))
    return EXIT_OK
