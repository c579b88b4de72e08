"""Re-detect and re-align faces that are already aligned, and see how far the crop moves and the score changes.

Issue 24's acceptance check: re-aligning the aligned ``hq_eval`` faces with ``align_face(..., recipe="ffhq")`` at
512 should give crops whose 68 landmarks lie within 3 px (mean) of the originals', and ``ifqa-lite`` scores within
0.02 of the original crop's for at least 90 % of the faces; the same for ``faces256`` at 256.

Per face it records:

- the detection on the original crop (found or not; its landmarks against the file's ``landmarks68.npz``);
- the re-alignment's transform, original crop -> new crop (scale, rotation, where the crop's centre goes), which
  says how the original crop's own alignment differs from the recipe on these landmarks;
- ``landmark_px``: the file's landmarks against the detected ones carried into the new crop (the acceptance
  number), and with ``--redetect`` the landmarks detected again on the new crop;
- the score change of the new crop, and controls that need no detection: the original crop resampled through
  a half-pixel shift (one resampling at its most blurring phase, no change of framing) and a round trip through
  the re-alignment and back (two resamplings, no net change of framing) separate interpolation from
  alignment; the original moved down by 1/128 of its side (4 px at 512) or zoomed in by 1 % show how much the
  model's score follows the framing itself; and the re-aligned crop resampled as the FFHQ script does
  (PIL's bilinear QUAD at 4x, then Lanczos down) shows whether that resampling would keep scores closer.

Numbers are given per subset (the file name's prefix: ``celebahq``, ``celebamaskhq``, ``ffhq``; ``AF``, ``AM``,
``CF``, ``CM``) and overall.

    python benchmarks/faces_realign.py --set hq_eval --cpu-name "AMD EPYC (AVX2), 2 cores"
    python benchmarks/faces_realign.py --set faces256 --names val.txt --cpu-name "AMD EPYC (AVX2), 2 cores"
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from common import RESULTS, SHARED, machine, print_table, require, write_json

SETS = {"hq_eval": 512, "faces256": 256}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", choices=sorted(SETS), default="hq_eval")
    p.add_argument("--root", default=None, help="the set's folder (default ../shared/data/<set>)")
    p.add_argument("--size", type=int, default=None, help="crop side (default 512 for hq_eval, 256 for faces256)")
    p.add_argument("--names", default=None,
                   help="a file of image names to keep, relative to the set's folder unless absolute (e.g. val.txt)")
    p.add_argument("--limit", type=int, default=None, help="at most this many faces (the first, by name)")
    p.add_argument("--interpolation", choices=["bicubic", "bilinear"], default="bicubic")
    p.add_argument("--upsample", type=int, default=1, help="the detector's upsampling (detect_faces' default, 1)")
    p.add_argument("--redetect", action="store_true", help="also detect the landmarks again on each new crop")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--weights", default=None, help="the scoring model's weights, a path or registered name "
                   "(default: the bundled ifqa-lite)")
    p.add_argument("--cpu-name", default=None, help="what to call the CPU in the results (platform gives little)")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/faces_realign_<set>.json)")
    return p.parse_args(argv)


def subset_of(name: str) -> str:
    """hq_eval names carry their source before the first '_'; faces256 names start with AF/AM/CF/CM."""
    return name.split("_")[0] if "_" in name else name[:2]


def decompose(matrix: torch.Tensor, size: int) -> dict:
    """Scale, rotation (degrees) and where the crop's centre lands, for an original crop -> new crop matrix."""
    a = matrix[:, :2].double()
    c = torch.full((2,), (size - 1) / 2, dtype=torch.float64)
    moved = a @ c + matrix[:, 2].double() - c
    return {"scale": float(a.det().abs().sqrt()), "rotation_deg": math.degrees(math.atan2(float(a[1, 0]),
                                                                                         float(a[0, 0]))),
            "centre_dx": float(moved[0]), "centre_dy": float(moved[1])}


def ffhq_script_resampling(img: torch.Tensor, matrix: torch.Tensor, size: int) -> torch.Tensor:
    """The same crop resampled as the FFHQ script does: PIL's QUAD transform, bilinear, at 4x the side, then a
    Lanczos resize down (its supersampling), from a reflect-padded photo (its blurred, median-faded padding is
    left out: it would change the crop's border, not its face)."""
    from PIL import Image

    from ifqa_loss import faces as fc

    pad = size // 4
    arr = np.pad(img.permute(1, 2, 0).numpy(), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    e = size - 0.5
    corners = torch.tensor([[-0.5, -0.5], [-0.5, e], [e, e], [e, -0.5]], dtype=torch.float64)
    # PIL's QUAD takes the source corners of the output's upper-left, lower-left, lower-right, upper-right
    # pixel edges, in edge coordinates (pixel centres at +0.5): the script's ``quad + 0.5``
    quad = fc._apply(fc._invert(matrix), corners).double() + pad + 0.5
    big = Image.fromarray(arr).transform((4 * size, 4 * size), Image.QUAD, tuple(quad.flatten().tolist()),
                                         Image.BILINEAR)
    out = big.resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(out).copy()).permute(2, 0, 1).contiguous()


def summarise(rows: list[dict], tol: float) -> dict:
    found = [r for r in rows if r["found"]]
    out = {"faces": len(rows), "with_file_landmarks": sum(r["file_landmarks"] for r in rows), "found": len(found)}
    if not found:
        return out

    def col(k):
        return np.array([r[k] for r in found if r.get(k) is not None], dtype=np.float64)

    lm = col("landmark_px")
    if lm.size:
        out.update({"landmark_px_mean": float(lm.mean()), "landmark_px_median": float(np.median(lm)),
                    "landmark_px_share_under_3": float((lm < 3).mean()),
                    "detected_vs_file_px_mean": float(col("detected_vs_file_px").mean())})
    if col("redetected_px").size:
        out["redetected_px_mean"] = float(col("redetected_px").mean())
    for k in ("scale", "rotation_deg", "centre_dx", "centre_dy"):
        v = col(k)
        out[f"{k}_mean"], out[f"{k}_sd"] = float(v.mean()), float(v.std())
    for k in ("d_score", "d_score_half_pixel", "d_score_round_trip", "d_score_shift_down", "d_score_zoom_1pc",
              "d_score_ffhq_script_resampling"):
        v = np.abs(col(k))
        out[f"{k}_abs_median"] = float(np.median(v))
        out[f"{k}_share_within_{tol}"] = float((v <= tol).mean())
    # faces missed by the detector count as failures of the score criterion too
    out[f"share_within_{tol}_of_all"] = float((np.abs(col("d_score")) <= tol).sum() / len(rows))
    return out


def run(root: Path, size: int, names_file: str | None = None, limit: int | None = None,
        interpolation: str = "bicubic", redetect: bool = False, batch_size: int = 8, model=None,
        tol: float = 0.02, upsample: int = 1) -> dict:
    """The measurement on one set; returns per-face rows and per-subset summaries."""
    from ifqa_loss import IFQA
    from ifqa_loss import faces as fc
    from ifqa_loss.io import load_image

    data = np.load(root / "landmarks68.npz")
    marks = {str(n): torch.from_numpy(lm.astype(np.float32)) for n, lm in zip(data["names"], data["landmarks"])}
    folder = root / "images" if (root / "images").is_dir() else root
    # every image, also those the file has no landmarks for (where its maker's detector found no face)
    names = [p.name for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    if names_file is not None:
        keep_path = Path(names_file) if Path(names_file).is_absolute() else root / names_file
        keep = set(keep_path.read_text().split())
        names = [n for n in names if n in keep]
    names = sorted(names)[:limit] if limit else sorted(names)
    model = IFQA().eval() if model is None else model
    half = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]], dtype=torch.float64)
    c = (size - 1) / 2
    framing = [torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, size / 128]], dtype=torch.float64),
               torch.tensor([[1.01, 0.0, -0.01 * c], [0.0, 1.01, -0.01 * c]], dtype=torch.float64)]
    rows, crops, t0 = [], [], time.perf_counter()
    for name in names:
        img = load_image(folder / name)
        if tuple(img.shape[-2:]) != (size, size):
            raise SystemExit(f"{name} is {tuple(img.shape[-2:])}, not {size} px: pass --size")
        ref = marks.get(name)
        row = {"name": name, "subset": subset_of(name), "found": False, "file_landmarks": ref is not None}
        rows.append(row)
        faces = fc.detect_faces(img, largest_only=True, upsample=upsample)
        if not faces:
            continue
        face = faces[0]
        new, t = fc.align_face(img, face, size, "ffhq", interpolation=interpolation)
        carried = t.to_crop(face.landmarks)
        row.update(found=True, **decompose(t.matrix, size))
        if ref is not None:
            row.update(detected_vs_file_px=float((face.landmarks - ref).norm(dim=1).mean()),
                       landmark_px=float((carried - ref).norm(dim=1).mean()))
        if redetect and ref is not None:
            again = fc.detect_faces(new, largest_only=True, upsample=upsample)
            row["redetected_px"] = float((again[0].landmarks - ref).norm(dim=1).mean()) if again else None
        # the controls resample the original crop without any detection: framing unchanged (half pixel) or
        # changed and changed back (round trip), so their score change is interpolation alone
        shifted = fc.warp_affine(img.float(), half, (size, size), "reflection", mode=interpolation)
        there = fc.warp_affine(img.float(), t.matrix, (size, size), "reflection", mode=interpolation)
        back = fc.warp_affine(there, fc._invert(t.matrix), (size, size), "reflection", mode=interpolation)
        pil = ffhq_script_resampling(img, t.matrix, size)
        # the model's own sensitivity to framing: the original crop moved down by 1/128 of its side (4 px at
        # 512) or zoomed in by 1 %, about what separates CelebA-HQ's alignment from the recipe's
        framed = [fc.warp_affine(img.float(), m, (size, size), "reflection", mode=interpolation) for m in framing]
        crops.append((row, [img, new] + [x.clamp(0, 255).round().to(torch.uint8) for x in (shifted, back, *framed)]
                      + [pil]))
    detect_s = time.perf_counter() - t0
    flat = [c for _, cs in crops for c in cs]
    t1 = time.perf_counter()
    with torch.inference_mode():
        scores = model.score_images(flat, batch_size=batch_size).score.tolist() if flat else []
    score_s = time.perf_counter() - t1
    for k, (row, _) in enumerate(crops):
        s0, s_new, s_half, s_back, s_down, s_zoom, s_pil = scores[7 * k:7 * k + 7]
        row.update(score=s0, score_new=s_new, d_score=s_new - s0, d_score_half_pixel=s_half - s0,
                   d_score_round_trip=s_back - s0, d_score_shift_down=s_down - s0, d_score_zoom_1pc=s_zoom - s0,
                   d_score_ffhq_script_resampling=s_pil - s0)
    subsets = sorted({r["subset"] for r in rows})
    summary = {s: summarise([r for r in rows if r["subset"] == s], tol) for s in subsets}
    summary["all"] = summarise(rows, tol)
    return {"root": root.name, "size": size, "recipe": "ffhq", "interpolation": interpolation, "upsample": upsample,
            "names_file": names_file, "tolerance": tol, "seconds": {"detect_align": round(detect_s, 2),
                                                                    "score": round(score_s, 2)},
            "summary": summary, "faces": rows}


def main(argv=None) -> dict:
    args = parse_args(argv)
    root = require(Path(args.root) if args.root else SHARED / "data" / args.set, args.set)
    size = args.size or SETS[args.set]
    from ifqa_loss import IFQA

    model = IFQA(weights=args.weights).eval()
    result = run(root, size, args.names, args.limit, args.interpolation, args.redetect, args.batch_size,
                 model=model, upsample=args.upsample)
    result["weights"] = model.weights_source
    tol = result["tolerance"]
    header = ["subset", "faces", "found", "lm px mean", "lm px median", "< 3 px", "scale", "centre dy",
              f"|d score| <= {tol}", "half-pixel", "round trip", "down 1/128", "zoom 1 %",
              "ffhq script resampling"]
    table = []
    for s, v in result["summary"].items():
        if "scale_mean" not in v:
            table.append([s, v["faces"], v["found"]] + ["-"] * (len(header) - 3))
            continue
        lm = [round(v["landmark_px_mean"], 2), round(v["landmark_px_median"], 2),
              f"{100 * v['landmark_px_share_under_3']:.0f}%"] if "landmark_px_mean" in v else ["-"] * 3
        table.append([s, v["faces"], v["found"], *lm,
                      f"{v['scale_mean']:.4f}±{v['scale_sd']:.4f}",
                      f"{v['centre_dy_mean']:+.2f}±{v['centre_dy_sd']:.2f}",
                      f"{100 * v[f'share_within_{tol}_of_all']:.0f}%",
                      f"{100 * v[f'd_score_half_pixel_share_within_{tol}']:.0f}%",
                      f"{100 * v[f'd_score_round_trip_share_within_{tol}']:.0f}%",
                      f"{100 * v[f'd_score_shift_down_share_within_{tol}']:.0f}%",
                      f"{100 * v[f'd_score_zoom_1pc_share_within_{tol}']:.0f}%",
                      f"{100 * v[f'd_score_ffhq_script_resampling_share_within_{tol}']:.0f}%"])
    print_table(f"{args.set} re-aligned with ffhq at {size} ({args.interpolation}); the last six columns: share "
                f"of faces whose score ({model.weights_source}) moves by at most {tol}", header, table)
    info = machine()
    if args.cpu_name:
        info["cpu"] = args.cpu_name
    result = {"machine": info, **result}
    out = Path(args.out) if args.out else RESULTS / f"faces_realign_{args.set}.json"
    write_json(out, result)
    return result


if __name__ == "__main__":
    main()
