"""Quality benchmark: does the score track degradation severity, separate real LQ faces, and focus on
eyes/nose/mouth?  Prints tables and writes JSON; baselines are computed in the same run.

  (1) severity: 5 increasing levels of blur, noise, JPEG, down-up sampling and a mix on hq_eval;
      per image, Spearman(score, level); mean per type (-1 = score falls as severity rises).
  (2) real LQ: ROC AUC separating hq_eval from real low-quality crops (lq_real), and per crop how many
      HQ faces score at or below it (the pairs the AUC loses).
  (3) primary regions: mean score drop when only eyes, nose and mouth are degraded, divided by the drop
      when the same area elsewhere on the face is degraded the same way.
  (4) over-sharpening (a diagnostic, no target): share of faces whose blurred-then-unsharp-masked version
      scores at or above the clean face. A loss that rewards sharpening halos teaches a generator to add them.
  (5) mirror consistency (a diagnostic, no target): how much the score of a face changes when it is mirrored
      left-right, in units of the spread of the clean faces' scores, and the correlation of the two scores.

Usage: python benchmarks/quality.py [--weights ifqa-lite] [--subset N] [--out FILE]
"""
from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from common import RESULTS, SHARED, machine, print_table, require, write_json

from ifqa_loss import IFQA
from ifqa_loss.io import load_image
from ifqa_loss.regions import boxes_from_landmarks, region_masks

SIZE = 256
LEVELS = {
    "blur": [0.8, 1.3, 1.9, 2.6, 3.5],  # Gaussian sigma (px at 256)
    "noise": [3.0, 6.0, 10.0, 15.0, 22.0],  # Gaussian sigma (8-bit levels)
    "jpeg": [85, 65, 45, 30, 18],  # quality
    "downup": [1.5, 2.0, 3.0, 4.0, 6.0],  # factor
    "mixed": [1, 2, 3, 4, 5],  # all four at once, scaled by the level
}
LQ_SETS = ["codeformer_cropped", "gfpgan_cropped", "diffbir_aligned", "gpen_val_pairs/lq"]
SHARPEN = {"blur": [1.0, 1.5], "amount": [1.0, 2.0, 4.0], "radius": 1.5}  # (4): blur sigma, then unsharp mask


# ---------------------------------------------------------------- degradations (deterministic)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    import kornia

    k = 2 * int(np.ceil(3 * sigma)) + 1
    return kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")


def add_noise(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + torch.randn(x.shape, generator=g) * sigma / 255.0).clamp(0, 1)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    out = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray((img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=int(quality))
        out.append(torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def unsharp(x: torch.Tensor, radius: float, amount: float) -> torch.Tensor:
    return (x + amount * (x - gaussian_blur(x, radius))).clamp(0, 1)


def down_up(x: torch.Tensor, factor: float) -> torch.Tensor:
    small = F.interpolate(x, scale_factor=1 / factor, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=x.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)


def degrade(x: torch.Tensor, kind: str, level, seed: int = 0) -> torch.Tensor:
    if kind == "blur":
        return gaussian_blur(x, level)
    if kind == "noise":
        return add_noise(x, level, seed)
    if kind == "jpeg":
        return jpeg(x, level)
    if kind == "downup":
        return down_up(x, level)
    if kind == "mixed":
        y = gaussian_blur(x, 0.4 * level)
        y = down_up(y, 1.0 + 0.5 * level)
        y = add_noise(y, 2.5 * level, seed)
        return jpeg(y, 95 - 12 * level)
    raise ValueError(kind)


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
    def rank(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for val in np.unique(v):  # average ranks of ties
            m = v == val
            r[m] = r[m].mean()
        return r

    ra, rb = rank(np.asarray(a, float)), rank(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


# ---------------------------------------------------------------- data


def load_dir(folder, names=None, limit=None):
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if names is not None:
        files = [p for p in files if p.name in names]
    files = files[:limit] if limit else files
    imgs = []
    for p in files:
        x = load_image(p)[None].float() / 255
        imgs.append(F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1))
    return [p.name for p in files], torch.cat(imgs)


def make_scorers(weights, backbone, device):
    model = IFQA(backbone=backbone, weights=weights).to(device)

    @torch.inference_mode()
    def ifqa(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(b.to(device)).score.cpu() for b in x.split(16)])

    return model, {"ifqa": ifqa, "laplacian_var": laplacian_variance, "tenengrad": tenengrad}


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
    hq_dir = require(SHARED / "data" / "hq_eval", "hq_eval")
    names, hq = load_dir(hq_dir, limit=args.subset)
    model, scorers = make_scorers(args.weights, args.backbone, args.device)
    print(f"IFQA {model.backbone} ({model.weights_source}) on {len(names)} hq_eval faces at {SIZE}x{SIZE}")

    # (1) severity ranking
    severity = {m: {} for m in scorers}
    for kind, levels in LEVELS.items():
        scores = {m: [] for m in scorers}
        for li, level in enumerate(levels):
            y = degrade(hq, kind, level, seed=li)
            for m, f in scorers.items():
                scores[m].append(f(y).numpy())
        for m in scorers:
            s = np.stack(scores[m], 1)  # (images, levels)
            rho = [spearman(s[i], np.arange(len(levels))) for i in range(len(s))]
            severity[m][kind] = {"mean_spearman": float(np.mean(rho)), "mean_score_per_level": s.mean(0).tolist()}
    rows = [[m] + [severity[m][k]["mean_spearman"] for k in LEVELS] for m in scorers]
    print_table("(1) mean per-image Spearman(score, severity); -1 = perfect", ["metric", *LEVELS], rows)

    # (2) real-world LQ
    lq_root = SHARED / "data" / "lq_real"
    lq_names, lq = [], []
    for lq_set in LQ_SETS:
        crop_names, x = load_dir(require(lq_root / lq_set, lq_set))
        lq_names += [f"{lq_set}/{name}" for name in crop_names]
        lq.append(x)
    lq = torch.cat(lq)
    auc = {}
    for m, f in scorers.items():
        hq_s, lq_s = f(hq).numpy(), f(lq).numpy()
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
    x = hq[keep]
    boxes = boxes_from_landmarks(torch.stack([lm[names[i]] for i in keep]), 512)
    primary = region_masks(boxes, SIZE)
    control = region_masks(control_boxes(boxes), SIZE) * (1 - primary)
    region = {m: {} for m in scorers}
    for kind, level in [("blur", 2.6), ("noise", 15.0), ("jpeg", 30), ("mixed", 3)]:
        y = degrade(x, kind, level, seed=7)
        for m, f in scorers.items():
            base = f(x)
            d_p = (base - f(x * (1 - primary) + y * primary)).mean().item()
            d_c = (base - f(x * (1 - control) + y * control)).mean().item()
            region[m][kind] = {"drop_primary": d_p, "drop_control": d_c,
                               "ratio": d_p / d_c if d_c > 0 else float("inf") if d_p > 0 else float("nan")}
    area = {"primary_px": float(primary.sum((1, 2, 3)).mean()), "control_px": float(control.sum((1, 2, 3)).mean())}
    print_table(f"(3) score drop, primary regions / same area elsewhere ({len(keep)} faces; mean area "
                f"{area['primary_px']:.0f} vs {area['control_px']:.0f} px)", ["metric", "blur", "noise", "jpeg", "mixed"],
                [[m] + [region[m][k]["ratio"] for k in ("blur", "noise", "jpeg", "mixed")] for m in scorers])

    # (4) over-sharpening
    sharpen = {m: {} for m in scorers}
    clean = {m: f(hq) for m, f in scorers.items()}
    for sigma in SHARPEN["blur"]:
        soft = gaussian_blur(hq, sigma)
        for amount in SHARPEN["amount"]:
            y = unsharp(soft, SHARPEN["radius"], amount)
            for m, f in scorers.items():
                sharpen[m][f"blur {sigma} + unsharp {amount}"] = float((f(y) >= clean[m]).float().mean())
    settings = list(sharpen["ifqa"])
    print_table(f"(4) share of faces scoring at or above their clean version after blur + unsharp mask (radius "
                f"{SHARPEN['radius']}); 0 = never fooled", ["metric", *settings],
                [[m] + [sharpen[m][k] for k in settings] for m in scorers])

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
        "sharpened_at_or_above_clean_worst": {m: max(sharpen[m].values()) for m in scorers},
    }
    print_table("summary (acceptance: worst-type Spearman <= -0.95, AUC >= 0.95, region ratio >= 1.5)",
                ["metric", "worst Spearman", "AUC", "region ratio (mixed)"],
                [[m, summary["severity_worst_type"][m], summary["auc"][m], summary["region_ratio_mixed"][m]]
                 for m in scorers])
    write_json(__import__("pathlib").Path(args.out), {
        "model": {"backbone": model.backbone, "weights": model.weights_source}, "images": len(names),
        "lq_images": len(lq_names),
        "levels": LEVELS, "severity": severity, "real_lq": auc, "regions": region, "region_area": area,
        "sharpen_levels": SHARPEN, "over_sharpening": sharpen, "mirror": mirror,
        "summary": summary, "machine": machine(), "seconds": round(time.perf_counter() - t0, 1),
    })


if __name__ == "__main__":
    main()
