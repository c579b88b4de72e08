"""Demo: score a public-domain face under a sweep of degradations with the bundled model.

Writes <out>/report.png (inputs, heatmaps, scores) and <out>/report.json.
The face is NASA's public-domain portrait of Eileen Collins shipped with scikit-image (``astronaut``);
add your own aligned faces with ``--images``.

    python examples/demo.py --out demo_out [--weights FILE] [--images a.png b.png]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifqa_loss import IFQA  # noqa: E402
from ifqa_loss.io import load_image, to_float, to_uint8  # noqa: E402
from ifqa_loss.preprocess import resize_to  # noqa: E402
from ifqa_loss.train.degradations import degrade  # noqa: E402
from ifqa_loss.viz import colorize  # noqa: E402

SIZE = 256
# Square crop of the astronaut portrait with the eyes and mouth where FFHQ alignment puts them.
ASTRONAUT_CROP = (110, 0, 334, 224)
# (label, (kind, level) of ifqa_loss.train.degradations.degrade, or None for the clean face)
SWEEP = [
    ("clean", None),
    ("blur s=1.5", ("blur", 1.5)),
    ("blur s=3", ("blur", 3.0)),
    ("noise s=10", ("noise", 10.0)),
    ("noise s=25", ("noise", 25.0)),
    ("JPEG q=40", ("jpeg", 40)),
    ("JPEG q=15", ("jpeg", 15)),
    ("down x4", ("downup", 4.0)),
    ("mixed, level 4", ("mixed", 4)),
]


def face_at_size(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, 256, 256) uint8 with the library's resize policy."""
    return to_uint8(resize_to(to_float(img), SIZE))[0]


def astronaut_face() -> torch.Tensor:
    from skimage import data

    x0, y0, x1, y1 = ASTRONAUT_CROP
    return face_at_size(torch.from_numpy(data.astronaut()[y0:y1, x0:x1].copy()).permute(2, 0, 1))


def sweep(face: torch.Tensor) -> torch.Tensor:
    """(3, 256, 256) uint8 -> (len(SWEEP), 3, 256, 256) uint8: the face under each degradation, as 8-bit files."""
    x = to_float(face)
    return torch.cat([to_uint8(x if d is None else degrade(x, *d)) for _, d in SWEEP])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--weights", default=None, help="weights file or name (default: bundled ifqa-lite)")
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--images", nargs="*", default=[], help="extra aligned face images")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = IFQA(backbone=args.backbone, weights=args.weights)
    print(f"model: {model.backbone} from {model.weights_source}")
    faces = {"astronaut (public domain)": astronaut_face()}
    for p in args.images:
        faces[Path(p).name] = face_at_size(load_image(p))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = {"model": {"backbone": model.backbone, "weights": model.weights_source}, "faces": {}}
    fig, axes = plt.subplots(2 * len(faces), len(SWEEP), figsize=(1.9 * len(SWEEP), 4.1 * len(faces)), squeeze=False)
    for fi, (name, face) in enumerate(faces.items()):
        batch = sweep(face)
        res = model.score_images(list(batch))  # as `ifqa score` scores files
        report["faces"][name] = {label: float(s) for (label, _), s in zip(SWEEP, res.score)}
        heat = colorize(res.map)
        for j, (label, _) in enumerate(SWEEP):
            top, bottom = axes[2 * fi, j], axes[2 * fi + 1, j]
            top.imshow(batch[j].permute(1, 2, 0).numpy())
            top.set_title(label, fontsize=8)
            bottom.imshow(heat[j].permute(1, 2, 0).numpy())
            bottom.set_xlabel(f"IFQA {float(res.score[j]):.3f}", fontsize=9)
            for a in (top, bottom):
                a.set_xticks([])
                a.set_yticks([])
        print(f"{name}: " + ", ".join(f"{k}={v:.3f}" for k, v in report["faces"][name].items()))
    fig.suptitle("IFQA quality maps (blue = looks real, red = looks wrong)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=110)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'report.png'} and {out / 'report.json'}")


if __name__ == "__main__":
    main()
