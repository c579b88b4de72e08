"""Where the time goes when scoring whole photos: decoding, detection (+ 68 landmarks), alignment, scoring.

Runs ``ifqa score --detect``'s path (:func:`ifqa_loss.faces.find_faces` then :meth:`ifqa_loss.IFQA.score_images`
on the crops) over the photos of ``../shared/data/lq_real/whole_photos`` on the CPU, ``--rounds`` times, and
reports photos/s and faces/s per stage (the best round, as the other speed benchmarks do).

    python benchmarks/faces_speed.py --cpu-name "Intel Xeon (AVX-512, AMX)"
"""
from __future__ import annotations

import argparse
import time

import torch

from common import RESULTS, SHARED, machine, print_table, require, write_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", default=str(SHARED / "data" / "lq_real" / "whole_photos"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--detector", choices=["hog", "mmod"], default="hog")
    p.add_argument("--upsample", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--cpu-name", default=None, help="what to call the CPU in the results (platform gives little)")
    p.add_argument("--out", default=str(RESULTS / "faces_speed.json"))
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from pathlib import Path

    from ifqa_loss import IFQA
    from ifqa_loss.faces import _detect, align_face, load_photo
    from ifqa_loss.io import find_images

    args = parse_args(argv)
    files, _ = find_images([require(Path(args.photos), "whole photos")])
    model = IFQA().eval()
    model.net.to(memory_format=torch.channels_last)  # as ifqa score does on the CPU for lite
    stages = {"decode": [], "detect": [], "align": [], "score": []}
    n_faces = 0
    per_photo = []
    for rnd in range(args.rounds):
        t = dict.fromkeys(stages, 0.0)
        crops, per_photo = [], []
        for f in files:
            t0 = time.perf_counter()
            photo = load_photo(f)
            t1 = time.perf_counter()
            faces, _ = _detect(photo, 32, False, None, args.upsample, args.detector, 2048, 0.3)
            t2 = time.perf_counter()
            for face in faces:
                crops.append(align_face(photo, face, 512)[0])
            t3 = time.perf_counter()
            t["decode"] += t1 - t0
            t["detect"] += t2 - t1
            t["align"] += t3 - t2
            per_photo.append({"photo": Path(f).name, "size": list(photo.shape[-2:]), "faces": len(faces),
                              "detect_s": round(t2 - t1, 4)})
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.score_images(crops, batch_size=args.batch_size)
        t["score"] = time.perf_counter() - t0
        n_faces = len(crops)
        for k in stages:
            stages[k].append(t[k])
        print(f"round {rnd}: " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()))
    best = {k: min(v) for k, v in stages.items()}
    total = sum(best.values())
    n = len(files)
    rows = [[k, round(v, 3), round(n / v, 2) if v else "-", round(n_faces / v, 2) if v else "-",
             f"{100 * v / total:.0f}%"] for k, v in best.items()]
    rows.append(["detect + align", round(best["detect"] + best["align"], 3),
                 round(n / (best["detect"] + best["align"]), 2), round(n_faces / (best["detect"] + best["align"]), 2),
                 f"{100 * (best['detect'] + best['align']) / total:.0f}%"])
    rows.append(["all", round(total, 3), round(n / total, 2), round(n_faces / total, 2), "100%"])
    print_table(f"{n} photos, {n_faces} faces ({args.detector}, upsample {args.upsample}, crops 512, "
                f"ifqa-lite on the CPU)", ["stage", "seconds", "photos/s", "faces/s", "share"], rows)
    info = machine()
    if args.cpu_name:
        info["cpu"] = args.cpu_name
    result = {"machine": info, "photos": n, "faces": n_faces, "detector": args.detector, "upsample": args.upsample,
              "crop_size": 512, "backbone": "lite", "batch_size": args.batch_size, "rounds": args.rounds,
              "best_seconds": {k: round(v, 4) for k, v in best.items()},
              "photos_per_s": {"detect_align": round(n / (best["detect"] + best["align"]), 3),
                               "score": round(n / best["score"], 3), "all": round(n / total, 3)},
              "faces_per_s": {"detect_align": round(n_faces / (best["detect"] + best["align"]), 3),
                              "score": round(n_faces / best["score"], 3), "all": round(n_faces / total, 3)},
              "per_photo": per_photo}
    write_json(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
