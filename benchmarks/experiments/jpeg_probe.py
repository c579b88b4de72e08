"""JPEG probe: where does a lite/cnn model lose the JPEG severity order?

On hq_eval at quality.py's 5 JPEG levels, per image, Spearman(statistic, level), averaged:
  * the model's score (the figure quality.py reports; -1 = the score falls as quality falls);
  * blockiness of a fixed filter bank that the topology's first block could learn (3x3 Laplacian, then the
    2x2 average pool): the share of high-pass energy on the 8x8-block-boundary phase of the 128x128 grid;
  * the same blockiness on each channel of the model's own first block: after its 3x3 convolution and
    pool (3 channels), and at the block's output (widths[0] channels). The best channel is shown.
Blockiness near +1 while the score is far from -1 means the first block passes the signal on and the later
layers do not use it. Prints a table and writes JSON (benchmarks/results/jpeg_probe.json).

The faces are quality.py's: 256x256 with the library's resize policy, JPEG-compressed by
:func:`ifqa_loss.train.degradations.degrade` (8-bit, as files). An experiment on the model's insides, not a benchmark:
the score here is the map's mean from the network itself, which equals :meth:`ifqa_loss.IFQA.score_images` at 256.

Usage: python benchmarks/experiments/jpeg_probe.py [--weights ifqa-lite] [--subset N] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common, quality

from quality import LAPLACIAN, LEVELS, SIZE, degrade_8bit, luma, spearman  # noqa: E402

from common import RESULTS, SHARED, machine, print_table, require, write_json  # noqa: E402
from ifqa_loss import IFQA  # noqa: E402
from ifqa_loss.io import load_folder, to_float  # noqa: E402


def boundary_share(f: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) maps at half the JPEG resolution -> (N, C): mean |f| on rows and columns of phase 3 of
    4 (the 8x8 block boundaries after a 2x pool) over the mean on the other phases. The outer 4 rows and
    columns are left out: padding at the image border would otherwise count as a boundary."""
    if f.shape[-1] % 4 or f.shape[-2] % 4 or min(f.shape[-2:]) < 12:
        raise ValueError("boundary_share needs maps with sides that are multiples of 4 and at least 12, "
                         f"got {tuple(f.shape)}")
    a = f.abs()[..., 4:-4, 4:-4]
    n, c, h, w = a.shape
    per_phase = a.mean(2).view(n, c, w // 4, 4).mean(2) + a.mean(3).view(n, c, h // 4, 4).mean(2)
    return per_phase[..., 3] / per_phase[..., :3].mean(-1).clamp_min(1e-12)


def fixed_blockiness(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N,): :func:`boundary_share` of the luma's Laplacian after a 2x2 average pool."""
    return boundary_share(F.avg_pool2d(F.conv2d(luma(x), LAPLACIAN[None, None].to(x), padding=1), 2))[:, 0]


def high_pass(f: torch.Tensor) -> torch.Tensor:
    return f - F.avg_pool2d(f, 3, 1, 1, count_include_pad=False)


@torch.inference_mode()
def statistics(net, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image statistics of a batch in [0, 1]: the score and the blockiness probes."""
    block = net.encoder128
    z = x * 2 - 1
    pooled = F.avg_pool2d(block.conv1(F.leaky_relu(block.norm1(z), 0.2)), 2)
    return {
        "score": net(z).mean(dim=(1, 2, 3)),
        "fixed_laplacian_pooled": fixed_blockiness(x),
        "first_block_conv_pool": boundary_share(high_pass(pooled)),
        "first_block_output": boundary_share(high_pass(block(z))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="weights path or registered name (default: bundled ifqa-lite)")
    ap.add_argument("--backbone", default=None, help="lite or cnn (the U-Net backbones)")
    ap.add_argument("--subset", type=int, default=None, help="use only the first N hq_eval images")
    ap.add_argument("--out", default=str(RESULTS / "jpeg_probe.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    model = IFQA(backbone=args.backbone, weights=args.weights)
    if not hasattr(model.net, "encoder128"):
        raise SystemExit(f"the JPEG probe needs a U-Net backbone (lite or cnn), got {model.backbone!r}")
    net = model.net.eval()
    names, hq = load_folder(require(SHARED / "data" / "hq_eval", "hq_eval"), size=SIZE, limit=args.subset)
    levels = LEVELS["jpeg"]
    per_level = []
    for q in levels:
        y = to_float(degrade_8bit(hq, "jpeg", q))
        stats = [statistics(net, b) for b in y.split(16)]
        per_level.append({k: torch.cat([s[k] for s in stats]) for k in stats[0]})
    result = {}
    for key in per_level[0]:
        s = torch.stack([d[key].reshape(len(names), -1) for d in per_level], 1).numpy()  # (images, levels, channels)
        rho = [float(np.mean([spearman(s[i, :, c], np.arange(len(levels))) for i in range(len(s))]))
               for c in range(s.shape[2])]
        best = int(np.argmax(np.abs(rho)))
        result[key] = {"per_channel": rho, "best_channel": best, "best": rho[best]}
    print_table(f"JPEG probe: mean per-image Spearman with quality levels {levels} on {len(names)} hq_eval faces "
                "(score: -1 is perfect; blockiness: +1 is perfect)",
                ["statistic", "channels", "best channel", "Spearman"],
                [[k, len(v["per_channel"]), v["best_channel"], v["best"]] for k, v in result.items()])
    write_json(Path(args.out), {"model": {"backbone": model.backbone, "weights": model.weights_source},
                                "images": len(names), "levels": levels, "probes": result, "machine": machine(),
                                "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
