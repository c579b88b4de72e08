"""Severity line: does each kind's score fall along the same line of the benchmark's levels?

The cross-content ranking of quality.py (section 6) counts level k of every kind as equally bad, so a model ranks
mixed kinds well only if its mean score at level k is about the same for every kind. This prints, per kind and
level of :data:`ifqa_loss.train.degradations.SWEEP_LEVELS`, the mean and standard deviation of the scores of N
faces, beside the line that ``ifqa train --level-weight`` trains towards (``--calib-target`` 0.9 at level 0 down
to ``--level-floor`` 0.05 at ``SWEEP_SPAN`` 6). The gap between a kind's curve and the others' says which kind
breaks the overall order; the per-level standard deviation says how much the person moves the score.

The faces are half B of faces256's train split (the split minus val.txt, shuffled with random.Random(0), from
name 2,517 on): the bundled model's recipe and the candidates trained on half A never saw them, and val.txt stays
untouched for the held-out benchmark. ``--half a`` takes the first N faces of half A instead, the candidates' own
training faces: a per-level spread as large there as on half B says the model does not fit the line even where it
trained, rather than that it fails to carry it to new faces. Images are degraded by quality.py's ``degrade_8bit``
(8-bit, as files) and scored as ``ifqa score`` scores them. An experiment for choosing training settings, not a
benchmark.

Usage: python benchmarks/experiments/severity_line.py [--weights W [W ...]] [--n 48] [--half b|a] [--out FILE]
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common, quality

from common import SHARED, machine, print_table, require, write_json  # noqa: E402
from quality import degrade_8bit, make_scorers  # noqa: E402

from ifqa_loss.io import load_image  # noqa: E402
from ifqa_loss.train.degradations import SWEEP_LEVELS  # noqa: E402
from ifqa_loss.train.robust import SWEEP_SPAN  # noqa: E402

HALF_A = 2517  # half A: the first 2,517 names of the shuffled train split (bundle and candidates train there)


def half_names(faces: Path, n: int, half: str = "b") -> list[str]:
    """The first ``n`` names of half B (never trained on) or of half A (the candidates' own training faces)."""
    names = sorted(p.name for p in (faces / "images").iterdir())
    val = set((faces / "val.txt").read_text().split())
    train = [x for x in names if x not in val]
    random.Random(0).shuffle(train)
    return train[HALF_A:HALF_A + n] if half == "b" else train[:min(n, HALF_A)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", nargs="+", default=["ifqa-lite"], help="weights paths or registered names")
    ap.add_argument("--n", type=int, default=48, help="number of faces")
    ap.add_argument("--half", choices=["a", "b"], default="b",
                    help="b: faces no candidate trained on (default); a: their own training faces, to tell a model "
                         "that cannot fit the line from one that does not generalise it")
    ap.add_argument("--top", type=float, default=0.9, help="the line at level 0 (--calib-target)")
    ap.add_argument("--floor", type=float, default=0.05, help="the line at SWEEP_SPAN (--level-floor)")
    ap.add_argument("--out", default=None, help="JSON file (none by default)")
    args = ap.parse_args()
    faces_dir = require(SHARED / "data" / "faces256", "faces256")
    names = half_names(faces_dir, args.n, args.half)
    faces = torch.stack([load_image(faces_dir / "images" / x) for x in names])
    line = [args.top - (args.top - args.floor) * k / SWEEP_SPAN for k in range(6)]
    degraded = {kind: [degrade_8bit(faces, kind, lv, seed=3) for lv in levels] for kind, levels in SWEEP_LEVELS.items()}
    results = {}
    for label in args.weights:
        score = make_scorers(label, None, "cpu")[1]["ifqa"]
        clean = score(faces).numpy()
        res = {"clean": [float(clean.mean()), float(clean.std())]}
        rows = [["line", *(f"{v:.3f}" for v in line)], ["clean", f"{clean.mean():.3f}±{clean.std():.3f}", *[""] * 5]]
        for kind, batches in degraded.items():
            s = [score(b).numpy() for b in batches]
            res[kind] = [[float(v.mean()), float(v.std())] for v in s]
            rows.append([kind, f"{clean.mean():.3f}", *(f"{v.mean():.3f}±{v.std():.3f}" for v in s)])
        # per level, the gap between the highest and the lowest kind's mean score
        spread = [max(res[k][i][0] for k in SWEEP_LEVELS) - min(res[k][i][0] for k in SWEEP_LEVELS) for i in range(5)]
        res["kind_spread_per_level"] = spread
        results[label] = res
        print_table(f"{label}: mean±sd score per sweep level, {len(names)} half-{args.half.upper()} faces (line: the "
                    f"level term's target; widest gap between kinds at one level {max(spread):.3f})",
                    ["kind", "level 0", *(f"level {k}" for k in range(1, 6))], rows)
    if args.out:
        write_json(Path(args.out), {"half": args.half, "faces": names, "levels": SWEEP_LEVELS, "line": line,
                                    "results": results, "machine": machine()})


if __name__ == "__main__":
    main()
