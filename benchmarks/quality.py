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
  (6) cross-content ranking: one degraded version per face, every face a different person. The types are
      dealt out evenly over the faces and each face gets a severity drawn uniformly in [1, 5] on the scale of
      (1) (1 = the first level of LEVELS, 5 = the last, linear in between), all from a fixed seed. Spearman of
      the score with the quality (= minus the severity; +1 = perfect) over all faces and per type, with a
      bootstrap 90% interval; and the spread of the clean faces' scores, on its own and against the drops.
  (7) synthetic-opinion blur test: CROSS["blur_faces"] faces at 512 px, each blurred once with a Gaussian
      sigma drawn uniformly in [0, 4] (px at 512), opinion = 5 - sigma + N(0, 0.2); Spearman(score, opinion)
      (+1 = perfect). The opinion's own noise caps it: "oracle" is the Spearman of 5 - sigma itself.
  (8) surroundings (a diagnostic, no target): the clean faces with everything beyond the face (past 1.3 face
      radii of the ellipse the eye and mouth boxes place, fully from 1.7) replaced by a flat grey, a
      sharp 1/f texture, or their own surroundings blurred (sigma 4 px): the mean score change and mean absolute
      change. The face is untouched, so a face-quality score should hardly move.
  (9) JPEG off the grid (a diagnostic, no target): the JPEG levels of (1) with each face's 8x8 / 16x16 block
      grid moved by an offset that is not a multiple of 8 (drawn per face from a fixed seed), as in a photo
      aligned after it was saved; per image Spearman(score, level) and the mean score per level, beside (1)'s
      own-grid figures. A model that finds JPEG only at the image's own grid loses its JPEG order here.

Spearman is scipy's ``spearmanr``; the ROC AUC is scipy's Mann-Whitney U over the number of pairs (ties count
half; torchmetrics' ``binary_auroc`` would squash the baselines' scores, which exceed 1, through a sigmoid).

Sections (6) and (7) also run on held-out faces: ``benchmarks/heldout_severity.py``.

Usage: python benchmarks/quality.py [--weights ifqa-lite] [--subset N] [--out FILE]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import mannwhitneyu, rankdata, spearmanr

from common import RESULTS, SHARED, machine, print_table, require, write_json
from ifqa_loss import IFQA
from ifqa_loss.io import list_images, load_folder, to_float, to_uint8
from ifqa_loss.regions import boxes_from_landmarks, region_masks, template_boxes
from ifqa_loss.train.degradations import SWEEP_LEVELS, degrade, jpeg_off_grid, jpeg_pil, sharpen

SIZE = 256
DATA = SHARED / "data"
LEVELS = SWEEP_LEVELS  # per kind, the five levels of (1): blur sigma (px at 256), noise sigma (8-bit), JPEG quality,
# down-up factor, mixed level (ifqa_loss.train.degradations.SWEEP_KINDS); level k of every kind counts as equally bad
LQ_SETS = ["codeformer_cropped", "gfpgan_cropped", "diffbir_aligned", "gpen_val_pairs/lq"]
# (4): Gaussian blur sigma, then an unsharp mask of this radius and amount
SHARPEN = {"blur_sigma": [1.0, 1.5], "unsharp_amount": [1.0, 2.0, 4.0], "unsharp_radius": 1.5}
# (6) and (7): the seeds of the draws and the blur test's set-up (the issue 29 protocol)
CROSS = {"seed": 0, "severity_range": [1.0, 5.0], "bootstrap": 2000, "blur_faces": 36, "blur_size": 512,
         "blur_sigma": [0.0, 4.0], "opinion_noise": 0.2, "blur_seed": 0}


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


def spearman_interval(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int = 0) -> list[float]:
    """Bootstrap 90% interval (5th, 95th percentile) of Spearman(a, b) over resampled pairs. Per type the
    cross-content test has ~23 faces, where one face more or less moves the Spearman by a few hundredths:
    the interval says how far apart two models must be before the difference means anything."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n_boot, len(a)))
    ra, rb = rankdata(a[idx], axis=1), rankdata(b[idx], axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    rho = (ra * rb).sum(1)[den > 0] / den[den > 0]  # a resample of one repeated pair orders nothing: dropped
    if len(rho) == 0:
        return [float("nan"), float("nan")]
    return [float(np.percentile(rho, 5)), float(np.percentile(rho, 95))]


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


# ---------------------------------------------------------------- (6) cross-content and (7) blur opinion


def level_at(kind: str, severity: float) -> float:
    """The ``degrade`` level of ``kind`` at a severity in [1, 5]: LEVELS[kind][k - 1] at an integer k, linear in
    between (JPEG quality is rounded by ``degrade``)."""
    levels = LEVELS[kind]
    pos = min(max(severity - 1.0, 0.0), len(levels) - 1.0)
    lo = min(int(pos), len(levels) - 2)
    return float(levels[lo] + (pos - lo) * (levels[lo + 1] - levels[lo]))


def cross_content_draws(n: int, seed: int) -> list[tuple[str, float]]:
    """``(kind, severity)`` for each of ``n`` faces. The kinds are dealt round-robin over a seeded permutation, so
    each type gets n/5 faces (a type drawn at random could get 15 faces one seed and 30 the next); the severity
    is uniform in CROSS["severity_range"]."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    lo, hi = CROSS["severity_range"]
    sev = torch.rand(n, generator=gen, dtype=torch.float64) * (hi - lo) + lo
    kinds = list(LEVELS)
    kind_of = [""] * n
    for rank, face in enumerate(order.tolist()):
        kind_of[face] = kinds[rank % len(kinds)]
    return [(kind_of[i], float(sev[i])) for i in range(n)]


def cross_content_faces(faces: torch.Tensor, seed: int) -> tuple[list[tuple[str, float]], torch.Tensor]:
    """The draws and the (N, 3, H, W) uint8 degraded faces, one per face, through ``degrade`` (noise seed per
    face) and rounded to 8 bits."""
    draws = cross_content_draws(len(faces), seed)
    out = torch.cat([degrade_8bit(faces[i:i + 1], kind, level_at(kind, sev), seed=seed * 100_003 + i)
                     for i, (kind, sev) in enumerate(draws)])
    return draws, out


def cross_content_stats(draws: list[tuple[str, float]], clean: np.ndarray, degraded: np.ndarray) -> dict:
    """Spearman of the degraded faces' scores with the quality (minus the severity; +1 = perfect), overall and per
    type, and the clean faces' spread: its statistics; ``clean_std_over_mean_drop``, the std of the clean scores
    over the mean drop from each face's clean score to its degraded one (near 1: the person moves the score as
    much as the degradation does); and ``degraded_at_or_above_clean``, the share of pairs of different faces
    where the degraded one scores at or above the clean one (0 = every degraded face ranks below every clean
    one)."""
    kinds = np.array([k for k, _ in draws])
    quality = -np.array([s for _, s in draws])
    n_boot = CROSS["bootstrap"]

    def rho(mask):
        if mask.sum() < 2:  # a subset smaller than the number of types leaves some with one face or none
            return {"spearman_score_vs_quality": float("nan"), "ci90": [float("nan")] * 2, "faces": int(mask.sum())}
        return {"spearman_score_vs_quality": spearman(degraded[mask], quality[mask]),
                "ci90": spearman_interval(degraded[mask], quality[mask], n_boot), "faces": int(mask.sum())}

    per_type = {k: rho(kinds == k) for k in LEVELS}
    pairs = degraded[None, :] >= clean[:, None]  # [i, j]: degraded face j at or above clean face i
    np.fill_diagonal(pairs, False)
    drop = float((clean - degraded).mean())
    return {"overall": rho(np.ones(len(kinds), bool)), "per_type": per_type,
            "worst_type": float(np.nanmin([v["spearman_score_vs_quality"] for v in per_type.values()])),
            "clean": {"min": float(clean.min()), "max": float(clean.max()), "mean": float(clean.mean()),
                      "std": float(clean.std()), "p5": float(np.percentile(clean, 5)),
                      "p95": float(np.percentile(clean, 95))},
            "mean_drop": drop, "clean_std_over_mean_drop": float(clean.std() / drop) if drop > 0 else float("inf"),
            "degraded_at_or_above_clean": float(pairs.sum() / (len(clean) * (len(clean) - 1))),
            "clean_scores": clean.tolist(), "degraded_scores": degraded.tolist()}


def cross_content(scorers: dict, faces: torch.Tensor, names: list[str], seed: int) -> dict:
    """Section (6) on (N, 3, 256, 256) uint8 ``faces``: every scorer on the same degraded faces."""
    draws, degraded = cross_content_faces(faces, seed)
    res = {"draws": [{"name": n, "kind": k, "severity": s, "level": level_at(k, s)}
                     for n, (k, s) in zip(names, draws)]}
    for m, f in scorers.items():
        res[m] = cross_content_stats(draws, f(faces).numpy(), f(degraded).numpy())
    return res


def blur_opinion(scorers: dict, faces512: torch.Tensor, names: list[str], seed: int) -> dict:
    """Section (7) on (N, 3, 512, 512) uint8 faces. Every scorer sees the blurred 8-bit 512 px image: IFQA through
    ``score_images`` (which resizes it as ``ifqa score`` does), the baselines on the 512 px image itself."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = CROSS["blur_sigma"]
    sigma = torch.rand(len(faces512), generator=gen, dtype=torch.float64) * (hi - lo) + lo
    opinion = (5.0 - sigma + CROSS["opinion_noise"] * torch.randn(len(faces512), generator=gen,
                                                                  dtype=torch.float64)).numpy()
    # kornia's Gaussian is undefined at sigma 0; below 0.05 px the kernel is a delta anyway, so keep the face
    blurred = torch.cat([faces512[i:i + 1] if s < 0.05 else degrade_8bit(faces512[i:i + 1], "blur", float(s))
                         for i, s in enumerate(sigma.tolist())])
    res = {"faces": len(faces512), "oracle_spearman": spearman(-sigma.numpy(), opinion),
           "per_face": [{"name": n, "sigma": float(s), "opinion": float(o)}
                        for n, s, o in zip(names, sigma.tolist(), opinion)]}
    for m, f in scorers.items():
        score = f(blurred).numpy()
        res[m] = {"spearman_score_vs_opinion": spearman(score, opinion),
                  "ci90": spearman_interval(score, opinion, CROSS["bootstrap"]), "scores": score.tolist()}
    return res


def face_ellipse_weight(boxes: torch.Tensor, size: int, inner: float = 1.3, outer: float = 1.7) -> torch.Tensor:
    """(N, 1, size, size) weights: 0 on the face, rising linearly to 1 from ``inner`` to ``outer`` face radii.

    The face is an ellipse placed by the (N, 4, 4) region ``boxes`` (left eye, right eye, nose, mouth; fractions of
    the side): centred a third of the way from the eyes' centre to the mouth's, half-axes 1.1 (across) and 1.3
    (down) eye-to-mouth distances, which covers the brows, the chin and the cheeks of FFHQ-aligned faces.
    """
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2
    eyes, mouth = centres[:, :2].mean(1), centres[:, 3]
    d = (mouth - eyes).norm(dim=-1).clamp(min=1e-3)
    c = eyes + (mouth - eyes) / 3
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    dx = (coords[None, None, :] - c[:, 0, None, None]) / (1.1 * d[:, None, None])
    dy = (coords[None, :, None] - c[:, 1, None, None]) / (1.3 * d[:, None, None])
    r = (dx.square() + dy.square()).sqrt()
    return ((r - inner) / (outer - inner)).clamp(0, 1)[:, None]


def pink_texture(n: int, size: int, seed: int) -> torch.Tensor:
    """(n, 3, size, size) colour textures in [0, 1] with a 1/f amplitude spectrum, like natural scenes'."""
    gen = torch.Generator().manual_seed(seed)
    f = torch.fft.fftfreq(size)
    amp = 1 / (f[:, None].square() + f[None].square()).clamp(min=1 / size ** 2).sqrt()
    phase = torch.rand(n, 3, size, size, generator=gen) * 2 * torch.pi
    z = torch.fft.ifft2(amp * torch.exp(1j * phase)).real
    z = (z - z.mean((2, 3), keepdim=True)) / z.std((2, 3), keepdim=True)
    return (0.5 + 0.1 * torch.randn(n, 3, 1, 1, generator=gen) + 0.15 * z).clamp(0, 1)


def surroundings(scorer, faces: torch.Tensor, boxes: torch.Tensor, seed: int = 0,
                 clean: torch.Tensor | None = None) -> dict:
    """Section (8) on (N, 3, 256, 256) uint8 ``faces`` with (N, 4, 4) region ``boxes``: the score change when all
    but the face is replaced (flat grey, 1/f texture, the face's own surroundings blurred with sigma 4 px).
    ``clean``: the faces' scores when already computed."""
    x = to_float(faces)
    w = face_ellipse_weight(boxes, x.shape[-1])
    scenes = {"grey": torch.full_like(x, 0.5), "texture": pink_texture(len(x), x.shape[-1], seed),
              "defocus": degrade(x, "blur", 4.0)}
    clean = (scorer(faces) if clean is None else clean).numpy()
    res = {"replaced_share": float(w.mean())}
    for name, scene in scenes.items():
        change = scorer(to_uint8(x + (scene - x) * w)).numpy() - clean
        res[name] = {"mean_change": float(change.mean()), "mean_abs_change": float(np.abs(change).mean())}
    return res


# ---------------------------------------------------------------- (9) JPEG off the grid


def off_grid_offsets(n: int, seed: int) -> torch.Tensor:
    """(n, 2) row and column offsets in 1..15, none a multiple of 8: both block grids move off the image's."""
    gen = torch.Generator().manual_seed(seed)
    steps = torch.tensor([v for v in range(1, 16) if v % 8])
    return steps[torch.randint(0, len(steps), (n, 2), generator=gen)]


def jpeg_grid_sweep(scorers: dict, faces: torch.Tensor, seed: int = 0, clean: dict | None = None,
                    own: dict | None = None) -> dict:
    """Section (9) on (N, 3, H, W) uint8 ``faces``: per scorer, for the own grid and the moved one, the mean
    per-image Spearman(score, JPEG level) and the mean score per level (level 0 = the clean faces).

    Scores already computed are not computed again: ``clean`` maps a scorer to its (N,) clean scores, ``own`` to
    its (N, levels) scores of section (1)'s JPEG sweep (the own grid)."""
    clean, own = clean or {}, own or {}
    x = to_float(faces)
    offset = off_grid_offsets(len(faces), seed)
    qualities = [torch.full((len(x),), q) for q in LEVELS["jpeg"]]
    moved = [to_uint8(jpeg_off_grid(jpeg_pil, x, q, offset)) for q in qualities]
    own_batches = None if all(m in own for m in scorers) else [to_uint8(jpeg_pil(x, q)) for q in qualities]
    res = {}
    for m, f in scorers.items():
        base = (clean[m] if m in clean else f(faces)).numpy()[:, None]
        levels = {"own": own[m] if m in own else np.stack([f(b).numpy() for b in own_batches], 1),
                  "moved": np.stack([f(b).numpy() for b in moved], 1)}
        res[m] = {}
        for grid, scores in levels.items():
            s = np.concatenate([base, scores], 1)  # (images, clean + levels)
            rho = [spearman(row, np.arange(s.shape[1])) for row in s]
            res[m][grid] = {"mean_spearman": float(np.mean(rho)), "mean_score_per_level": s.mean(0).tolist()}
    return res


def grid_table(title: str, sweeps: list[tuple[str, dict]]) -> None:
    print_table(title, ["scorer", "grid", "Spearman", *(f"level {k}" for k in range(len(LEVELS["jpeg"]) + 1))],
                [[label, grid, v["mean_spearman"], *v["mean_score_per_level"]]
                 for label, sweep in sweeps for grid, v in sweep.items()])


def cross_table(title: str, rows: list[tuple[str, dict, dict]]) -> None:
    """One compact table of sections (6) and (7): ``(label, cross_content_stats, blur_opinion entry)`` rows."""
    print_table(title, ["scorer", "overall", *LEVELS, "worst", "blur-opinion", "clean std", "std/drop",
                        "deg>=clean"],
                [[label, c["overall"]["spearman_score_vs_quality"],
                  *(c["per_type"][k]["spearman_score_vs_quality"] for k in LEVELS), c["worst_type"],
                  b["spearman_score_vs_opinion"], c["clean"]["std"], c["clean_std_over_mean_drop"],
                  c["degraded_at_or_above_clean"]] for label, c, b in rows])


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
    own_jpeg = {}  # section (9)'s own-grid sweep
    for kind, levels in LEVELS.items():
        scores = {m: [] for m in scorers}
        for li, level in enumerate(levels):
            y = degrade_8bit(hq, kind, level, seed=li)
            for m, f in scorers.items():
                scores[m].append(f(y).numpy())
        for m in scorers:
            s = np.stack(scores[m], 1)  # (images, levels)
            if kind == "jpeg":
                own_jpeg[m] = s
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

    # (6) cross-content ranking and (7) synthetic-opinion blur test
    cross = cross_content(scorers, hq, names, CROSS["seed"])
    n_blur = min(CROSS["blur_faces"], len(names))
    _, hq512 = load_folder(hq_dir, size=CROSS["blur_size"], names=names[:n_blur])
    blur = blur_opinion(scorers, hq512, names[:n_blur], CROSS["blur_seed"])
    cross_table(f"(6) cross-content Spearman(score, quality) on {len(names)} hq_eval faces, one degraded version "
                f"each (+1 = perfect), and (7) Spearman(score, synthetic opinion) on {n_blur} faces blurred at "
                f"{CROSS['blur_size']} px (oracle {blur['oracle_spearman']:.3f}); clean std, its ratio to the mean "
                "drop, share of pairs of different faces where the degraded one scores >= the clean one",
                [(m, cross[m], blur[m]) for m in scorers])

    # (8) surroundings: every face, template boxes where the landmarks file has none
    all_boxes = template_boxes(len(names))
    all_boxes[keep] = boxes
    around = surroundings(scorers["ifqa"], hq, all_boxes, clean=clean["ifqa"])  # clean scores of (4)
    print_table(f"(8) IFQA score change with all but the face replaced ({around['replaced_share']:.0%} of the "
                "pixels on average); 0 = judges the face only", ["scene", "mean change", "mean |change|"],
                [[k, v["mean_change"], v["mean_abs_change"]] for k, v in around.items() if k != "replaced_share"])

    # (9) JPEG off the grid
    grid = jpeg_grid_sweep(scorers, hq, clean=clean, own=own_jpeg)  # clean scores of (4), own grid of (1)
    grid_table("(9) JPEG at the image's own block grid and at a moved one (per face, not a multiple of 8): mean "
               "per-image Spearman(score, level; clean = level 0) and the mean score per level", list(grid.items()))

    summary = {
        "severity_worst_type": {m: max(v["mean_spearman"] for v in severity[m].values()) for m in scorers},
        "auc": {m: auc[m]["auc"] for m in scorers},
        "region_ratio_mixed": {m: region[m]["mixed"]["ratio"] for m in scorers},
        "sharpened_at_or_above_clean_worst": {m: max(e["share_at_or_above_clean"] for e in sharpen_share[m])
                                              for m in scorers},
        "cross_content_overall": {m: cross[m]["overall"]["spearman_score_vs_quality"] for m in scorers},
        "cross_content_worst_type": {m: cross[m]["worst_type"] for m in scorers},
        "blur_opinion": {m: blur[m]["spearman_score_vs_opinion"] for m in scorers},
        "clean_score_std": {m: cross[m]["clean"]["std"] for m in scorers},
        "surroundings_mean_abs_change": {k: v["mean_abs_change"] for k, v in around.items() if k != "replaced_share"},
        "jpeg_moved_grid_spearman": {m: v["moved"]["mean_spearman"] for m, v in grid.items()},
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
        "mirror": mirror, "cross_settings": CROSS, "cross_content": cross, "blur_opinion": blur,
        "surroundings": around, "jpeg_grid": grid, "summary": summary, "machine": machine(),
        "seconds": round(time.perf_counter() - t0, 1),
    })


if __name__ == "__main__":
    main()
