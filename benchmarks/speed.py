"""Speed and memory of IFQA scoring and of the loss (forward + backward to the input).

Prints tables and writes JSON. Every ratio compares numbers measured in this one run:
- per backbone / batch size / mode: images/s, ms/image, peak memory (RSS on CPU, max allocated on CUDA);
- a naive reference path as the official script runs: per image, decoded file resized on the CPU, fp32,
  parameters with autograd on;
- CPU: a 4096x4096 fp32 matmul as the practical peak, and the fraction of it that `cnn` forward reaches;
- end to end: `ifqa score` over a folder of 64 faces vs the naive per-image loop.

Usage: python benchmarks/speed.py [--backbones lite cnn] [--quick] [--out FILE]
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common import RESULTS, SHARED, machine, print_table, write_json

from ifqa_loss import IFQA
from ifqa_loss.models import build_model
from ifqa_loss.preprocess import load_image, to_model_input
from ifqa_loss.weights import save_weights


def conv_flops(model: nn.Module, size: int) -> float:
    """Forward FLOPs (2 x MACs) of the convolutions and linears for one image, counted with hooks."""
    total = [0.0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total[0] += 2.0 * k * out.numel()
        elif isinstance(mod, nn.Linear):
            total[0] += 2.0 * mod.in_features * out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    for h in handles:
        h.remove()
    return total[0]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timeit(fn, min_time: float, min_reps: int = 2) -> float:
    fn()  # warm-up
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    reps, t0 = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - t0 < min_time:
        fn()
        reps += 1
    sync()
    return (time.perf_counter() - t0) / reps


def matmul_peak(device: str, min_time: float, rounds: int = 3) -> float:
    """Practical fp32 peak: the best of a few timings of a 4096x4096 matmul."""
    a = torch.randn(4096, 4096, device=device)
    b = torch.randn(4096, 4096, device=device)
    sec = min(timeit(lambda: a @ b, min_time / rounds) for _ in range(rounds))
    return 2 * 4096 ** 3 / sec / 1e9


def weights_for(backbone: str, tmp: Path) -> str | None:
    if backbone == "lite":
        return None  # bundled
    ref = SHARED / "ifqa-reference"
    sys.path.insert(0, str(ref))
    import synth_ckpt

    path = tmp / f"{backbone}.pth"
    if not path.exists():
        synth_ckpt.write("spec_cnn.json" if backbone == "cnn" else "spec_vit.json", str(path))
    return str(path)


def face_folder(tmp: Path, n: int) -> Path:
    """n 256x256 faces from the held-out list of ../shared (or noise images if it is absent), as PNG files."""
    from PIL import Image

    folder = tmp / "faces"
    folder.mkdir(exist_ok=True)
    src = SHARED / "data" / "faces256"
    names = (src / "val.txt").read_text().split()[:n] if (src / "val.txt").exists() else []
    for i in range(n):
        if i < len(names):
            img = Image.open(src / "images" / names[i]).convert("RGB")
        else:
            img = Image.fromarray((np.random.default_rng(i).random((256, 256, 3)) * 255).astype(np.uint8))
        img.save(folder / f"{i:04d}.png")
    return folder


def cli_end_to_end(weights: str, tmp: Path, n: int) -> list[dict]:
    """`ifqa score FOLDER` (batched, decoding overlapped) vs the official per-image loop, same files."""
    import contextlib
    import io

    from ifqa_loss.cli import main as cli_main

    folder = face_folder(tmp, n)
    files = sorted(folder.iterdir())
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli_main(["score", str(folder), "--weights", weights, "--json", "--no-progress", "--batch-size", "8"])
    cli_sec = time.perf_counter() - t0
    assert rc == 0
    naive = IFQA(weights=weights)
    naive.net.requires_grad_(True)
    t0 = time.perf_counter()
    with torch.no_grad():
        for f in files:  # official: decode, resize on the CPU, one image at a time
            x = to_model_input(load_image(f)[None].float() / 255, "cnn")
            naive.net(x.contiguous()).mean().item()
    naive_sec = time.perf_counter() - t0 + _model_load_seconds(weights)
    return [{"backbone": "cnn", "batch": 8, "mode": "cli folder", "images_per_s": n / cli_sec, "ms_per_image": 1e3 * cli_sec / n},
            {"backbone": "cnn", "batch": 1, "mode": "naive folder", "images_per_s": n / naive_sec,
             "ms_per_image": 1e3 * naive_sec / n}]


def _model_load_seconds(weights: str) -> float:
    """The CLI timing includes loading the model; charge the naive loop the same."""
    t0 = time.perf_counter()
    IFQA(weights=weights)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["lite", "cnn"], help="add 'vit' for IFQA++ (slow on CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds per measurement")
    ap.add_argument("--quick", action="store_true", help="batch sizes 1 and 4 only, short timings")
    ap.add_argument("--out", default=str(RESULTS / "speed.json"))
    args = ap.parse_args()
    dev = args.device
    cpu = dev == "cpu"
    tmp = Path(tempfile.mkdtemp(prefix="ifqa-speed-"))
    min_time = 1.0 if args.quick else args.min_time
    rows, records = [], []
    peak = matmul_peak(dev, min_time)
    print(f"device {dev}; 4096x4096 fp32 matmul: {peak:.1f} GFLOP/s (practical peak)")

    for bb in args.backbones:
        model = IFQA(backbone=bb, weights=weights_for(bb, tmp)).to(dev)
        size = model.native_size
        flops = conv_flops(model.net, size)
        if args.quick:
            batches = [1, 4]
        elif cpu:
            batches = {"lite": [1, 8, 32], "cnn": [1, 8], "vit": [1]}[bb]
        else:
            batches = [1, 8, 32]
        for bs in batches:
            x = torch.rand(bs, 3, size, size, device=dev)
            if not cpu:
                torch.cuda.reset_peak_memory_stats()

            def score():
                with torch.inference_mode():
                    model(x)

            xg = x.clone().requires_grad_(True)

            def loss():
                xg.grad = None
                (1 - model(xg).score).mean().backward()

            # frozen parameters: the backward pass computes input gradients only, about one forward's FLOPs
            for mode, fn, mult in (("score", score, 1.0), ("loss fwd+bwd", loss, 2.0)):
                sec = timeit(fn, min_time)
                mem = peak_rss_mb() if cpu else torch.cuda.max_memory_allocated() / 2 ** 20
                rec = {"backbone": bb, "batch": bs, "mode": mode, "images_per_s": bs / sec, "ms_per_image": 1e3 * sec / bs,
                       "gflops_per_s": mult * flops * bs / sec / 1e9, "peak_mem_mb": mem}
                rec["fraction_of_peak"] = rec["gflops_per_s"] / peak
                records.append(rec)
                rows.append([bb, bs, mode, rec["images_per_s"], rec["ms_per_image"], rec["gflops_per_s"],
                             rec["fraction_of_peak"], f"{mem:.0f}"])
        # naive reference: one image at a time, decoded file, CPU resize, parameter autograd on
        naive = IFQA(backbone=bb, weights=weights_for(bb, tmp)).to(dev)
        naive.net.requires_grad_(True)
        img_path = tmp / "face.png"
        from PIL import Image

        Image.fromarray((np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)).save(img_path)

        def naive_loss():
            x = load_image(img_path)[None].float() / 255
            x = to_model_input(x, bb).to(dev).requires_grad_(True)
            (1 - naive.net(x).mean()).backward()
            naive.net.zero_grad(set_to_none=True)

        sec = timeit(naive_loss, min_time)
        records.append({"backbone": bb, "batch": 1, "mode": "naive loss", "images_per_s": 1 / sec, "ms_per_image": 1e3 * sec})
        rows.append([bb, 1, "naive loss", 1 / sec, 1e3 * sec, "", "", ""])
        del model, naive

    if "cnn" in args.backbones and not args.quick:
        records.extend(cli_end_to_end(weights_for("cnn", tmp), tmp, n=64))
        rows.extend([[r["backbone"], r["batch"], r["mode"], r["images_per_s"], r["ms_per_image"], "", "", ""]
                     for r in records[-2:]])

    print_table("throughput", ["backbone", "batch", "mode", "img/s", "ms/img", "GFLOP/s", "of peak", "peak MB"], rows)
    by = {(r["backbone"], r["mode"], r["batch"]): r for r in records}
    ratios = {}
    common = [b for b in (32, 8, 4, 1) if ("lite", "loss fwd+bwd", b) in by and ("cnn", "loss fwd+bwd", b) in by]
    if common:
        b = common[0]
        ratios[f"lite_vs_cnn_loss_b{b}"] = by[("lite", "loss fwd+bwd", b)]["images_per_s"] / by[("cnn", "loss fwd+bwd", b)]["images_per_s"]
    for bb in args.backbones:
        best = max((r for r in records if r["backbone"] == bb and r["mode"] == "loss fwd+bwd"), key=lambda r: r["images_per_s"])
        ratios[f"{bb}_loss_vs_naive"] = best["images_per_s"] / by[(bb, "naive loss", 1)]["images_per_s"]
        fwd = max((r for r in records if r["backbone"] == bb and r["mode"] == "score"), key=lambda r: r["fraction_of_peak"])
        ratios[f"{bb}_forward_fraction_of_peak"] = fwd["fraction_of_peak"]
    if ("cnn", "cli folder", 8) in by:
        ratios["cnn_cli_folder_vs_naive"] = by[("cnn", "cli folder", 8)]["images_per_s"] / by[("cnn", "naive folder", 1)]["images_per_s"]
    print_table("ratios (same run)", ["ratio", "value"], [[k, v] for k, v in ratios.items()])
    write_json(Path(args.out), {"device": dev, "machine": machine(), "matmul_gflops": peak, "records": records,
                                "ratios": ratios})


if __name__ == "__main__":
    main()
