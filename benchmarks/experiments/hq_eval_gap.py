"""Why does a model that ranks held-out faces across persons rank hq_eval's less well?

The issue-29 candidates meet the cross-content targets on held-out ``val.txt`` faces (SCUT-FBP5500 studio
portraits, the training population) but not on ``hq_eval`` (CelebA-HQ and FFHQ). This experiment compares the two
sets at one severity (level 3 of quality.py's noise, JPEG and blur sweeps, one draw per face) and asks which
difference between them carries the gap, by moving one set towards the other in one property at a time:

  * brightness: a gain that brings the mean to the other set's (the sets' mean luminance differs most);
  * the training faces' own JPEG: faces256 are JPEG files (quality 95, 4:4:4), hq_eval PNGs;
  * sharpness: faces256 carry more high-pass energy (5x5 box residual); unsharp-mask hq_eval up to it and blur
    held-out faces down to hq_eval's;
  * the surroundings: the map's mean inside the landmark hull (jaw and raised brows) against outside it.

It also reports Spearman between the clean faces' scores and simple image statistics. An experiment on one
model's behaviour, not a benchmark: numbers go to docs/calibration.md. Writes JSON (default
benchmarks/results/hq_eval_gap.json).

Usage: python benchmarks/experiments/hq_eval_gap.py --weights FILE [--n 114] [--out FILE]
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common, quality

from quality import degrade_8bit, laplacian_variance, level_at, luma, sharpen, spearman  # noqa: E402

from common import RESULTS, SHARED, machine, print_table, require, write_json  # noqa: E402
from ifqa_loss import IFQA  # noqa: E402
from ifqa_loss.io import load_folder, to_float, to_uint8  # noqa: E402

KINDS = ["noise", "jpeg", "blur"]
SEVERITY = 3.0


def hull_masks(npz: Path, names: list[str], size: int, landmark_size: int) -> torch.Tensor:
    """(N, size, size) float masks of the face: the jaw line and the brows raised by 0.35 of the brow-to-chin
    height (the forehead). A face without landmarks gets an empty mask."""
    with np.load(npz) as z:
        index = {str(n): i for i, n in enumerate(z["names"])}
        points = z["landmarks"]
    masks = []
    for name in names:
        m = Image.new("L", (size, size), 0)
        if name in index:
            p = points[index[name]].astype(np.float64) * (size / landmark_size)
            brows = p[17:27][::-1].copy()
            brows[:, 1] -= 0.35 * (p[8, 1] - p[27, 1])
            ImageDraw.Draw(m).polygon([tuple(q) for q in np.concatenate([p[0:17], brows])], fill=1)
        masks.append(torch.from_numpy(np.asarray(m, dtype=np.float32)))
    return torch.stack(masks)


def jpeg95(u8: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 through a JPEG file at quality 95 without chroma subsampling (as faces256 was saved)."""
    out = []
    for x in u8:
        buf = io.BytesIO()
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=95, subsampling=0)
        out.append(torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1))
    return torch.stack(out)


def gain(u8: torch.Tensor, g: float) -> torch.Tensor:
    return (u8.float() * g).round().clamp(0, 255).to(torch.uint8)


def highpass_energy(u8: torch.Tensor) -> torch.Tensor:
    """(N,) mean square of the luma minus its 5x5 box mean."""
    g = luma(to_float(u8))
    return (g - F.avg_pool2d(g, 5, 1, 2, count_include_pad=False)).pow(2).mean((1, 2, 3))


def statistics(u8: torch.Tensor) -> dict[str, torch.Tensor]:
    x = to_float(u8)
    g = luma(x)
    return {"luminance": g.mean((1, 2, 3)), "contrast": g.std((1, 2, 3)),
            "saturation": (x.amax(1) - x.amin(1)).mean((1, 2)), "laplacian_variance": laplacian_variance(x),
            "highpass_energy": highpass_energy(u8)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="weights file or name (default: bundled)")
    ap.add_argument("--n", type=int, default=114, help="faces per set (first N of val.txt; all of hq_eval)")
    ap.add_argument("--out", default=str(RESULTS / "hq_eval_gap.json"))
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    model = IFQA(weights=args.weights).eval()
    faces_root = require(SHARED / "data" / "faces256", "faces256")
    hq_root = require(SHARED / "data" / "hq_eval", "hq_eval")
    held_names, held = load_folder(faces_root / "images", size=256,
                                   names=(faces_root / "val.txt").read_text().split()[: args.n])
    hq_names, hq = load_folder(hq_root, size=256)
    hq_names, hq = hq_names[: args.n], hq[: args.n]
    masks = {"heldout": hull_masks(faces_root / "landmarks68.npz", held_names, 256, 256),
             "hq_eval": hull_masks(hq_root / "landmarks68.npz", hq_names, 256, 512)}
    lum = {s: float(luma(to_float(u8)).mean()) for s, u8 in (("heldout", held), ("hq_eval", hq))}

    def run(u8: torch.Tensor, mask: torch.Tensor) -> dict:
        def parts(x):
            out = model(to_float(x))
            q = F.interpolate(out.map, size=256, mode="bilinear", align_corners=False)[:, 0]
            inside = (q * mask).sum((1, 2)) / mask.sum((1, 2)).clamp(min=1)
            outside = (q * (1 - mask)).sum((1, 2)) / (1 - mask).sum((1, 2))
            return out.score, inside, outside

        s, fi, fo = parts(u8)
        res = {"clean_scores": s.tolist(), "clean_mean": float(s.mean()), "clean_std": float(s.std()),
            "highpass_energy": float(highpass_energy(u8).mean()), "luminance": float(luma(to_float(u8)).mean()),
            "clean_face": float(fi.mean()), "clean_surroundings": float(fo.mean()),
            "spearman_score_surroundings": spearman(s.numpy(), fo.numpy())}
        for kind in KINDS:
            y = torch.cat([degrade_8bit(u8[i:i + 1], kind, level_at(kind, SEVERITY), seed=i) for i in range(len(u8))])
            s2, fi2, fo2 = parts(y)
            res[kind] = {"mean": float(s2.mean()), "std": float(s2.std()), "drop": float((s - s2).mean()),
                         "drop_face": float((fi - fi2).mean()), "drop_surroundings": float((fo - fo2).mean())}
        return res

    variants = {
        "heldout": ("heldout", held),
        f"heldout, gain to hq_eval's luminance ({lum['hq_eval'] / lum['heldout']:.2f})":
            ("heldout", gain(held, lum["hq_eval"] / lum["heldout"])),
        "heldout, blur 0.7": ("heldout", degrade_8bit(held, "blur", 0.7, seed=0)),
        "hq_eval": ("hq_eval", hq),
        f"hq_eval, gain to heldout's luminance ({lum['heldout'] / lum['hq_eval']:.2f})":
            ("hq_eval", gain(hq, lum["heldout"] / lum["hq_eval"])),
        "hq_eval, JPEG q95 4:4:4": ("hq_eval", jpeg95(hq)),
        "hq_eval, unsharp 1.0 px x0.5": ("hq_eval", to_uint8(sharpen(to_float(hq), 1.0, 0.5))),
        "hq_eval, unsharp 1.0 px x1.0": ("hq_eval", to_uint8(sharpen(to_float(hq), 1.0, 1.0))),
    }
    results = {name: run(u8, masks[s]) for name, (s, u8) in variants.items()}
    print_table(f"clean faces and level {SEVERITY:g} of each kind (one draw per face): mean score (drop from "
                "clean)", ["variant", "high-pass", "clean mean (std)", *KINDS],
                [[name, f"{r['highpass_energy']:.4f}", f"{r['clean_mean']:.3f} ({r['clean_std']:.3f})",
                  *[f"{r[k]['mean']:.3f} ({r[k]['drop']:.3f})" for k in KINDS]] for name, r in results.items()])
    print_table("drop inside the face hull / outside it", ["variant", *KINDS],
                [[name, *[f"{r[k]['drop_face']:.3f} / {r[k]['drop_surroundings']:.3f}" for k in KINDS]]
                 for name, r in results.items()])
    correlations = {}
    for s, u8 in (("heldout", held), ("hq_eval", hq)):
        scores = np.array(results[s]["clean_scores"])  # the unmoved sets' clean scores, from run()
        correlations[s] = {k: spearman(v.numpy(), scores) for k, v in statistics(u8).items()}
    print_table("Spearman(clean score, image statistic)", ["set", *correlations["heldout"]],
                [[s, *[f"{v:+.2f}" for v in c.values()]] for s, c in correlations.items()])
    write_json(Path(args.out), {"weights": args.weights, "faces": {"heldout": len(held), "hq_eval": len(hq)},
                                "severity": SEVERITY, "luminance": lum,
                                "variants": results, "clean_score_vs_statistic": correlations,
                                "machine": machine(), "seconds": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
