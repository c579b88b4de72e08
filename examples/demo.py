"""Demo: score a public-domain face under a sweep of degradations with the bundled model.

Writes <out>/report.png (inputs, heatmaps, scores) and <out>/report.json.
The face is NASA's public-domain portrait of Eileen Collins shipped with scikit-image (``astronaut``);
add your own aligned faces with ``--images``.

    python examples/demo.py --out demo_out [--weights FILE] [--images a.png b.png]
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifqa_loss import IFQA  # noqa: E402
from ifqa_loss.io import load_image  # noqa: E402
from ifqa_loss.viz import colorize  # noqa: E402

# Square crop of the astronaut portrait with the eyes and mouth where FFHQ alignment puts them.
ASTRONAUT_CROP = (110, 0, 334, 224)


def astronaut_face() -> torch.Tensor:
    from skimage import data

    x0, y0, x1, y1 = ASTRONAUT_CROP
    img = torch.from_numpy(data.astronaut()[y0:y1, x0:x1].copy()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(img, size=(256, 256), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def jpeg(x: torch.Tensor, q: int) -> torch.Tensor:
    buf = io.BytesIO()
    Image.fromarray((x[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=q)
    return torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1)[None].float() / 255


def blur(x: torch.Tensor, s: float) -> torch.Tensor:
    import kornia

    k = 2 * int(np.ceil(3 * s)) + 1
    return kornia.filters.gaussian_blur2d(x, (k, k), (s, s))


def noise(x: torch.Tensor, s: float) -> torch.Tensor:
    return (x + torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * s / 255).clamp(0, 1)


def down_up(x: torch.Tensor, f: int) -> torch.Tensor:
    small = F.interpolate(x, scale_factor=1 / f, mode="bilinear", antialias=True)
    return F.interpolate(small, size=x.shape[-2:], mode="bicubic").clamp(0, 1)


SWEEP = [
    ("clean", lambda x: x),
    ("blur s=1.5", lambda x: blur(x, 1.5)),
    ("blur s=3", lambda x: blur(x, 3.0)),
    ("noise s=10", lambda x: noise(x, 10)),
    ("noise s=25", lambda x: noise(x, 25)),
    ("JPEG q=40", lambda x: jpeg(x, 40)),
    ("JPEG q=15", lambda x: jpeg(x, 15)),
    ("down x4", lambda x: down_up(x, 4)),
    ("mixed", lambda x: jpeg(noise(down_up(blur(x, 1.0), 3), 8), 50)),
]


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
        img = load_image(p)[None].float() / 255
        faces[Path(p).name] = F.interpolate(img, size=(256, 256), mode="bilinear", antialias=True).clamp(0, 1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = {"model": {"backbone": model.backbone, "weights": model.weights_source}, "faces": {}}
    fig, axes = plt.subplots(2 * len(faces), len(SWEEP), figsize=(1.9 * len(SWEEP), 4.1 * len(faces)), squeeze=False)
    for fi, (name, face) in enumerate(faces.items()):
        batch = torch.cat([f(face) for _, f in SWEEP])
        with torch.inference_mode():
            res = model(batch)
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
