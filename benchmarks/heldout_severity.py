"""Held-out severity check: section (1) of quality.py on faces that no choice was made on, and its
cross-content sections (6) and (7).

quality.py's hq_eval faces were looked at while choosing the bundled model's stage lengths and settings, so
its figures there are optimistic. This runs the same five severity sweeps (same levels, same seeds) and the
mirror check on the first N names of faces256's val.txt, which is held out from training and was not used
to pick anything. Several weights can be compared in one run. As in quality.py, the faces (256x256 files) are
degraded, rounded to 8 bits and scored as ``ifqa score`` scores files (:meth:`ifqa_loss.IFQA.score_images`).

The cross-content part (quality.py's (6) and (7), same draws and seeds) is the one to choose models on:
one degraded version per face, Spearman of the score with the quality (minus the severity; +1 = perfect)
overall and per type, the clean faces' spread, and the synthetic-opinion blur test on the first 36 faces,
upsampled to 512 px (faces256 holds 256 px files) and blurred there. The classical baselines run once, as
reference rows. Then quality.py's section (8), the score change when all but the face is replaced, and its
section (9), the JPEG levels with the block grid moved off the image's.
``--cross-content-only`` skips the severity sweeps (about 10x faster) and writes JSON only
with ``--out``.

Usage: python benchmarks/heldout_severity.py [--weights W [W ...]] [--n 114] [--cross-content-only] [--out FILE]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from common import RESULTS, SHARED, machine, print_table, require, write_json
from ifqa_loss.io import load_folder
from ifqa_loss.regions import boxes_from_landmarks, template_boxes
from quality import (CROSS, LEVELS, SIZE, blur_opinion, cross_content, cross_table, degrade_8bit, grid_table,
                     jpeg_grid_sweep, make_scorers, spearman, surroundings)


def severity_and_mirror(scorer, faces: torch.Tensor) -> dict:
    """``scorer``: (N, 3, H, W) uint8 -> (N,) scores (quality.make_scorers); ``faces``: (N, 3, H, W) uint8."""
    def score(x):
        return scorer(x).numpy()

    res = {}
    for kind, levels in LEVELS.items():
        s = np.stack([score(degrade_8bit(faces, kind, level, seed=li)) for li, level in enumerate(levels)], 1)
        res[kind] = float(np.mean([spearman(row, np.arange(len(levels))) for row in s]))
    clean, mirrored = score(faces), score(faces.flip(-1))
    res["mirror_pearson"] = float(np.corrcoef(clean, mirrored)[0, 1])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", nargs="+", default=[None], help="weights paths or names (default: bundled)")
    ap.add_argument("--n", type=int, default=114, help="first N names of val.txt (114 = the size of hq_eval)")
    ap.add_argument("--cross-content-only", action="store_true",
                    help="only the cross-content sections; JSON only with --out")
    ap.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/heldout_severity.json; "
                    "none with --cross-content-only)")
    args = ap.parse_args()
    if args.n < 2:
        raise SystemExit("--n must be at least 2")
    out = args.out or (None if args.cross_content_only else str(RESULTS / "heldout_severity.json"))
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    root = require(SHARED / "data" / "faces256", "faces256")
    names = (root / "val.txt").read_text().split()[: args.n]
    names, faces = load_folder(root / "images", size=SIZE, names=names)
    n_blur = min(CROSS["blur_faces"], len(names))
    _, faces512 = load_folder(root / "images", size=CROSS["blur_size"], names=names[:n_blur])

    boxes = template_boxes(len(names))
    with np.load(root / "landmarks68.npz") as z:
        index = {str(n): i for i, n in enumerate(z["names"])}
        for j, name in enumerate(names):
            if name in index:
                boxes[j] = boxes_from_landmarks(torch.from_numpy(z["landmarks"][index[name]].astype(np.float32))[None],
                                                faces.shape[-1])[0]

    def cross_sections(scorers):
        return (cross_content(scorers, faces, names, CROSS["seed"]),
                blur_opinion(scorers, faces512, names[:n_blur], CROSS["blur_seed"]))

    results, rows = [], []
    baselines = None
    for w in args.weights:
        model, scorers = make_scorers(w, None, "cpu")
        if baselines is None:  # the baselines do not depend on the weights: once, in the same run
            cross, blur = cross_sections(scorers)
            baselines = {m: {"cross_content": cross[m], "blur_opinion": blur[m]} for m in scorers if m != "ifqa"}
        else:
            cross, blur = cross_sections({"ifqa": scorers["ifqa"]})
        entry = {"weights": model.weights_source}
        if not args.cross_content_only:
            entry.update(severity_and_mirror(scorers["ifqa"], faces))
        entry["cross_content"], entry["blur_opinion"] = cross["ifqa"], blur["ifqa"]
        clean = torch.tensor(cross["ifqa"]["clean_scores"])  # scored by the cross-content section already
        entry["surroundings"] = surroundings(scorers["ifqa"], faces, boxes, clean=clean)
        entry["jpeg_grid"] = jpeg_grid_sweep({"ifqa": scorers["ifqa"]}, faces, clean={"ifqa": clean})["ifqa"]
        results.append(entry)
        rows.append((str(w) if w is not None else model.weights_source, cross["ifqa"], blur["ifqa"]))
    rows += [(m, b["cross_content"], b["blur_opinion"]) for m, b in baselines.items()]

    if not args.cross_content_only:
        cols = [*LEVELS, "mirror_pearson"]
        print_table(f"held-out severity Spearman on {len(faces)} val.txt faces (-1 = score falls as severity "
                    "rises), and the correlation of each face's score with its mirror image's", ["weights", *cols],
                    [[r["weights"], *(r[c] for c in cols)] for r in results])
    cross_table(f"held-out cross-content Spearman(score, quality) on {len(faces)} val.txt faces, one degraded "
                f"version each (+1 = perfect; targets >= 0.85 overall, >= 0.75 every type), and Spearman(score, "
                f"synthetic opinion) on {n_blur} faces blurred at {CROSS['blur_size']} px (target >= 0.85; "
                f"oracle {blur['oracle_spearman']:.3f}); clean std, its ratio to the mean drop, share of pairs of "
                "different faces where the degraded one scores >= the clean one", rows)
    scenes = [k for k in results[0]["surroundings"] if k != "replaced_share"]
    print_table(f"score change with all but the face replaced (quality.py's (8); "
                f"{results[0]['surroundings']['replaced_share']:.0%} of the pixels): mean |change|, then mean change",
                ["weights", *scenes, *(f"{k} (signed)" for k in scenes)],
                [[label, *(r["surroundings"][k]["mean_abs_change"] for k in scenes),
                  *(r["surroundings"][k]["mean_change"] for k in scenes)] for (label, _, _), r in zip(rows, results)])
    grid_table("JPEG at the image's own block grid and at a moved one (quality.py's (9)): mean per-image "
               "Spearman(score, level; clean = level 0) and the mean score per level",
               [(label, r["jpeg_grid"]) for (label, _, _), r in zip(rows, results)])
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if out:
        draws = cross["draws"]
        write_json(Path(out), {"images": len(faces), "levels": LEVELS, "results": results,
                               "cross_settings": CROSS, "cross_draws": draws, "blur_faces": n_blur,
                               "blur_oracle_spearman": blur["oracle_spearman"], "blur_draws": blur["per_face"],
                               "baselines": baselines, "machine": machine(),
                               "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
