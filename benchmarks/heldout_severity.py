"""Held-out severity check: section (1) of quality.py on faces that no choice was made on.

quality.py's hq_eval faces were looked at while choosing the bundled model's stage lengths and settings, so
its figures there are optimistic. This runs the same five severity sweeps (same levels, same seeds) and the
mirror check on the first N names of faces256's val.txt, which is held out from training and was not used
to pick anything. Several weights can be compared in one run. As in quality.py, the faces (256x256 files) are
degraded, rounded to 8 bits and scored as ``ifqa score`` scores files (:meth:`ifqa_loss.IFQA.score_images`).

Usage: python benchmarks/heldout_severity.py [--weights W [W ...]] [--n 114] [--out FILE]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from common import RESULTS, SHARED, machine, print_table, require, write_json
from ifqa_loss.io import load_folder
from quality import LEVELS, SIZE, degrade_8bit, make_scorers, spearman


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
    ap.add_argument("--out", default=str(RESULTS / "heldout_severity.json"))
    args = ap.parse_args()
    if args.n < 2:
        raise SystemExit("--n must be at least 2")
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    root = require(SHARED / "data" / "faces256", "faces256")
    names = (root / "val.txt").read_text().split()[: args.n]
    _, faces = load_folder(root / "images", size=SIZE, names=names)

    results = []
    for w in args.weights:
        model, scorers = make_scorers(w, None, "cpu")
        results.append({"weights": model.weights_source, **severity_and_mirror(scorers["ifqa"], faces)})
    cols = [*LEVELS, "mirror_pearson"]
    print_table(f"held-out severity Spearman on {len(faces)} val.txt faces (-1 = score falls as severity rises), "
                "and the correlation of each face's score with its mirror image's", ["weights", *cols],
                [[r["weights"], *(r[c] for c in cols)] for r in results])
    write_json(Path(args.out), {"images": len(faces), "levels": LEVELS, "results": results, "machine": machine(),
                                "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
