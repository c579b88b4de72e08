"""Quality benchmark: does the score track degradation severity, separate real LQ faces, and focus on
eyes/nose/mouth?  Prints tables and writes JSON; baselines are computed in the same run.

Every IFQA score here is what ``ifqa score`` computes: :meth:`ifqa_loss.IFQA.score_images` on 8-bit images.
Section (2) scores the files themselves, at their own sizes; the others build 256x256 test faces with the
library's resize policy (:func:`ifqa_loss.io.load_folder`), degrade them with
:mod:`ifqa_loss.train.degradations`, round them to 8 bits as a saved file would be, and score those.
The classical baselines (Laplacian variance, Tenengrad) see the same 8-bit 256x256 faces.

  (1) severity: 5 increasing levels of blur, noise, JPEG, down-up sampling and a mix on hq_eval;
      per image, Spearman(score, level); mean per type (-1 = score falls as severity rises).
  (2) real LQ: ROC AUC separating hq_eval from real low-quality crops (lq_real), and per crop how many
      HQ faces score at or below it (the pairs the AUC loses). The JSON keeps each file's IFQA score.
  (3) primary regions: mean score drop when only eyes, nose and mouth are degraded, divided by the drop
      when the same area elsewhere on the face is degraded the same way.
  (4) over-sharpening (a diagnostic, no target): share of faces whose blurred-then-unsharp-masked version
      scores at or above the clean face. A loss that rewards sharpening halos teaches a generator to add them.
  (5) mirror consistency (a diagnostic, no target): how much the score of a face changes when it is mirrored
      left-right, in units of the spread of the clean faces' scores, and the correlation of the two scores.

Spearman is scipy's ``spearmanr``; the ROC AUC is scipy's Mann-Whitney U over the number of pairs (ties count
half; torchmetrics' ``binary_auroc`` would squash the baselines' scores, which exceed 1, through a sigmoid).

Usage: python benchmarks/quality.py [--weights ifqa-lite] [--subset N] [--out FILE]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import mannwhitneyu, spearmanr

from common import RESULTS, SHARED, machine, print_table, require, write_json
from ifqa_loss import IFQA
from ifqa_loss.io import list_images, load_folder, to_float, to_uint8
from ifqa_loss.regions import boxes_from_landmarks, region_masks
from ifqa_loss.train.degradations import degrade, sharpen

SIZE = 256
DATA = SHARED / "data"
LEVELS = {
    "blur": [0.8, 1.3, 1.9, 2.6, 3.5],  # Gaussian sigma (px at 256)
    "noise": [3.0, 6.0, 10.0, 15.0, 22.0],  # Gaussian sigma (8-bit levels)
    "jpeg": [85, 65, 45, 30, 18],  # quality
    "downup": [1.5, 2.0, 3.0, 4.0, 6.0],  # factor
    "mixed": [1, 2, 3, 4, 5],  # all four at once, scaled by the level (ifqa_loss.train.degradations.SWEEP_KINDS)
}
LQ_SETS = ["codeformer_cropped", "gfpgan_cropped", "diffbir_aligned", "gpen_val_pairs/lq"]
# (4): Gaussian blur sigma, then an unsharp mask of this radius and amount
SHARPEN = {"blur_sigma": [1.0, 1.5], "unsharp_amount": [1.0, 2.0, 4.0], "unsharp_radius": 1.5}


def degrade_8bit(faces: torch.Tensor, kind: str, level, seed: int = 0) -> torch.Tensor:
    """(N, 3, H, W) uint8 faces degraded by ``kind`` at ``level``, rounded back to uint8."""
    return to_uint8(degrade(to_float(faces), kind, level, seed))


# ---------------------------------------------------------------- metrics


LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def luma(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) BT.601 luma, same range."""
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]


def laplacian_variance(x: torch.Tensor) -> torch.Tensor:
    """Variance of the Laplacian of the luma: the classic sharpness score (higher = sharper)."""
    return F.conv2d(luma(x) * 255, LAPLACIAN[None, None]).var(dim=(1, 2, 3))


def tenengrad(x: torch.Tensor) -> torch.Tensor:
    """Mean squared Sobel gradient magnitude of the luma (higher = sharper)."""
    y = luma(x) * 255
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])[None, None]
    gx, gy = F.conv2d(y, kx), F.conv2d(y, kx.transpose(-1, -2))
    return (gx.square() + gy.square()).mean(dim=(1, 2, 3))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (scipy; ties get average ranks); 0 where either side is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive scores above a negative, ties counting half: Mann-Whitney U / pairs (scipy)."""
    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


# ---------------------------------------------------------------- data and scorers


def make_scorers(weights, backbone, device, batch_size: int = 16):
    """The model and the scorers: each takes 8-bit images, a (N, 3, H, W) uint8 batch (or, for ``ifqa``, a list of
    files or uint8 images of any sizes), and returns (N,) scores on the CPU."""
    model = IFQA(backbone=backbone, weights=weights).to(device)

    def ifqa(images) -> torch.Tensor:
        return model.score_images(list(images), batch_size=batch_size).score.cpu()

    return model, {"ifqa": ifqa, "laplacian_var": lambda u8: laplacian_variance(to_float(u8)),
                   "tenengrad": lambda u8: tenengrad(to_float(u8))}


def real_lq_files() -> list[tuple[str, Path]]:
    """``(set/name, path)`` of every lq_real crop, set by set."""
    return [(f"{lq_set}/{p.name}", p) for lq_set in LQ_SETS
            for p in list_images(require(DATA / "lq_real" / lq_set, lq_set))]


def control_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Same-size boxes on non-primary facial skin, scaled by the inter-ocular distance d:
    eyes -> forehead (up 0.6 d), nose -> right cheek (right 0.6 d), mouth -> chin (down 0.45 d)."""
    eye_l = (boxes[:, 0, :2] + boxes[:, 0, 2:]) / 2
    eye_r = (boxes[:, 1, :2] + boxes[:, 1, 2:]) / 2
    d = (eye_r - eye_l).norm(dim=1)[:, None]
    unit = torch.tensor([[0.0, -0.6], [0.0, -0.6], [0.6, 0.0], [0.0, 0.45]])[None]
    return boxes + (unit * d[:, :, None]).repeat(1, 1, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="weights path or registered name (default: bundled ifqa-lite)")
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--subset", type=int, default=None, help="use only the first N hq_eval images")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(RESULTS / "quality.json"))
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    hq_dir = require(DATA / "hq_eval", "hq_eval")
    hq_files = list_images(hq_dir, limit=args.subset)
    names, hq = load_folder(hq_dir, size=SIZE, names=[p.name for p in hq_files])  # uint8 (N, 3, 256, 256)
    model, scorers = make_scorers(args.weights, args.backbone, args.device)
    print(f"IFQA {model.backbone} ({model.weights_source}) on {len(names)} hq_eval faces; 8-bit {SIZE}x{SIZE} test "
          "faces (library resize), real-LQ section on the files as ifqa score reads them")

    # (1) severity ranking
    severity = {m: {} for m in scorers}
    for kind, levels in LEVELS.items():
        scores = {m: [] for m in scorers}
        for li, level in enumerate(levels):
            y = degrade_8bit(hq, kind, level, seed=li)
            for m, f in scorers.items():
                scores[m].append(f(y).numpy())
        for m in scorers:
            s = np.stack(scores[m], 1)  # (images, levels)
            rho = [spearman(s[i], np.arange(len(levels))) for i in range(len(s))]
            severity[m][kind] = {"mean_spearman": float(np.mean(rho)), "mean_score_per_level": s.mean(0).tolist()}
    rows = [[m] + [severity[m][k]["mean_spearman"] for k in LEVELS] for m in scorers]
    print_table("(1) mean per-image Spearman(score, severity); -1 = perfect", ["metric", *LEVELS], rows)

    # (2) real-world LQ: IFQA on the files at their own sizes (ifqa score's path), baselines on the 8-bit 256 faces
    lq_names, lq_files = zip(*real_lq_files())
    lq = torch.cat([load_folder(DATA / "lq_real" / lq_set, size=SIZE)[1] for lq_set in LQ_SETS])
    hq_ifqa, lq_ifqa = scorers["ifqa"](hq_files), scorers["ifqa"](lq_files)
    per_file = {**{f"hq_eval/{n}": float(v) for n, v in zip(names, hq_ifqa)},
                **{f"lq_real/{n}": float(v) for n, v in zip(lq_names, lq_ifqa)}}
    auc = {}
    for m, f in scorers.items():
        hq_s, lq_s = (hq_ifqa.numpy(), lq_ifqa.numpy()) if m == "ifqa" else (f(hq).numpy(), f(lq).numpy())
        # the LQ crops that cost AUC: how many HQ faces score at or below each one
        beaten = sorted(((name, int((hq_s <= v).sum())) for name, v in zip(lq_names, lq_s)), key=lambda t: -t[1])
        auc[m] = {"auc": roc_auc(hq_s, lq_s), "hq_mean": float(hq_s.mean()), "lq_mean": float(lq_s.mean()),
                  "hq_at_or_below_lq": {name: n for name, n in beaten if n}}
    print_table(f"(2) ROC AUC hq_eval ({len(hq)}) vs lq_real ({len(lq)})",
                ["metric", "AUC", "HQ mean", "LQ mean", "worst LQ crop (HQ faces at or below it)"],
                [[m, v["auc"], v["hq_mean"], v["lq_mean"],
                  next((f"{k} ({n})" for k, n in v["hq_at_or_below_lq"].items()), "-")] for m, v in auc.items()])

    # (3) primary-region sensitivity
    with np.load(hq_dir / "landmarks68.npz") as z:
        lm = {str(n): torch.from_numpy(z["landmarks"][i].astype(np.float32)) for i, n in enumerate(z["names"])}
    keep = [i for i, n in enumerate(names) if n in lm]
    x = to_float(hq[keep])
    boxes = boxes_from_landmarks(torch.stack([lm[names[i]] for i in keep]), 512)
    primary = region_masks(boxes, SIZE)
    control = region_masks(control_boxes(boxes), SIZE) * (1 - primary)
    region = {m: {} for m in scorers}
    for kind, level in [("blur", 2.6), ("noise", 15.0), ("jpeg", 30), ("mixed", 3)]:
        y = degrade(x, kind, level, seed=7)
        for m, f in scorers.items():
            base = f(hq[keep])
            d_p = (base - f(to_uint8(x * (1 - primary) + y * primary))).mean().item()
            d_c = (base - f(to_uint8(x * (1 - control) + y * control))).mean().item()
            region[m][kind] = {"drop_primary": d_p, "drop_control": d_c,
                               "ratio": d_p / d_c if d_c > 0 else float("inf") if d_p > 0 else float("nan")}
    area = {"primary_px": float(primary.sum((1, 2, 3)).mean()), "control_px": float(control.sum((1, 2, 3)).mean())}
    print_table(f"(3) score drop, primary regions / same area elsewhere ({len(keep)} faces; mean area "
                f"{area['primary_px']:.0f} vs {area['control_px']:.0f} px)", ["metric", *region["ifqa"]],
                [[m] + [r["ratio"] for r in region[m].values()] for m in scorers])

    # (4) over-sharpening
    sharpen_share = {m: [] for m in scorers}
    clean = {m: f(hq) for m, f in scorers.items()}
    for sigma in SHARPEN["blur_sigma"]:
        soft = degrade(to_float(hq), "blur", sigma)
        for amount in SHARPEN["unsharp_amount"]:
            y = to_uint8(sharpen(soft, SHARPEN["unsharp_radius"], amount))
            for m, f in scorers.items():
                sharpen_share[m].append({"blur_sigma": sigma, "unsharp_amount": amount,
                                         "share_at_or_above_clean": float((f(y) >= clean[m]).float().mean())})
    settings = [f"blur {e['blur_sigma']} + unsharp {e['unsharp_amount']}" for e in sharpen_share["ifqa"]]
    print_table(f"(4) share of faces scoring at or above their clean version after blur + unsharp mask (radius "
                f"{SHARPEN['unsharp_radius']}); 0 = never fooled", ["metric", *settings],
                [[m] + [e["share_at_or_above_clean"] for e in sharpen_share[m]] for m in scorers])

    # (5) mirror consistency
    mirror = {}
    for m, f in scorers.items():
        a, b = clean[m].numpy(), f(hq.flip(-1)).numpy()
        mirror[m] = {"mean_abs_change_over_std": float(np.abs(a - b).mean() / a.std()),
                     "pearson": float(np.corrcoef(a, b)[0, 1])}
    print_table("(5) mirror consistency on hq_eval: mean |score - score of the mirrored face| / std of scores (0 = "
                "invariant), and their correlation", ["metric", "mean change / std", "correlation"],
                [[m, v["mean_abs_change_over_std"], v["pearson"]] for m, v in mirror.items()])

    summary = {
        "severity_worst_type": {m: max(v["mean_spearman"] for v in severity[m].values()) for m in scorers},
        "auc": {m: auc[m]["auc"] for m in scorers},
        "region_ratio_mixed": {m: region[m]["mixed"]["ratio"] for m in scorers},
        "sharpened_at_or_above_clean_worst": {m: max(e["share_at_or_above_clean"] for e in sharpen_share[m])
                                              for m in scorers},
    }
    print_table("summary (acceptance: worst-type Spearman <= -0.95, AUC >= 0.95, region ratio >= 1.5)",
                ["metric", "worst Spearman", "AUC", "region ratio (mixed)"],
                [[m, summary["severity_worst_type"][m], summary["auc"][m], summary["region_ratio_mixed"][m]]
                 for m in scorers])
    write_json(Path(args.out), {
        "model": {"backbone": model.backbone, "weights": model.weights_source}, "images": len(names),
        "lq_images": len(lq_names),
        "levels": LEVELS, "severity": severity, "real_lq": auc, "ifqa_score_per_file": per_file,
        "regions": region, "region_area": area, "sharpen_levels": SHARPEN, "over_sharpening": sharpen_share,
        "mirror": mirror, "summary": summary, "machine": machine(), "seconds": round(time.perf_counter() - t0, 1),
    })


if __name__ == "__main__":
    main()
