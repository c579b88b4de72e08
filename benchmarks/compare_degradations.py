"""``ifqa compare`` on hq_eval degraded two ways: does it report the expected direction, significantly?

The HQ faces are resized to 256 x 256 with the library's resize (as ``benchmarks/quality.py`` does), then degraded
with :func:`ifqa_loss.train.degradations.degrade` into a temporary folder per degradation: JPEG at quality 30 and
Gaussian blur of sigma 2 px. Expected before running, from the severity sweep of ``benchmarks/results/quality.json``
(mean IFQA at 256 px: JPEG q30 0.67, blur sigma 1.9 0.44 and 2.6 0.22): the blurred faces score lower, so
``mean_diff`` (jpeg - blur) > 0 with both paired p-values < 0.01. PSNR and SSIM against the HQ faces, and identity
and landmarks when the faces extra is installed, are reported beside.

Writes ``benchmarks/results/compare_degradations.json`` (the pairs, the per-method means, the check) and, with
``--report DIR``, keeps the HTML report there (default: a temporary folder, removed).

Usage: python benchmarks/compare_degradations.py [--subset N] [--report DIR] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from PIL import Image

from common import RESULTS, SHARED, machine, require, write_json
from ifqa_loss.cli import main as ifqa_main
from ifqa_loss.io import load_folder, to_float, to_uint8
from ifqa_loss.train.degradations import degrade

DEGRADATIONS = {"jpeg_q30": ("jpeg", 30), "blur_s2": ("blur", 2.0)}
SIZE = 256


def make_sets(hq: Path, root: Path, subset: int | None) -> list[Path]:
    """``root/hq`` (the resized HQ faces, the reference) and one folder per degradation; returns the latter."""
    names, faces = load_folder(hq, size=SIZE, limit=subset)
    folders = []
    for label, (kind, level) in [("hq", (None, None)), *DEGRADATIONS.items()]:
        d = root / label
        d.mkdir(parents=True)
        out = faces if kind is None else to_uint8(degrade(to_float(faces), kind, level, seed=0))
        for name, img in zip(names, out):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / Path(name).with_suffix(".png").name)
        if kind is not None:
            folders.append(d)
    return folders


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (platform.processor() says only x86_64 on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED / "data" / "hq_eval"))
    ap.add_argument("--subset", type=int, default=None, help="first N faces only (a quick check)")
    ap.add_argument("--weights", default=None, help="IFQA weights (default: bundled ifqa-lite)")
    ap.add_argument("--report", default=None, help="keep the report folder here")
    ap.add_argument("--out", default=str(RESULTS / "compare_degradations.json"))
    args = ap.parse_args()
    hq = require(Path(args.data), "hq_eval")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="ifqa-compare-") as tmp:
        folders = make_sets(hq, Path(tmp), args.subset)
        report = Path(args.report) if args.report else Path(tmp) / "report"
        argv = ["compare", *map(str, folders), "--names", *DEGRADATIONS, "--reference", str(Path(tmp) / "hq"),
                "--report", str(report), "--no-progress"]
        if args.weights:
            argv += ["--weights", args.weights]
        rc = ifqa_main(argv)
        res = json.loads((report / "results.json").read_text())
    pair = res["pairs"][0]
    ok = pair["a"] == "jpeg_q30" and pair["mean_diff"] > 0 and pair["p_permutation"] < 0.01 \
        and pair["p_wilcoxon"] < 0.01
    out = {"expected": "jpeg_q30 scores higher than blur_s2 (mean_diff > 0), both p < 0.01",
           "passed": ok, "exit_status": rc, "size": SIZE, "degradations": DEGRADATIONS, "n_faces": res["n_faces"],
           "pairs": res["pairs"], "pairs_by_metric": res["pairs_by_metric"], "methods": res["methods"],
           "unmatched": res["unmatched"], "ifqa_model": res["ifqa_model"],
           "face_metrics": res.get("face_metrics", "measured"), "machine": {**machine(), "cpu_name": cpu_name()},
           "seconds": round(time.time() - t0, 1)}
    write_json(Path(args.out), out)
    print(f"expected direction: {'yes' if ok else 'NO'} (mean diff {pair['mean_diff']:+.4f}, "
          f"p sign-flip {pair['p_permutation']:.2e}, p Wilcoxon {pair['p_wilcoxon']:.2e})")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
