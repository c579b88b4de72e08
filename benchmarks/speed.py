"""Speed and memory of IFQA scoring and of the loss (forward + backward to the input).

Prints tables and writes JSON. Every ratio compares numbers measured in this one run:
- per backbone / batch size / mode: images/s, ms/image, peak memory (RSS on CPU, max allocated on CUDA);
- a naive reference path as the official script runs: per image, decoded file resized on the CPU, fp32,
  parameters with autograd on, the official decoder and direct convolution;
- CPU: a 4096x4096 fp32 matmul as the practical peak, and the fraction of it that `cnn` forward reaches;
- end to end: `ifqa score` over a folder of 64 faces vs the naive per-image loop, each a whole process.

Usage: python benchmarks/speed.py [--backbones lite cnn] [--quick] [--out FILE]
"""
from __future__ import annotations

import argparse
import copy
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

from ifqa_loss import IFQA, IFQALoss
from ifqa_loss.cpu_memory import OPT_OUT_ENV
from ifqa_loss.models import build_model
from ifqa_loss.preprocess import load_image, to_model_input
from ifqa_loss.weights import save_weights


def executed_flops(fn) -> float:
    """FLOPs of the aten ops ``fn`` runs (convolutions, matmuls and their backward), counted once."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


OFFICIAL_CNN_GFLOP = 53.06  # the official decoder with direct convolution, counted by executed_flops

# Dense bf16 tensor-core peaks from the vendors' datasheets (FLOP/s), for the "of bf16 peak" column.
BF16_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def nominal_bf16_peak() -> float | None:
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in BF16_PEAKS.items() if k in name), None)


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


def matmul_peak(device: str, min_time: float, rounds: int = 3, n: int = 4096, dtype=torch.float32) -> float:
    """Practical peak in GFLOP/s: the best of a few timings of an n x n matmul."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sec = min(timeit(lambda: a @ b, min_time / rounds) for _ in range(rounds))
    return 2 * n ** 3 / sec / 1e9


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


def official_model(backbone: str, weights: str, device: str) -> IFQA:
    """The naive reference's model: parameters with autograd on, and for U-Nets the official formulation
    (upsample-then-convolve decoder, direct convolution)."""
    model = IFQA(backbone=backbone, weights=weights).to(device)
    model.net.requires_grad_(True)
    if hasattr(model.net, "use_official_formulation"):
        model.net.use_official_formulation()
    return model


def cli_end_to_end(weights: str, tmp: Path, n: int, rounds: int = 2) -> list[dict]:
    """Wall time of whole processes over the same folder: `ifqa score` (batched, decoding overlapped, CPU
    memory reused) with the allocator left at glibc's defaults and as shipped, vs the official per-image loop.

    Each is a fresh interpreter (start-up, imports and model load included), so no process inherits
    another's allocator state. They alternate ``rounds`` times and each keeps its best time, so a burst
    of load on this shared machine does not decide the ratio."""
    import os
    import subprocess

    folder = face_folder(tmp, n)
    cli = [sys.executable, "-m", "ifqa_loss", "score", str(folder), "--weights", weights, "--json", "--no-progress",
           "--batch-size", "8"]
    runs = {
        ("cli folder", "ifqa score"): (cli, {}),
        ("cli folder", "ifqa score, glibc malloc defaults"): (cli, {OPT_OUT_ENV: "1"}),
        ("naive folder", "official"): ([sys.executable, str(Path(__file__).resolve()), "--naive-folder", str(folder),
                                         "--weights", weights], {}),
    }
    best_sec = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for key, (cmd, env) in runs.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, env={**os.environ, **env}, check=True)
            best_sec[key] = min(best_sec[key], time.perf_counter() - t0)
    return [{"backbone": "cnn", "batch": 8 if mode == "cli folder" else 1, "mode": mode, "variant": variant,
             "images_per_s": n / sec, "ms_per_image": 1e3 * sec / n} for (mode, variant), sec in best_sec.items()]


def naive_folder(folder: str, weights: str) -> None:
    """The official script's loop: load the model, then per file decode, resize on the CPU, score."""
    naive = official_model("cnn", weights, "cpu")
    with torch.no_grad():
        for f in sorted(Path(folder).iterdir()):
            x = to_model_input(load_image(f)[None].float() / 255, "cnn")
            print(f.name, naive.net(x.contiguous()).mean().item())


def forward_vs_matmul(model: IFQA, score_b8, n: int = 4096) -> list[dict]:
    """`cnn` batch-8 scoring against the n x n fp32 matmul, interleaved so drifts in machine speed cancel.

    Two paths: the default (Winograd on) and direct convolution. ``executed_fraction`` counts the FLOPs
    each path runs; ``nominal_fraction`` counts the official 53.1 GFLOP per image for both."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm_flops = 2.0 * n ** 3
    out = []
    for variant, winograd in (("default", True), ("direct conv", False)):
        model.net.winograd = winograd
        flops = executed_flops(score_b8)
        t_ratio = interleaved_ratio(lambda: a @ b, score_b8, rounds=5)  # t_score / t_matmul
        out.append({"backbone": "cnn", "batch": 8, "mode": "A/B score vs matmul", "variant": variant,
                    "executed_fraction": flops / mm_flops / t_ratio,
                    "nominal_fraction": OFFICIAL_CNN_GFLOP * 1e9 * 8 / mm_flops / t_ratio})
        print(f"  cnn b8 score [{variant}] vs matmul, interleaved: {out[-1]['executed_fraction']:.3f} of peak "
              f"(executed FLOPs), {out[-1]['nominal_fraction']:.3f} (official FLOPs)", flush=True)
    model.net.winograd = True
    return out


def lite_vs_cnn_loss(tmp: Path, batch: int = 8, lite_calls: int = 8) -> dict:
    """Loss forward+backward per image, `lite` vs `cnn`, interleaved (``lite_calls`` lite calls per cnn call)."""
    models = {bb: IFQALoss(backbone=bb, weights=weights_for(bb, tmp)) for bb in ("lite", "cnn")}
    xs = {bb: torch.rand(batch, 3, 256, 256, requires_grad=True) for bb in models}

    def step(bb):
        xs[bb].grad = None
        models[bb](xs[bb]).backward()

    def lite():
        for _ in range(lite_calls):
            step("lite")

    speedup = lite_calls * interleaved_ratio(lite, lambda: step("cnn"), rounds=4)
    print(f"  lite vs cnn loss b{batch}, interleaved: {speedup:.1f}x", flush=True)
    return {"backbone": "lite", "batch": batch, "mode": "A/B loss fwd+bwd", "variant": "lite vs cnn", "speedup": speedup}


def interleaved_ratio(fn_a, fn_b, rounds: int = 5) -> float:
    """Median of per-round time(b) / time(a), with a and b alternating: robust to drifting machine load."""
    fn_a(), fn_b()  # warm-up
    ratios = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn_a()
        ta = time.perf_counter() - t0
        t0 = time.perf_counter()
        fn_b()
        ratios.append((time.perf_counter() - t0) / ta)
    return float(np.median(ratios))


def variants(backbone: str, cpu: bool, compile_: bool) -> list[tuple[str, dict]]:
    """Execution variants measured per backbone; the first is the library's default on that device."""
    conv = backbone in ("lite", "cnn")
    if cpu:
        out = [("fp32", {})]
        if conv:
            out += [("fp32 channels_last", {"cl": True}), ("fp32 direct conv", {"direct": True}),
                    ("fp32 unfused upsample", {"unfused": True})]
        if compile_ and conv:
            out.append(("fp32 compiled", {"compile": True}))
        return out
    out = [("fp32", {}), ("bf16", {"bf16": True})]
    if conv:
        out.append(("bf16 channels_last", {"bf16": True, "cl": True}))
    if compile_ and conv:
        out.append(("bf16 compiled", {"bf16": True, "cl": conv, "compile": True}))
    return out


def prepare(model: IFQA, opts: dict):
    """A callable images -> scores for one variant, and the input memory format."""
    net = model.net
    if hasattr(net, "fused_upsample"):
        net.fused_upsample = not opts.get("unfused", False)
        net.winograd = not opts.get("direct", False)
        net.narrow_conv = True
    fmt = torch.channels_last if opts.get("cl") else torch.contiguous_format
    net.to(memory_format=fmt)
    fwd = model
    if opts.get("compile"):  # the network only, as one graph (IFQA.compile); a fresh copy, so others stay eager
        fwd = copy.deepcopy(model)
        fwd.compile()

    def run(x):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bool(opts.get("bf16"))):
            return fwd(x).score
    return run, fmt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["lite", "cnn"], help="add 'vit' for IFQA++ (slow on CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds per measurement")
    ap.add_argument("--quick", action="store_true", help="batch sizes 1 and 4 only, short timings")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (reports compile time)")
    ap.add_argument("--batches", type=int, nargs="+", help="override the batch sizes")
    ap.add_argument("--out", default=str(RESULTS / "speed.json"))
    ap.add_argument("--naive-folder", help=argparse.SUPPRESS)  # internal: one process of the naive folder loop
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.naive_folder:
        naive_folder(args.naive_folder, args.weights)
        return
    dev = args.device
    cpu = dev == "cpu"
    tmp = Path(tempfile.mkdtemp(prefix="ifqa-speed-"))
    min_time = 1.0 if args.quick else args.min_time
    rows, records = [], []
    peak = matmul_peak(dev, min_time)
    print(f"device {dev}; 4096x4096 fp32 matmul: {peak:.1f} GFLOP/s (practical fp32 peak)")
    bf16_peak = bf16_practical = None
    if not cpu:
        bf16_peak = nominal_bf16_peak()
        bf16_practical = matmul_peak(dev, min_time, n=8192, dtype=torch.bfloat16)
        print(f"{torch.cuda.get_device_name(0)}: 8192^3 bf16 matmul {bf16_practical / 1e3:.0f} TFLOP/s; "
              f"datasheet dense bf16 peak {bf16_peak / 1e12 if bf16_peak else float('nan'):.0f} TFLOP/s")

    if "cnn" in args.backbones and not args.quick and cpu:
        # First, while this process is small: a parent holding GBs of freed tensors measurably slowed the
        # batch-8 child processes (by 10-15 % in one test), and a user's shell holds nothing.
        folder_runs = cli_end_to_end(weights_for("cnn", tmp), tmp, n=64, rounds=3)
        records.extend(folder_runs)
        for r in folder_runs:
            print(f"  cnn {r['mode']} [{r['variant']}]: {r['images_per_s']:.2f} img/s", flush=True)

    for bb in args.backbones:
        model = IFQA(backbone=bb, weights=weights_for(bb, tmp)).to(dev)
        size = model.native_size
        if args.batches:
            batches = args.batches
        elif args.quick:
            batches = [1, 4]
        elif cpu:
            batches = {"lite": [1, 8, 32], "cnn": [1, 8], "vit": [1]}[bb]
        else:
            batches = [1, 8, 32] if bb == "vit" else [1, 8, 32, 128]
        for name, opts in variants(bb, cpu, args.compile):
            run, fmt = prepare(model, opts)
            all_batches = name == "fp32" or (not cpu and not opts.get("compile"))
            for bs in (batches if all_batches else batches[-1:]):
                x = torch.rand(bs, 3, size, size, device=dev).contiguous(memory_format=fmt)
                xg = x.clone().requires_grad_(True)

                def score():
                    with torch.inference_mode():
                        run(x)

                def loss():
                    xg.grad = None
                    (1 - run(xg)).mean().backward()

                for mode, fn in (("score", score), ("loss fwd+bwd", loss)):
                    compile_s = None
                    if opts.get("compile"):
                        t0 = time.perf_counter()
                        fn()
                        if not cpu:
                            torch.cuda.synchronize()
                        compile_s = time.perf_counter() - t0
                    flops = executed_flops(fn) / bs if not opts.get("compile") else None
                    if not cpu:
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                    sec = timeit(fn, min_time)
                    mem = peak_rss_mb() if cpu else torch.cuda.max_memory_allocated() / 2 ** 20
                    if flops is None:  # compiled: same math as the eager variant
                        same = "fp32" if cpu else "bf16 channels_last"
                        flops = next((r["flops_per_image"] for r in records if r["backbone"] == bb and r["batch"] == bs
                                      and r["mode"] == mode and r["variant"] == same), None)
                    rec = {"backbone": bb, "batch": bs, "mode": mode, "variant": name, "images_per_s": bs / sec,
                           "ms_per_image": 1e3 * sec / bs, "flops_per_image": flops, "peak_mem_mb": mem,
                           "mem_per_image_mb": None if cpu else mem / bs, "compile_s": compile_s}
                    rec["gflops_per_s"] = flops * bs / sec / 1e9 if flops else None
                    rec["fraction_of_fp32_peak"] = rec["gflops_per_s"] / peak if flops else None
                    if bf16_peak and flops:
                        rec["fraction_of_bf16_peak"] = rec["gflops_per_s"] * 1e9 / bf16_peak
                    records.append(rec)
                    print(f"  {bb} b{bs} {mode} [{name}]: {rec['images_per_s']:.1f} img/s", flush=True)
                    frac = rec.get("fraction_of_bf16_peak", rec["fraction_of_fp32_peak"])
                    rows.append([bb, bs, mode, name, rec["images_per_s"], rec["ms_per_image"],
                                 rec["gflops_per_s"] or "", frac if frac is not None else "", f"{mem:.0f}",
                                 f"{compile_s:.0f}" if compile_s else ""])
        prepare(model, {})
        if not cpu:  # autocast accuracy on real-looking inputs: bf16 vs fp32 scores
            x = torch.rand(32, 3, size, size, device=dev)
            with torch.inference_mode():
                ref = model(x).score
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    low = model(x).score
            records.append({"backbone": bb, "mode": "bf16 score error", "max_abs": float((ref - low).abs().max())})
        # naive reference: one image at a time, decoded file, CPU resize, parameter autograd on, official formulation
        naive = official_model(bb, weights_for(bb, tmp), dev)
        img_path = tmp / "face.png"
        from PIL import Image

        Image.fromarray((np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)).save(img_path)

        def naive_loss():
            x = load_image(img_path)[None].float() / 255
            x = to_model_input(x, bb).to(dev).requires_grad_(True)
            (1 - naive.net(x).mean()).backward()
            naive.net.zero_grad(set_to_none=True)

        sec = timeit(naive_loss, min_time)
        records.append({"backbone": bb, "batch": 1, "mode": "naive loss", "variant": "official", "images_per_s": 1 / sec,
                        "ms_per_image": 1e3 * sec})
        rows.append([bb, 1, "naive loss", "official", 1 / sec, 1e3 * sec, "", "", "", ""])
        if cpu and bb == "cnn" and not args.quick:  # Winograd vs direct convolution, interleaved A/B at batch 8
            x = torch.rand(8, 3, size, size)
            xg = x.clone().requires_grad_(True)

            def with_winograd(on, fn):
                def run():
                    model.net.winograd = on
                    fn()
                return run

            def score_ab():
                with torch.inference_mode():
                    model(x)

            def loss_ab():
                xg.grad = None
                (1 - model(xg).score).mean().backward()

            prepare(model, {})
            for mode, fn in (("score", score_ab), ("loss fwd+bwd", loss_ab)):
                r = interleaved_ratio(with_winograd(True, fn), with_winograd(False, fn), rounds=3 if mode == "score" else 2)
                records.append({"backbone": bb, "batch": 8, "mode": f"A/B {mode}", "variant": "winograd vs direct conv",
                                "speedup": r})
                print(f"  {bb} b8 {mode}: Winograd {r:.3f}x direct convolution (interleaved)", flush=True)
            model.net.winograd = True
            records.extend(forward_vs_matmul(model, score_ab))
        del model, naive
        if not cpu:
            torch.cuda.empty_cache()


    if cpu and not args.quick and {"lite", "cnn"} <= set(args.backbones):
        records.append(lite_vs_cnn_loss(tmp))
    rows.extend([[r["backbone"], r["batch"], r["mode"], r["variant"], r["images_per_s"], r["ms_per_image"], "", "", "", ""]
                 for r in records if r["mode"] in ("cli folder", "naive folder")])
    print_table("throughput", ["backbone", "batch", "mode", "variant", "img/s", "ms/img", "GFLOP/s",
                               "of bf16 peak" if not cpu else "of fp32 peak", "peak MB", "compile s"], rows)
    ratios = summarize(records, args.backbones, cpu, peak)
    print_table("ratios and targets (same run)", ["ratio", "value"], [[k, v] for k, v in ratios.items()])
    write_json(Path(args.out), {"device": dev, "machine": machine(), "matmul_gflops": peak,
                                "bf16_matmul_gflops": bf16_practical, "bf16_datasheet_peak_flops": bf16_peak,
                                "records": records, "ratios": ratios})


def summarize(records: list[dict], backbones: list[str], cpu: bool, peak: float | None = None) -> dict:
    timed = [r for r in records if "images_per_s" in r]
    default = "fp32"

    def best(bb, mode, variant=None, batch=None):
        cands = [r for r in timed if r["backbone"] == bb and r["mode"] == mode and variant in (None, r["variant"])
                 and batch in (None, r["batch"])]
        return max(cands, key=lambda r: r["images_per_s"]) if cands else None

    ratios = {}
    for b in (32, 8, 4, 1):
        lite, cnn = best("lite", "loss fwd+bwd", default, b), best("cnn", "loss fwd+bwd", default, b)
        if lite and cnn:
            ratios[f"lite_vs_cnn_loss_b{b} (sequential)"] = lite["images_per_s"] / cnn["images_per_s"]
            break
    for bb in backbones:
        naive = best(bb, "naive loss")
        top = best(bb, "loss fwd+bwd")
        if naive and top:
            ratios[f"{bb}_loss_vs_naive ({top['variant']}, b{top['batch']})"] = top["images_per_s"] / naive["images_per_s"]
        fwd = [r for r in timed if r["backbone"] == bb and r["mode"] == "score" and r["variant"] == default and r.get("fraction_of_fp32_peak")]
        if fwd and cpu:
            ratios[f"{bb}_forward_fraction_of_fp32_peak"] = max(r["fraction_of_fp32_peak"] for r in fwd)
        if cpu and bb in ("lite", "cnn"):
            a, u = best(bb, "score", "fp32"), best(bb, "score", "fp32 unfused upsample")
            if a and u and a["batch"] == u["batch"]:
                ratios[f"{bb}_fused_vs_unfused_upsample_score"] = a["images_per_s"] / u["images_per_s"]
            for r in records:
                if r["backbone"] == bb and r["variant"] == "winograd vs direct conv":
                    ratios[f"{bb}_winograd_vs_direct_{r['mode'][4:].split()[0]}_b8 (interleaved)"] = r["speedup"]
            fwd_all = [r for r in timed if r["backbone"] == bb and r["mode"] == "score" and r.get("fraction_of_fp32_peak")]
            if fwd_all:
                top = max(fwd_all, key=lambda r: r["fraction_of_fp32_peak"])
                ratios[f"{bb}_forward_fraction_of_fp32_peak, any variant ({top['variant']}, b{top['batch']})"] = top["fraction_of_fp32_peak"]
            if bb == "cnn" and fwd and peak:
                top = max(fwd, key=lambda r: r["images_per_s"])
                ratios["cnn_forward_effective_fraction (official 53.1 GFLOP/image, default path)"] = (
                    OFFICIAL_CNN_GFLOP * top["images_per_s"] / peak)
        if not cpu:
            top_bf = max((r for r in timed if r["backbone"] == bb and r["mode"] == "loss fwd+bwd" and "bf16" in r["variant"]),
                         key=lambda r: r["images_per_s"], default=None)
            if top_bf:
                ratios[f"{bb}_bf16_loss_images_per_s ({top_bf['variant']}, b{top_bf['batch']})"] = top_bf["images_per_s"]
                if top_bf.get("fraction_of_bf16_peak") is not None:
                    ratios[f"{bb}_bf16_loss_fraction_of_bf16_peak"] = top_bf["fraction_of_bf16_peak"]
                ratios[f"{bb}_bf16_loss_mem_per_image_mb"] = top_bf["mem_per_image_mb"]
            err = [r["max_abs"] for r in records if r["backbone"] == bb and r["mode"] == "bf16 score error"]
            if err:
                ratios[f"{bb}_bf16_score_max_abs_error"] = err[0]
    for r in records:
        if r["mode"] == "A/B loss fwd+bwd" and r["variant"] == "lite vs cnn":
            ratios[f"lite_vs_cnn_loss_b{r['batch']} (interleaved)"] = r["speedup"]
        if r["mode"] == "A/B score vs matmul":
            ratios[f"cnn_forward_fraction_of_fp32_peak ({r['variant']}, interleaved with the matmul)"] = r["executed_fraction"]
            if r["variant"] == "default":
                ratios["cnn_forward_effective_fraction (official 53.1 GFLOP/image, default path, interleaved)"] = (
                    r["nominal_fraction"])
    cli, naive = best("cnn", "cli folder", "ifqa score"), best("cnn", "naive folder")
    if cli and naive:
        ratios["cnn_cli_folder_vs_naive"] = cli["images_per_s"] / naive["images_per_s"]
        plain = best("cnn", "cli folder", "ifqa score, glibc malloc defaults")
        if plain:
            ratios["cnn_cli_folder_vs_naive, glibc malloc defaults"] = plain["images_per_s"] / naive["images_per_s"]
    return ratios


if __name__ == "__main__":
    main()
