"""``ifqa`` command line: ``ifqa score`` rates face images, ``ifqa train`` trains a model, ``ifqa evaluate-mos`` and
``ifqa compare`` evaluate against human scores and between restoration methods.

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
from typing import Iterator, NamedTuple

import numpy as np

from . import __version__
from .cpu_memory import reuse_freed_memory
from .io import find_images

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROGRESS_MIN_IMAGES = 8


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ifqa", description="IFQA face-quality assessment.")
    p.add_argument("--version", action="version", version=f"ifqa {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score face images (files or folders)")
    s.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    s.add_argument("--backbone", choices=["lite", "cnn", "vit", "dsl"], default=None,
                   help="IFQA: lite, cnn, vit; dsl: DSL-FIQA (needs --landmarks FILE or --detect)")
    s.add_argument("--weights", default=None, help="weights file or registered name (default: bundled ifqa-lite); "
                   "for dsl the folder holding DE.pt and IQA.pt")
    s.add_argument("--crops", choices=["official", "fixed", "center"], default="official",
                   help="dsl only: official (20 crops of the official test protocol), fixed (4 corners + centre), "
                        "center")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    s.add_argument("--recursive", action="store_true", help="also look in sub-folders")
    s.add_argument("--apply-exif", action="store_true",
                   help="rotate by EXIF orientation (the official script does not)")
    out = s.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON array of {path, score}")
    out.add_argument("--csv", metavar="FILE", help="write path,score rows to FILE")
    s.add_argument("--save-maps", metavar="DIR", help="write <stem>.npy (float32 map) and <stem>.png (heatmap)")
    s.add_argument("--no-progress", action="store_true")
    _add_detect_arguments(s, score=True)
    _add_align_parser(sub)

    from .train.config import add_train_arguments

    t = sub.add_parser("train", help="train an IFQA discriminator with the paper's recipe",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(t)  # one flag per TrainConfig field (ifqa_loss/train/config.py)
    t.add_argument("--no-progress", action="store_true",
                   help="no progress bar (validation records still go to stderr as JSON lines)")
    _add_evaluation_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    try:
        if args.command == "score" and args.backbone == "dsl":
            from .dsl_cli import dsl_score_command

            return dsl_score_command(args)
        if args.command == "score":
            if isinstance(args.landmarks, str):
                raise UsageError(f"--landmarks {args.landmarks}: a landmarks FILE is for --backbone dsl; with "
                                 "--detect, --landmarks is a flag")
            return score_faces_command(args) if args.detect else score_command(args)
        if args.command == "align":
            return align_command(args)
        if args.command in ("evaluate-mos", "compare"):
            return evaluation_command(args)
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
    maps_dir = _prepare_outputs(args)  # checked before scoring, not after
    files, problems = find_images(args.paths, args.recursive)
    ddp = _dist_start(args)  # under torchrun with several processes (helpers below); sets args.device on CUDA
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
    if ddp is not None:  # this process scores its share; rank 0 reports the missing paths
        all_files, files = files, _dist_shard(files, args.batch_size, ddp)
        used_stems |= _dist_reserved_stems(all_files, args.batch_size, ddp, maps_dir, inputs)
        problems = problems if ddp.rank == 0 else []
    for path, why in problems:
        print(f"ifqa: {path}: {why}", file=sys.stderr)

    bar = None
    if len(files) > PROGRESS_MIN_IMAGES and not args.no_progress and (ddp is None or ddp.rank == 0):
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
        for i, (path, img, err) in enumerate(_prefetch(files, args.apply_exif, depth=2 * args.batch_size)):
            if i % args.batch_size == 0:  # batches by position, files[k*B:(k+1)*B] less the failed ones, so a
                flush()                   # score's float rounding does not depend on other files (or on ranks)
            if err is not None:
                failed += 1
                print(f"ifqa: {err}", file=sys.stderr)
                if bar is not None:
                    bar.update(1)
                continue
            batch.append((path, img))
        flush()
    finally:
        if bar is not None:
            bar.close()
    if ddp is not None:  # rank 0 writes every rank's results, in input order; the other ranks are done
        results, failed = _dist_merge(ddp, results, failed)
        if ddp.rank != 0:
            return EXIT_OK
    return _finish(_write_results, results, args, failed)


def _finish(write, rows: list[dict], args, failed: int) -> int:
    """Write the rows with ``write(rows, args)``; the exit status (1 if the write or any file failed)."""
    try:
        write(rows, args)
    except OSError as e:
        print(f"ifqa: error: cannot write the results to {args.csv or 'stdout'}: {e}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK


def _prepare_outputs(args) -> Path | None:
    """Create the ``--save-maps`` folder and check it and the ``--csv`` file's folder are writable."""
    maps_dir = Path(args.save_maps) if args.save_maps else None
    if maps_dir is not None:
        try:
            maps_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--save-maps {maps_dir}: cannot create the folder ({e.strerror or e})") from None
        _check_writable(maps_dir, "--save-maps")
    if args.csv:
        if Path(args.csv).is_dir():
            raise UsageError(f"--csv {args.csv}: is a directory")
        _check_writable(Path(args.csv).parent, "--csv")
    return maps_dir


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


# ---------------------------------------------------------------- score on several processes
# `torchrun --nproc_per_node N -m ifqa_loss score ...`: every process finds the same sorted file list, scores one
# contiguous share of it in whole batches (gloo on the CPU, NCCL with --device cuda, one GPU per process), and rank 0
# gathers the results in rank order, which is input order, and writes the one output a single process would: the
# same bytes, given the same --batch-size and threads per process (float rounding depends on both). Each process
# reports its own undecodable files on stderr; the exit status is rank 0's: 1 if a file failed on any rank. The
# other ranks exit 0 once their results are sent, so torchrun reports at most one failed process.


class _Dist(NamedTuple):
    rank: int
    world: int
    owns_group: bool  # started here (destroyed after the merge), or the caller's own process group


def _dist_start(args) -> _Dist | None:
    """Join the torchrun job when ``WORLD_SIZE`` > 1, else None (one process scores everything)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 2:
        return None
    import torch
    import torch.distributed as dist

    cuda = args.device.startswith("cuda")
    if args.device == "cuda":  # one GPU per process
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if cuda:
        torch.cuda.set_device(torch.device(args.device))  # NCCL's object collectives use the current device
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if cuda else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), owns)


def _dist_bounds(n: int, batch_size: int, ddp: _Dist) -> tuple[int, int]:
    """``[lo, hi)``: this rank's contiguous share of ``n`` files, in whole batches of ``batch_size`` (the batches
    of one process, so each score is computed in the same batch); shares differ by at most one batch."""
    batches = -(-n // batch_size)
    lo, hi = ddp.rank * batches // ddp.world, (ddp.rank + 1) * batches // ddp.world
    return min(lo * batch_size, n), min(hi * batch_size, n)


def _dist_shard(files: list[str], batch_size: int, ddp: _Dist) -> list[str]:
    lo, hi = _dist_bounds(len(files), batch_size, ddp)
    return files[lo:hi]


def _dist_reserved_stems(all_files: list[str], batch_size: int, ddp: _Dist, maps_dir: Path | None,
                         inputs: set[str]) -> set[str]:
    """Map stems the other ranks' files take, so that every rank names its maps as one process would.

    Stems are given in input order over all files, as one process does; unlike one process, a file that then
    fails to decode keeps its stem (it matters only when a later file has the same stem).
    """
    if maps_dir is None:
        return set()
    used: set[str] = set()
    stems = [_unique_stem(maps_dir, f, used, inputs) for f in all_files]
    lo, hi = _dist_bounds(len(all_files), batch_size, ddp)
    return set(stems[:lo] + stems[hi:])


def _dist_merge(ddp: _Dist, results: list[dict], failed: int) -> tuple[list[dict], int]:
    """Every rank's results concatenated in rank order, and the failures of all ranks (on rank 0; [] elsewhere)."""
    import torch.distributed as dist

    gathered: list = [None] * ddp.world
    dist.all_gather_object(gathered, (results, failed))
    if ddp.owns_group:
        dist.destroy_process_group()
    if ddp.rank != 0:
        return [], 0
    return [r for part, _ in gathered for r in part], sum(n for _, n in gathered)


# ---------------------------------------------------------------- evaluate-mos, compare (evaluation.py, compare.py)


def _add_evaluation_parsers(sub) -> None:
    from . import compare, evaluation

    e = sub.add_parser("evaluate-mos", help="agreement of the scores with human opinion scores (SRCC, PLCC, ...)")
    evaluation.add_arguments(e)
    c = sub.add_parser("compare", help="compare restoration methods on the same faces; an HTML report")
    compare.add_arguments(c)


def evaluation_command(args) -> int:
    from . import compare, evaluation

    if args.device == "cpu":
        reuse_freed_memory()
    try:
        if args.command == "evaluate-mos":
            return evaluation.run_evaluate_mos(args)
        return compare.run_compare(args)
    except ValueError as e:  # LayoutError, a weights problem, a bad option: the message names it
        raise UsageError(str(e)) from None


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


# ---------------------------------------------------------------- faces in whole photos (score --detect, align)


def _add_detect_arguments(p: argparse.ArgumentParser, score: bool) -> None:
    """Detection options, shared by ``ifqa score --detect`` and ``ifqa align``."""
    from .faces import DEFAULT_MIN_SIZE, DEFAULT_THRESHOLD

    g = p.add_argument_group("faces in whole photos" + (" (with --detect)" if score else ""))
    if score:
        g.add_argument("--detect", action="store_true",
                       help="detect, align (FFHQ recipe, 512 px) and score every face: one row per face; "
                            "needs pip install \"ifqa-loss[faces]\"")
        g.add_argument("--landmarks", nargs="?", const=True, default=False, metavar="FILE",
                       help="with --detect: add each face's 68 landmarks (photo pixels) to the rows; with "
                            "--backbone dsl: the images' landmarks68.npz FILE (names, landmarks)")
    g.add_argument("--recipe", choices=["ffhq", "facexlib"], default=None,
                   help="alignment: ffhq (the FFHQ dataset's, default) or facexlib (GFPGAN/CodeFormer's template)")
    g.add_argument("--min-face-size", type=int, default=DEFAULT_MIN_SIZE, metavar="PX",
                   help=f"ignore faces whose box side is under PX pixels (default {DEFAULT_MIN_SIZE})")
    g.add_argument("--max-faces", type=int, default=None, metavar="N", help="keep the N largest faces of a photo")
    g.add_argument("--largest-only", action="store_true", help="keep only the largest face of a photo")
    g.add_argument("--upsample", type=int, default=1, metavar="K",
                   help="detector upsampling: 0 finds faces from ~80 px, 1 (default) ~40 px, 2 ~20 px (slower)")
    g.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="T",
                   help=f"drop detections scoring under T (default {DEFAULT_THRESHOLD}; lower keeps faces cut by the "
                        "border)")
    g.add_argument("--detector", choices=["hog", "mmod"], default="hog",
                   help="dlib's HOG (default, fast, frontal) or MMOD CNN (more poses, ~50x slower on a CPU)")
    g.add_argument("--ignore-exif", action="store_true",
                   help="do not rotate photos by EXIF orientation (detection rotates them upright by default)")


def _add_align_parser(sub) -> None:
    a = sub.add_parser("align", help="detect and align every face of photos into crops (needs the faces extra)")
    a.add_argument("paths", nargs="+", metavar="PATH", help="photos or folders")
    a.add_argument("--out", required=True, metavar="DIR",
                   help="write DIR/<stem>_<face index>.png and DIR/landmarks68.npz (crop pixels)")
    a.add_argument("--size", type=int, default=512, help="crop side (default 512)")
    a.add_argument("--recursive", action="store_true", help="also look in sub-folders")
    a.add_argument("--no-progress", action="store_true")
    _add_detect_arguments(a, score=False)


def _detect_options(args) -> dict:
    if args.min_face_size < 0 or args.upsample < 0 or (args.max_faces is not None and args.max_faces < 1):
        raise UsageError("--min-face-size and --upsample must be >= 0, --max-faces >= 1")
    return {"min_size": args.min_face_size, "largest_only": args.largest_only, "max_faces": args.max_faces,
            "upsample": args.upsample, "detector": args.detector, "threshold": args.threshold}


def _require_faces() -> None:
    from .faces import FacesUnavailableError, _dlib, _model_file

    try:
        _dlib()
        _model_file("shape_predictor_68_face_landmarks.dat")
    except FacesUnavailableError as e:
        raise UsageError(str(e)) from None


def _photo_bar(n: int, args, desc: str):
    if n > PROGRESS_MIN_IMAGES and not args.no_progress:
        from tqdm import tqdm

        return tqdm(total=n, file=sys.stderr, desc=desc, unit="photo", dynamic_ncols=True)
    return None


def score_faces_command(args) -> int:
    """``ifqa score --detect``: one row per face of each photo, through :func:`ifqa_loss.faces.score_photos`.

    Exit status: 0 when every photo was read (photos without a face included: their row has ``"score": null``
    and a ``reason``, and stderr says so); 1 when a file could not be read or a map not written; 2 for usage
    errors, the faces extra missing included.
    """
    import torch

    from .core import IFQA
    from .faces import paint_maps, score_photos
    from .weights import WeightsError

    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank would score every photo and write the output
        raise UsageError("--detect does not split photos across torchrun processes; run it as one process")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available")
    options = _detect_options(args)
    _require_faces()
    maps_dir = _prepare_outputs(args)
    files, problems = find_images(args.paths, args.recursive)
    try:
        model = IFQA(backbone=args.backbone, weights=args.weights).to(args.device)
    except (WeightsError, ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    for path, why in problems:
        print(f"ifqa: {path}: {why}", file=sys.stderr)
    failed = len(problems)
    inputs = {os.path.realpath(f) for f in files}
    used_stems: set[str] = set()
    rows: list[dict] = []
    bar = _photo_bar(len(files), args, "faces")
    try:
        for res in score_photos(files, model, size=512, recipe=args.recipe or "ffhq", batch_size=args.batch_size,
                                apply_exif=not args.ignore_exif, keep_photos=maps_dir is not None, **options):
            if bar is not None:
                bar.update(1)
            if res.error is not None:
                failed += 1
                print(f"ifqa: {res.error}", file=sys.stderr)
                continue
            if not res.faces:
                print(f"ifqa: {res.source}: {res.reason}", file=sys.stderr)
                rows.append({"path": res.source, "face": None, "box": None, "confidence": None, "score": None,
                             "reason": res.reason})
                continue
            for r in res.faces:
                row = {"path": res.source, "face": r.index, **r.face.to_dict(args.landmarks), "score": r.score}
                rows.append(row)
            if maps_dir is not None:
                try:
                    _save_face_maps(maps_dir, res, paint_maps(res.photo, res.faces), used_stems, inputs)
                except OSError as e:
                    failed += 1
                    print(f"ifqa: {res.source}: cannot write its maps to {maps_dir} ({e})", file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
    return _finish(_write_face_rows, rows, args, failed)


def _png_bytes(rgb_float) -> bytes:
    from PIL import Image

    from .viz import to_uint8_hwc

    buf = io.BytesIO()
    Image.fromarray(to_uint8_hwc(rgb_float)).save(buf, format="PNG")
    return buf.getvalue()


def _save_face_maps(maps_dir: Path, res, painted, used: set[str], inputs: set[str]) -> None:
    """``<stem>_<i>.npy`` (float32 map) and ``<stem>_<i>.png`` (heatmap on the crop) per face, and
    ``<stem>_faces.png``: the photo with every face's map painted back."""
    from .viz import overlay

    stem = _unique_stem(maps_dir, str(res.source), used, inputs)
    for r in res.faces:
        buf = io.BytesIO()
        np.save(buf, r.map[0].detach().cpu().numpy().astype(np.float32))
        _atomic_write(maps_dir / f"{stem}_{r.index}.npy", buf.getvalue())
        crop = r.crop[None].float().div(255) if not r.crop.is_floating_point() else r.crop[None]
        heat = overlay(crop.to(r.map.device), r.map[None].detach())[0]
        _atomic_write(maps_dir / f"{stem}_{r.index}.png", _png_bytes(heat))
    _atomic_write(maps_dir / f"{stem}_faces.png", _png_bytes(painted))


FACE_CSV_COLUMNS = ["path", "score", "face", "x0", "y0", "x1", "y1", "confidence", "reason"]


def _write_face_rows(rows: list[dict], args) -> None:
    if args.json:
        sys.stdout.write(json.dumps(rows) + "\n")
    elif args.csv:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(FACE_CSV_COLUMNS + (["landmarks"] if args.landmarks else []))
        for r in rows:
            box = r["box"] or [""] * 4
            line = [r["path"], "" if r["score"] is None else repr(r["score"]), "" if r["face"] is None else r["face"],
                    *box, "" if r["confidence"] is None else r["confidence"], r.get("reason", "")]
            if args.landmarks:
                line.append(json.dumps(r["landmarks"]) if "landmarks" in r else "")
            w.writerow(line)
        _atomic_write(Path(args.csv), buf.getvalue().encode())
    else:
        for r in rows:
            if r["score"] is None:
                sys.stdout.write(f"-\t{r['path']}\t-\t{r['reason']}\n")
            else:
                box = ",".join(f"{v:g}" for v in r["box"])
                sys.stdout.write(f"{r['score']:.6f}\t{r['path']}\tface {r['face']}\tbox {box}\n")


def align_command(args) -> int:
    """``ifqa align``: every face of the photos as ``DIR/<stem>_<i>.png``, with ``DIR/landmarks68.npz``
    (``names``, ``landmarks`` int16 (N, 68, 2) in crop pixels: the format of ``../shared/data/*/landmarks68.npz``).

    Exit status: 0 when every photo was read (faceless photos are reported on stderr), 1 when a file could not
    be read or written, 2 for usage errors.
    """
    from . import faces
    from .io import ImageDecodeError

    if args.size < 16:
        raise UsageError("--size must be >= 16")
    options = _detect_options(args)
    _require_faces()
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out_dir}: cannot create the folder ({e.strerror or e})") from None
    _check_writable(out_dir, "--out")
    files, problems = find_images(args.paths, args.recursive)
    for path, why in problems:
        print(f"ifqa: {path}: {why}", file=sys.stderr)
    failed = len(problems)
    inputs = {os.path.realpath(f) for f in files}
    used: set[str] = set()
    names, marks = [], []
    bar = _photo_bar(len(files), args, "aligning")
    try:
        for path in files:
            if bar is not None:
                bar.update(1)
            try:
                photo = faces.load_photo(path, apply_exif=not args.ignore_exif)
            except ImageDecodeError as e:
                failed += 1
                print(f"ifqa: {e}", file=sys.stderr)
                continue
            found, reason = faces.find_faces(photo, args.size, args.recipe or "ffhq", **options)
            if not found:
                print(f"ifqa: {path}: {reason}", file=sys.stderr)
                continue
            stem = _unique_stem(out_dir, path, used, inputs)
            for r in found:
                name = f"{stem}_{r.index}.png"
                try:
                    _atomic_write(out_dir / name, _png_bytes(r.crop.float() / 255))
                except OSError as e:
                    failed += 1
                    print(f"ifqa: {path}: cannot write {out_dir / name} ({e})", file=sys.stderr)
                    continue
                names.append(name)
                marks.append(np.clip(np.round(r.landmarks.numpy()), -32768, 32767).astype(np.int16))
                sys.stdout.write(f"{out_dir / name}\t{path}\tface {r.index}\n")
    finally:
        if bar is not None:
            bar.close()
    buf = io.BytesIO()
    landmarks = np.stack(marks) if marks else np.zeros((0, 68, 2), np.int16)
    np.savez(buf, names=np.array(names, dtype=str), landmarks=landmarks)
    try:
        _atomic_write(out_dir / "landmarks68.npz", buf.getvalue())
    except OSError as e:
        print(f"ifqa: error: cannot write {out_dir / 'landmarks68.npz'}: {e}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK
