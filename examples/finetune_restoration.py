"""IFQA as a training objective: fine-tune a face-restoration network with IFQALoss and measure the gain.

1. Pre-train a small restoration U-Net with L1 on degraded faces (faces256 train split, the training
   degradation model).
2. From that same starting point, fine-tune each arm for the same steps on the same batches:
   L1 only, and L1 + lambda * IFQALoss for a sweep of lambda (plus a primary-region-weighted arm).
3. Pick lambda on the faces256 validation split, then report on hq_eval (degraded with a fixed seed):
   PSNR and SSIM against the HQ originals, and the IFQA score of an INDEPENDENT evaluator (another
   IFQA model, trained with a different seed on the other half of the train split; not the loss model).
   With the ``faces`` extra, two judges that owe nothing to IFQA join them: identity similarity (cosine of dlib's
   face-recognition embeddings of the restored and the HQ face) and landmark distance (mean distance of dlib's
   68 landmarks, in pixels at 256, found inside the HQ face's box) -- the numbers blind-face-restoration papers
   report. Paired tests across images (sign-flip permutation and Wilcoxon signed-rank) compare each arm with L1.

Writes <out>/results.json and <out>/comparison.png (rows: LQ | L1 | L1+IFQA | HQ, evaluator heatmaps below).

    python examples/finetune_restoration.py --out finetune_out          # full run (~15 min on 2 CPU cores)
    python examples/finetune_restoration.py --out finetune_out --fast   # a few steps, a few images (CI)
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from kornia.metrics import ssim
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ifqa_loss import IFQA, IFQALoss  # noqa: E402
from ifqa_loss.compare import face_judge  # noqa: E402
from ifqa_loss.cpu_memory import reuse_freed_memory  # noqa: E402
from ifqa_loss.evaluation import wilcoxon_signed_rank  # noqa: E402
from ifqa_loss.functional import ifqa_loss  # noqa: E402
from ifqa_loss.io import load_folder, to_float, to_uint8  # noqa: E402
from ifqa_loss.regions import region_masks  # noqa: E402
from ifqa_loss.train.data import FaceSet, read_name_list  # noqa: E402
from ifqa_loss.train.degradations import DegradationConfig, Degrader  # noqa: E402
from ifqa_loss.train.generator import RestorationUNet  # noqa: E402
from ifqa_loss.viz import colorize, to_uint8_hwc  # noqa: E402
from ifqa_loss.weights import REGISTRY, sha256_of  # noqa: E402

DATA = REPO.parent / "shared" / "data"
EVALUATOR = REPO / "examples" / "weights" / "ifqa-lite-evaluator.safetensors"


def weights_sha256(weights: str) -> str:
    """sha256 of a weights file, or the registry's (checked when the model loaded), so results name the exact model."""
    return REGISTRY[weights].sha256 if weights in REGISTRY else sha256_of(weights)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="finetune_out")
    ap.add_argument("--data", default=str(DATA / "faces256"),
                    help="faces256 folder (images/, landmarks68.npz, val.txt)")
    ap.add_argument("--eval-data", default=str(DATA / "hq_eval"), help="HQ faces for the final report")
    ap.add_argument("--evaluator", default=str(EVALUATOR), help="independent IFQA weights used only for evaluation")
    ap.add_argument("--loss-weights", default="ifqa-lite",
                    help="weights of the loss model (default: bundled ifqa-lite)")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.0003, 0.001, 0.003, 0.01])
    ap.add_argument("--region-arm", action="store_true", help="add an arm whose IFQA term weights eyes/nose/mouth x4")
    ap.add_argument("--pretrain-steps", type=int, default=400)
    ap.add_argument("--finetune-steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--train-images", type=int, default=1500, help="training images kept in memory")
    ap.add_argument("--val-images", type=int, default=48, help="faces256 validation images used to pick lambda")
    ap.add_argument("--eval-images", type=int, default=None, help="hq_eval images in the report (default: all)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fast", action="store_true", help="smoke run: a few steps and images")
    ap.add_argument("--no-face-judges", action="store_true",
                    help="skip identity similarity and landmark distance (measured when the faces extra is installed)")
    args = ap.parse_args(argv)
    if args.fast:
        args.pretrain_steps, args.finetune_steps, args.batch_size = 3, 2, 2
        args.train_images, args.val_images, args.eval_images = 8, 4, 4
        args.lambdas = args.lambdas[-1:]
    return args


# ---------------------------------------------------------------- statistics


def paired_test(diff: np.ndarray, rounds: int = 20000, seed: int = 0) -> dict:
    """Two-sided paired tests of mean(diff) = 0: a sign-flip permutation test and the paired t statistic."""
    diff = np.asarray(diff, dtype=np.float64)
    n = len(diff)
    mean, sd = float(diff.mean()), float(diff.std(ddof=1)) if n > 1 else 0.0
    t = mean / (sd / math.sqrt(n)) if sd > 0 else 0.0
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(rounds, n))
    null = np.abs((signs * diff).mean(axis=1))
    p_perm = float((1 + np.sum(null >= abs(mean) - 1e-15)) / (rounds + 1))
    return {"n": n, "mean_diff": mean, "sd_diff": sd, "t": t, "p_sign_flip": p_perm,
            "p_normal_approx": float(math.erfc(abs(t) / math.sqrt(2))), "p_wilcoxon": wilcoxon_signed_rank(diff)["p"]}


def summary(v: np.ndarray) -> dict:
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}


# ---------------------------------------------------------------- data


def hq_eval_faces(folder: Path, limit: int | None) -> tuple[list[str], torch.Tensor]:
    """HQ faces of ``folder`` resized to 256x256 (the library's resize policy), (N, 3, 256, 256) in [0, 1]."""
    names, faces = load_folder(folder, size=256, limit=limit)
    return names, to_float(faces)


# ---------------------------------------------------------------- training


def fit(gen: torch.nn.Module, train: FaceSet, degrader_seed: int, steps: int, args, criterion: IFQALoss | None = None,
        lam: float = 0.0, weighted: bool = False) -> list[float]:
    """Train ``gen`` in place; the batch order and degradations depend only on ``degrader_seed``."""
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(degrader_seed)
    degrader = Degrader(DegradationConfig(jpeg_backend="pil"), seed=degrader_seed)
    opt = torch.optim.Adam(gen.parameters(), lr=args.lr, betas=(0.9, 0.99))
    gen.train()
    log = []
    for _ in range(steps):
        idx = torch.randint(0, len(train), (args.batch_size,), generator=g)
        hq, boxes = train.batch(idx, dev)
        lq = degrader(hq)
        restored = gen(lq)
        loss = F.l1_loss(restored, hq)
        if criterion is not None and lam > 0:
            if weighted:
                w = 1.0 + 3.0 * region_masks(boxes, 256)  # eyes, nose and mouth count 4x in the IFQA term
                loss = loss + lam * ifqa_loss(restored, criterion.ifqa, weight_map=w)
            else:
                loss = loss + lam * criterion(restored)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.append(loss.item())
    gen.eval()
    return log


def _hwc8(x: torch.Tensor) -> list[np.ndarray]:
    """(N, 3, H, W) float in [0, 1] -> N (H, W, 3) uint8 arrays, what dlib reads."""
    return list(np.ascontiguousarray(to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()))


def reference_faces(judge, hq: torch.Tensor) -> list[tuple]:
    """Per HQ face: its face box (detected once), 68 landmarks and embedding, for :func:`evaluate`'s judges."""
    refs = []
    for face in _hwc8(hq):
        box = judge.box(face)
        refs.append((box, *judge.measure(face, box)))
    return refs


@torch.no_grad()
def evaluate(gen: torch.nn.Module, lq: torch.Tensor, hq: torch.Tensor, evaluator: IFQA, dev, batch: int = 8,
             judge=None, refs: list | None = None) -> dict:
    """Per-image PSNR, SSIM (vs HQ) and independent IFQA score of the restored faces; with ``judge`` (the faces
    extra) and ``refs`` (:func:`reference_faces`), identity similarity and landmark distance to the HQ faces too."""
    out = {"psnr": [], "ssim": [], "ifqa_eval": []}
    judged = {"identity": [], "landmark_distance": []}
    restored_all = []
    for i in range(0, len(lq), batch):
        r = gen(lq[i:i + batch].to(dev)).clamp(0, 1)
        h = hq[i:i + batch].to(dev)
        out["psnr"].append(10 * torch.log10(1.0 / (r - h).square().mean(dim=(1, 2, 3)).clamp_min(1e-10)))
        out["ssim"].append(ssim(r, h, 11).mean(dim=(1, 2, 3)))
        out["ifqa_eval"].append(evaluator(r).score)
        restored_all.append(r.cpu())
        if judge is not None and refs is not None:
            for j, face in enumerate(_hwc8(r)):
                box, ref_points, ref_desc = refs[i + j]
                points, desc = judge.measure(face, box)  # inside the HQ face's box: found however blurred
                judged["identity"].append(float(desc @ ref_desc / (np.linalg.norm(desc) * np.linalg.norm(ref_desc))))
                judged["landmark_distance"].append(float(np.linalg.norm(points - ref_points, axis=1).mean()))
    metrics = {k: torch.cat(v).cpu().numpy().astype(np.float64) for k, v in out.items()}
    metrics.update({k: np.asarray(v, dtype=np.float64) for k, v in judged.items() if v})
    return metrics, torch.cat(restored_all)


# ---------------------------------------------------------------- figure


def figure(path: Path, lq, base, tuned, hq, evaluator: IFQA, label: str, dev, rows: int = 4) -> None:
    """Rows of LQ | L1 | L1+IFQA | HQ, each with the evaluator's heatmap underneath."""
    tiles = []
    for i in range(min(rows, len(hq))):
        cols = [lq[i], base[i], tuned[i], hq[i]]
        with torch.no_grad():
            out = evaluator(torch.stack(cols).to(dev))
        tiles.append(np.concatenate([to_uint8_hwc(c) for c in cols], axis=1))
        tiles.append(np.concatenate([to_uint8_hwc(h) for h in colorize(out.map.cpu())], axis=1))
    Image.fromarray(np.concatenate(tiles, axis=0)).save(path)
    print(f"wrote {path} (columns: LQ | L1 | {label} | HQ; evaluator heatmaps under each row)")


# ---------------------------------------------------------------- main


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    if dev.type == "cpu":  # a CPU training loop: reuse activation memory instead of page-faulting it every step
        reuse_freed_memory()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    for p in (data / "images", Path(args.eval_data), Path(args.evaluator)):
        if not p.exists():
            raise SystemExit(f"{p} not found: this example needs ../shared/data and the evaluator weights")

    held_out = read_name_list(data / "val.txt")
    landmarks = data / "landmarks68.npz"
    landmarks = landmarks if landmarks.exists() else None
    train = FaceSet(data / "images", landmarks, exclude=held_out, limit=args.train_images)
    val = FaceSet(data / "images", landmarks, include=held_out, limit=args.val_images)
    names, hq_eval = hq_eval_faces(Path(args.eval_data), args.eval_images)
    val_hq = to_float(val.images)
    fixed = Degrader(DegradationConfig(jpeg_backend="pil"), seed=1234)  # fixed-seed test degradations
    val_lq, eval_lq = fixed(val_hq), fixed(hq_eval)
    criterion = IFQALoss(weights=args.loss_weights).to(dev)
    evaluator = IFQA(weights=args.evaluator).to(dev)
    judge = None if args.no_face_judges else face_judge()
    refs = reference_faces(judge, hq_eval) if judge is not None else None
    if judge is None and not args.no_face_judges:
        print('identity similarity and landmark distance need the faces extra: pip install "ifqa-loss[faces]"')
    print(f"train {len(train)} faces, pick lambda on {len(val)} val faces, report on {len(names)} hq_eval faces; "
          f"loss model {criterion.ifqa.weights_source}, evaluator {evaluator.weights_source}")

    gen = RestorationUNet(16).to(dev)
    t0 = time.perf_counter()
    pre_log = fit(gen, train, args.seed + 1, args.pretrain_steps, args)
    print(f"pre-trained with L1: {args.pretrain_steps} steps in {time.perf_counter() - t0:.0f} s "
          f"(last L1 {np.mean(pre_log[-20:]):.4f})")
    start = copy.deepcopy(gen.state_dict())

    arms = [("L1", 0.0, False)] + [(f"L1+{lam:g}*IFQA", lam, False) for lam in args.lambdas]
    if args.region_arm:
        arms.append((f"L1+{args.lambdas[-1]:g}*IFQA(primary x4)", args.lambdas[-1], True))
    results, restored = {}, {}
    for name, lam, weighted in arms:
        gen.load_state_dict(start)
        t0 = time.perf_counter()
        # the same batches for every arm
        fit(gen, train, args.seed + 2, args.finetune_steps, args, criterion, lam, weighted)
        val_m, _ = evaluate(gen, val_lq, val_hq, evaluator, dev)
        test_m, restored[name] = evaluate(gen, eval_lq, hq_eval, evaluator, dev, judge=judge, refs=refs)
        results[name] = {"lambda": lam, "primary_weighted": weighted, "seconds": round(time.perf_counter() - t0, 1),
                         "val": {k: summary(v) for k, v in val_m.items()},
                         "hq_eval": {k: summary(v) for k, v in test_m.items()},
                         "_per_image": test_m}
        print(f"{name:28s} val: IFQA_eval {val_m['ifqa_eval'].mean():.4f} PSNR {val_m['psnr'].mean():.2f}  | hq_eval: "
              f"IFQA_eval {test_m['ifqa_eval'].mean():.4f} PSNR {test_m['psnr'].mean():.2f} "
              f"SSIM {test_m['ssim'].mean():.4f}" + (f" identity {test_m['identity'].mean():.4f} landmarks "
                                                     f"{test_m['landmark_distance'].mean():.3f} px"
                                                     if "identity" in test_m else ""))

    base = results["L1"]
    for name, r in results.items():
        if name == "L1":
            continue
        per, ref = r["_per_image"], base["_per_image"]
        r["vs_L1"] = {"ifqa_eval": paired_test(per["ifqa_eval"] - ref["ifqa_eval"]),
                      "psnr_drop_db": float(ref["psnr"].mean() - per["psnr"].mean()),
                      "psnr": paired_test(per["psnr"] - ref["psnr"]), "ssim": paired_test(per["ssim"] - ref["ssim"])}
        for k in ("identity", "landmark_distance"):  # independent judges; landmark distance: lower is better
            if k in per:
                r["vs_L1"][k] = paired_test(per[k] - ref[k])
    # lambda chosen on the validation split: the largest evaluator gain whose PSNR drop stays within 0.5 dB
    ok = [n for n in results if n != "L1" and base["val"]["psnr"]["mean"] - results[n]["val"]["psnr"]["mean"] <= 0.5]
    best = max(ok, key=lambda n: results[n]["val"]["ifqa_eval"]["mean"], default=None)
    for r in results.values():
        r["per_image"] = {k: v.tolist() for k, v in r.pop("_per_image").items()}
    if best is not None:
        figure(out_dir / "comparison.png", eval_lq, restored["L1"], restored[best], hq_eval, evaluator, best, dev)
    wall = time.perf_counter() - t_start
    report = {
        "config": {k: v for k, v in vars(args).items()}, "device": str(dev), "wall_time_s": round(wall, 1),
        "loss_model": criterion.ifqa.weights_source, "loss_model_sha256": weights_sha256(args.loss_weights),
        "evaluator": evaluator.weights_source, "evaluator_sha256": weights_sha256(args.evaluator),
        "images": {"train": len(train), "val": len(val), "hq_eval": names},
        "face_judges": "dlib face-recognition ResNet (identity: cosine) and 68-point predictor (landmark distance, "
                       "px at 256)" if judge is not None else None,
        "best_arm": best, "arms": results,
    }
    if best is not None:
        b = results[best]["vs_L1"]
        report["acceptance"] = {"evaluator_gain": b["ifqa_eval"]["mean_diff"],
                                "p_sign_flip": b["ifqa_eval"]["p_sign_flip"],
                                "psnr_drop_db": b["psnr_drop_db"],
                                "met": bool(b["ifqa_eval"]["mean_diff"] > 0 and b["ifqa_eval"]["p_sign_flip"] < 0.01
                                            and b["psnr_drop_db"] <= 0.5)}
    (out_dir / "results.json").write_text(json.dumps(report, indent=1))
    print(f"best arm (chosen on val): {best}; wall time {wall / 60:.1f} min; wrote {out_dir / 'results.json'}")
    if best is not None:
        print(json.dumps(report["acceptance"]))
    return report


if __name__ == "__main__":
    main()
