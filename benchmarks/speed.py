"""Speed and memory of IFQA scoring and of the loss (forward + backward to the input).

Prints tables and writes JSON. Every ratio compares numbers measured in this one run:
- per backbone / batch size / mode: images/s, ms/image, peak memory (RSS on CPU, max allocated on CUDA);
- a naive reference path as the official script runs: per image, decoded file resized on the CPU, fp32,
  parameters with autograd on, the official decoder and direct convolution;
- CPU: a 4096x4096 fp32 matmul as the practical peak, and the fraction of it that `cnn` forward reaches;
- end to end: `ifqa score` over a folder of 64 faces vs the naive per-image loop, each a whole process;
- CPU fast paths (ifqa_loss/models/_cpu_kernels.py): each kernel against PyTorch's convolution on the
  U-Net's own layer shapes, and each switch (fused upsample, Winograd, narrow output layer, channels_last)
  on vs off for the whole network, interleaved. docs/speed.md reads its rules from these.

Timings are torch.utils.benchmark medians. The JSON records the CPU (model name, ISA flags, the
capability PyTorch dispatches on); its keys and its mode/variant names are identifiers.

Usage: python benchmarks/speed.py [--backbones lite cnn] [--quick] [--fast-paths-only] [--out FILE]
Without --out, a complete run (default backbones and batch sizes, not --quick) writes
benchmarks/results/speed.json and any other run benchmarks/results/speed_partial.json.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import resource
import sys
import tempfile
import time
import timeit as _timeit
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

from common import RESULTS, SHARED, machine, print_table, write_json
from ifqa_loss import IFQA, IFQALoss
from ifqa_loss.cpu_memory import OPT_OUT_ENV
from ifqa_loss.io import load_image
from ifqa_loss.models import _cpu_kernels
from ifqa_loss.preprocess import to_model_input


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


def timeit(fn, min_time: float, timer=_timeit.default_timer) -> float:
    """Median seconds per call of ``fn``: ``torch.utils.benchmark.Timer.blocked_autorange`` (one warm-up
    call, then calls until ``min_time`` has passed; CUDA is synchronised around each block)."""
    return Timer("fn()", globals={"fn": fn}, timer=timer).blocked_autorange(min_run_time=min_time).median


def cpu_info() -> dict:
    """The CPU this run measured: model name, the ISA flags the fast-path rules care about, and the
    capability PyTorch's CPU kernels dispatch on (``torch.backends.cpu.get_cpu_capability()``)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"model_name": name, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            **{f: f in flags for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")},
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


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
    of load on this shared machine does not decide the ratio. A whole process is one sample, timed by
    the wall clock (a Timer's warm-up call would double the cost)."""
    import subprocess

    folder = face_folder(tmp, n)
    cli = [sys.executable, "-m", "ifqa_loss", "score", str(folder), "--weights", weights, "--json", "--no-progress",
           "--batch-size", "8"]
    runs = {
        ("cli_folder", "ifqa_score"): (cli, {}),
        ("cli_folder", "ifqa_score_glibc_malloc_defaults"): (cli, {OPT_OUT_ENV: "1"}),
        ("naive_folder", "official"): ([sys.executable, str(Path(__file__).resolve()), "--naive-folder", str(folder),
                                         "--weights", weights], {}),
    }
    best_sec = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for key, (cmd, env) in runs.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, env={**os.environ, **env}, check=True)
            best_sec[key] = min(best_sec[key], time.perf_counter() - t0)
    return [{"backbone": "cnn", "batch": 8 if mode == "cli_folder" else 1, "mode": mode, "variant": variant,
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
    for variant, winograd in (("default", True), ("direct_conv", False)):
        model.net.winograd = winograd
        flops = executed_flops(score_b8)
        t_ratio = interleaved_ratio(lambda: a @ b, score_b8, rounds=5)  # t_score / t_matmul
        out.append({"backbone": "cnn", "batch": 8, "mode": "ab_score_vs_matmul", "variant": variant,
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
    return {"backbone": "lite", "batch": batch, "mode": "ab_loss_fwd_bwd", "variant": "lite_vs_cnn", "speedup": speedup}


def interleaved(fn_a, fn_b, rounds: int = 5, min_time: float = 0.0,
                timer=_timeit.default_timer) -> tuple[float, float, float]:
    """(median of per-round time(b) / time(a), median time(a), median time(b)) in seconds, a and b
    alternating: the ratio is robust to drifting machine load.

    Each side of a round is one ``Timer.blocked_autorange(min_run_time=min_time)``: a warm-up call right
    before its timed calls, so neither side runs cold after the other."""
    ta, tb = (Timer("fn()", globals={"fn": fn}, timer=timer) for fn in (fn_a, fn_b))
    times = []
    for _ in range(rounds):
        a = ta.blocked_autorange(min_run_time=min_time).median
        times.append((a, tb.blocked_autorange(min_run_time=min_time).median))
    return (float(np.median([b / a for a, b in times])), float(np.median([a for a, _ in times])),
            float(np.median([b for _, b in times])))


def interleaved_ratio(fn_a, fn_b, rounds: int = 5, min_time: float = 0.0, timer=_timeit.default_timer) -> float:
    """Median of per-round time(b) / time(a), a and b alternating (see :func:`interleaved`)."""
    return interleaved(fn_a, fn_b, rounds, min_time, timer)[0]


#: CPU layer shapes of the ``cnn`` U-Net at 256x256 (c_in, c_out, map side): each kernel is timed
#: against PyTorch's convolution on the layers it could take, and a few it could not.
WINOGRAD_LAYERS = [(256, 512, 16), (512, 512, 16), (512, 1024, 8), (1024, 1024, 8), (1024, 512, 16), (256, 256, 32),
                   (128, 128, 16)]
NARROW_LAYERS = [(64, 1, 256), (16, 1, 256), (8, 1, 256), (64, 4, 256)]
UPSAMPLE_LAYERS = [(1024, 1024, 8), (512, 512, 16), (256, 256, 32), (128, 128, 64), (64, 64, 128), (8, 8, 128)]


def layer_ab(min_time: float, batch: int = 8) -> list[dict]:
    """Each CPU kernel vs PyTorch's convolution on single layers, forward and forward+backward to the input
    (the weights frozen, as in the loss): ms per call and speed-up."""
    g = torch.Generator().manual_seed(0)
    out = []
    K = _cpu_kernels

    def plain_conv(w, b):
        return lambda x: F.conv2d(x, w, b, padding=1)

    cases = []
    for c_in, c_out, side in WINOGRAD_LAYERS:
        w, b = torch.randn(c_out, c_in, 3, 3, generator=g) * 0.02, torch.randn(c_out, generator=g)
        k = K.winograd_kernel(w).contiguous()
        cases.append(("winograd", c_in, c_out, side, plain_conv(w, b), lambda x, k=k, b=b: K.winograd_conv3x3(x, k, b)))
    for c_in, c_out, side in NARROW_LAYERS:
        w, b = torch.randn(c_out, c_in, 3, 3, generator=g) * 0.02, torch.randn(c_out, generator=g)
        k = K.narrow_kernel(w).contiguous()
        cases.append(("narrow", c_in, c_out, side, plain_conv(w, b), lambda x, k=k, b=b: K.narrow_conv3x3(x, k, b)))
    for c_in, c_out, side in UPSAMPLE_LAYERS:
        w, b = torch.randn(c_out, c_in, 3, 3, generator=g) * 0.02, torch.randn(c_out, generator=g)
        k = K.transposed_kernel(w).contiguous()
        cases.append(("fused_upsample", c_in, c_out, side,
                      lambda x, w=w, b=b: F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, b, padding=1),
                      lambda x, k=k, b=b: F.conv_transpose2d(x, k, b, stride=2, padding=1)))
    for path, c_in, c_out, side, plain, fast in cases:
        x = torch.randn(batch, c_in, side, side, generator=g)
        xg = x.clone().requires_grad_(True)

        def fwd(f):
            def run():
                with torch.inference_mode():
                    f(x)
            return run

        def fwd_bwd(f):
            def run():
                xg.grad = None
                f(xg).sum().backward()
            return run

        for mode, wrap in (("layer_fwd", fwd), ("layer_fwd_bwd", fwd_bwd)):
            tp, tf = timeit(wrap(plain), min_time), timeit(wrap(fast), min_time)
            out.append({"backbone": "layer", "batch": batch, "mode": mode, "variant": f"{path}_{c_in}_{c_out}_{side}",
                        "path": path, "plain_ms": 1e3 * tp, "fast_ms": 1e3 * tf, "speedup": tp / tf})
            print(f"  layer {path} {c_in}->{c_out} @{side} b{batch} {mode}: {1e3 * tp:.1f} -> {1e3 * tf:.1f} ms "
                  f"({tp / tf:.2f}x)", flush=True)
    return out


#: Whole-network switches: the fast path's flag on the U-Net (or the memory format), on vs off.
#: ``control`` switches nothing: its "speed-up" is this machine's noise floor for the comparison.
NETWORK_SWITCHES = ("fused_upsample", "winograd", "narrow_conv", "channels_last", "control")


def network_ab(model: IFQA, backbone: str, batch: int, rounds: int,
               switches: tuple[str, ...] = NETWORK_SWITCHES) -> list[dict]:
    """Each switch on vs off for the whole network, the others at their defaults, interleaved.

    ``speedup`` > 1: faster with the switch on, as the rule in ``_cpu_kernels.fast_path`` applies it on this
    CPU. channels_last compares two copies of the model (converting one copy back and forth would be timed)."""
    size = model.native_size
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    prepare(model, {})
    models = {False: model, True: model}
    out = []
    for switch in switches:
        if switch == "winograd" and max(model.net.widths) < _cpu_kernels.WINOGRAD_MIN_CHANNELS:
            continue  # no layer is wide enough: on and off run the same code
        if switch == "channels_last":
            models = {False: model, True: copy.deepcopy(model)}
            prepare(models[True], {"cl": True})

        def setting(on, fn, switch=switch):
            fmt = torch.channels_last if switch == "channels_last" and on else torch.contiguous_format
            m, inp = models[on], x.contiguous(memory_format=fmt)

            def run():
                if switch not in ("channels_last", "control"):
                    setattr(m.net, switch, on)
                fn(m, inp)
            return run

        def score(m, inp):
            with torch.inference_mode():
                m(inp)

        def loss(m, inp):
            (1 - m(inp.detach().requires_grad_(True)).score).mean().backward()

        for mode, fn in (("ab_score", score), ("ab_loss_fwd_bwd", loss)):
            r, t_off, t_on = interleaved(setting(False, fn), setting(True, fn), rounds=rounds)
            out.append({"backbone": backbone, "batch": batch, "mode": mode, "variant": f"{switch}_on_vs_off",
                        "path": switch, "speedup": 1.0 / r, "off_ms": 1e3 * t_off, "on_ms": 1e3 * t_on,
                        "rounds": rounds})
            print(f"  {backbone} b{batch} {mode}: {switch} on {1.0 / r:.3f}x off (interleaved)", flush=True)
        if switch not in ("channels_last", "control"):
            setattr(model.net, switch, True)
    return out


def variants(backbone: str, cpu: bool, compile_: bool) -> list[tuple[str, dict]]:
    """Execution variants measured per backbone; the first is the library's default on that device."""
    conv = backbone in ("lite", "cnn")
    if cpu:
        out = [("fp32", {})]
        if conv:
            out += [("fp32_channels_last", {"cl": True}), ("fp32_direct_conv", {"direct": True}),
                    ("fp32_unfused_upsample", {"unfused": True})]
        if compile_ and conv:
            out.append(("fp32_compiled", {"compile": True}))
        return out
    out = [("fp32", {}), ("bf16", {"bf16": True})]
    if conv:
        out.append(("bf16_channels_last", {"bf16": True, "cl": True}))
    if compile_ and conv:
        out.append(("bf16_compiled", {"bf16": True, "cl": conv, "compile": True}))
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


DEFAULT_BACKBONES = ["lite", "cnn"]


def default_batches(backbone: str, cpu: bool, quick: bool) -> list[int]:
    if quick:
        return [1, 4]
    if cpu:
        return {"lite": [1, 8, 32], "cnn": [1, 8], "vit": [1]}[backbone]
    return [1, 8, 32] if backbone == "vit" else [1, 8, 32, 128]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=DEFAULT_BACKBONES, help="add 'vit' for IFQA++ (slow on CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds per measurement")
    ap.add_argument("--quick", action="store_true", help="batch sizes 1 and 4 only, short timings")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (reports compile time)")
    ap.add_argument("--batches", type=int, nargs="+", help="override the batch sizes")
    ap.add_argument("--fast-paths-only", action="store_true",
                    help="CPU: only the fast-path comparisons (single layers, then each switch on the whole network)")
    ap.add_argument("--ab-rounds", type=int, default=3, help="rounds of each interleaved whole-network comparison")
    ap.add_argument("--switches", nargs="+", choices=NETWORK_SWITCHES, default=list(NETWORK_SWITCHES),
                    help="whole-network comparisons to run (default: all)")
    ap.add_argument("--no-layers", action="store_true", help="skip the single-layer kernel comparisons")
    ap.add_argument("--out", help="JSON file (default: results/speed.json for a complete run, else speed_partial.json)")
    ap.add_argument("--naive-folder", help=argparse.SUPPRESS)  # internal: one process of the naive folder loop
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.naive_folder:
        naive_folder(args.naive_folder, args.weights)
        return
    dev = args.device
    cpu = dev == "cpu"
    complete = (not args.quick and not args.batches and not args.fast_paths_only
                and set(DEFAULT_BACKBONES) <= set(args.backbones))
    out_path = Path(args.out) if args.out else RESULTS / ("speed.json" if complete else "speed_partial.json")
    tmp = Path(tempfile.mkdtemp(prefix="ifqa-speed-"))
    min_time = 1.0 if args.quick else args.min_time
    rows, records = [], []
    cpu_desc = cpu_info()
    print(f"CPU: {cpu_desc['model_name']}; torch CPU capability {cpu_desc['torch_cpu_capability']}; "
          f"fast-path rule {_cpu_kernels.cpu_rule()}")
    peak = matmul_peak(dev, min_time)
    print(f"device {dev}; 4096x4096 fp32 matmul: {peak:.1f} GFLOP/s (practical fp32 peak)")
    bf16_peak = bf16_practical = None
    if not cpu:
        bf16_peak = nominal_bf16_peak()
        bf16_practical = matmul_peak(dev, min_time, n=8192, dtype=torch.bfloat16)
        print(f"{torch.cuda.get_device_name(0)}: 8192^3 bf16 matmul {bf16_practical / 1e3:.0f} TFLOP/s; "
              f"datasheet dense bf16 peak {bf16_peak / 1e12 if bf16_peak else float('nan'):.0f} TFLOP/s")

    if args.fast_paths_only:
        if not cpu:
            raise SystemExit("--fast-paths-only measures the CPU kernels; run it with --device cpu")
        if not args.no_layers:
            records.extend(layer_ab(min(min_time, 1.0)))
        for bb in args.backbones:
            model = IFQA(backbone=bb, weights=weights_for(bb, tmp))
            for bs in args.batches or [{"lite": 32, "cnn": 8}.get(bb, 1)]:
                records.extend(network_ab(model, bb, bs, args.ab_rounds, tuple(args.switches)))
            del model
        args.backbones = []  # nothing else to measure

    if "cnn" in args.backbones and not args.quick and cpu:
        # First, while this process is small: a parent holding GBs of freed tensors measurably slowed the
        # batch-8 child processes, and a user's shell holds nothing.
        folder_runs = cli_end_to_end(weights_for("cnn", tmp), tmp, n=64, rounds=3)
        records.extend(folder_runs)
        for r in folder_runs:
            print(f"  cnn {r['mode']} [{r['variant']}]: {r['images_per_s']:.2f} img/s", flush=True)

    for bb in args.backbones:
        model = IFQA(backbone=bb, weights=weights_for(bb, tmp)).to(dev)
        size = model.native_size
        batches = args.batches or default_batches(bb, cpu, args.quick)
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

                for mode, fn in (("score", score), ("loss_fwd_bwd", loss)):
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
                        same = "fp32" if cpu else "bf16_channels_last"
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
            records.append({"backbone": bb, "mode": "bf16_score_error", "max_abs": float((ref - low).abs().max())})
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
        records.append({"backbone": bb, "batch": 1, "mode": "naive_loss", "variant": "official",
                        "images_per_s": 1 / sec,
                        "ms_per_image": 1e3 * sec})
        rows.append([bb, 1, "naive_loss", "official", 1 / sec, 1e3 * sec, "", "", "", ""])
        if cpu and bb in ("lite", "cnn") and not args.quick:  # each fast path on vs off, interleaved
            records.extend(network_ab(model, bb, {"lite": 32, "cnn": 8}[bb], args.ab_rounds, tuple(args.switches)))
            if bb == "cnn":
                x = torch.rand(8, 3, size, size)

                def score_b8():
                    with torch.inference_mode():
                        model(x)

                records.extend(forward_vs_matmul(model, score_b8))
        model = naive = None  # freed before the next backbone
        if not cpu:
            torch.cuda.empty_cache()

    if cpu and not args.quick and not args.fast_paths_only and not args.no_layers:
        records.extend(layer_ab(min(min_time, 1.0)))
    if cpu and not args.quick and {"lite", "cnn"} <= set(args.backbones):
        records.append(lite_vs_cnn_loss(tmp))
    rows.extend([[r["backbone"], r["batch"], r["mode"], r["variant"], r["images_per_s"], r["ms_per_image"]] + [""] * 4
                 for r in records if r["mode"] in ("cli_folder", "naive_folder")])
    if rows:
        print_table("throughput", ["backbone", "batch", "mode", "variant", "img/s", "ms/img", "GFLOP/s",
                                   "of bf16 peak" if not cpu else "of fp32 peak", "peak MB", "compile s"], rows)
    ratios = summarize(records, args.backbones, cpu, peak)
    print_table("ratios and targets (same run)", ["ratio", "value"], [[k, v] for k, v in ratios.items()])
    write_json(out_path, {"device": dev, "complete_run": complete, "argv": sys.argv[1:], "machine": machine(),
                          "cpu": cpu_desc, "fast_path_rule": _cpu_kernels.cpu_rule()._asdict(), "matmul_gflops": peak,
                          "bf16_matmul_gflops": bf16_practical, "bf16_datasheet_peak_flops": bf16_peak,
                          "records": records, "ratios": ratios})


def summarize(records: list[dict], backbones: list[str], cpu: bool, peak: float | None = None) -> dict:
    """Same-run ratios, keyed by identifiers: ``<backbone>_<what>[_b<batch>]``."""
    timed = [r for r in records if "images_per_s" in r]
    default = "fp32"

    def best(bb, mode, variant=None, batch=None):
        cands = [r for r in timed if r["backbone"] == bb and r["mode"] == mode and variant in (None, r["variant"])
                 and batch in (None, r["batch"])]
        return max(cands, key=lambda r: r["images_per_s"]) if cands else None

    ratios = {}
    for b in (32, 8, 4, 1):
        lite, cnn = best("lite", "loss_fwd_bwd", default, b), best("cnn", "loss_fwd_bwd", default, b)
        if lite and cnn:
            ratios[f"lite_vs_cnn_loss_b{b}_sequential"] = lite["images_per_s"] / cnn["images_per_s"]
            break
    for bb in backbones:
        naive = best(bb, "naive_loss")
        top = best(bb, "loss_fwd_bwd")
        if naive and top:
            ratios[f"{bb}_loss_vs_naive_{top['variant']}_b{top['batch']}"] = top["images_per_s"] / naive["images_per_s"]
        fwd = [r for r in timed if r["backbone"] == bb and r["mode"] == "score" and r["variant"] == default
               and r.get("fraction_of_fp32_peak")]
        if fwd and cpu:
            ratios[f"{bb}_forward_fraction_of_fp32_peak"] = max(r["fraction_of_fp32_peak"] for r in fwd)
        if cpu and bb in ("lite", "cnn"):
            a, u = best(bb, "score", "fp32"), best(bb, "score", "fp32_unfused_upsample")
            if a and u and a["batch"] == u["batch"]:
                ratios[f"{bb}_fused_vs_unfused_upsample_score_sequential"] = a["images_per_s"] / u["images_per_s"]
            fwd_all = [r for r in timed if r["backbone"] == bb and r["mode"] == "score"
                       and r.get("fraction_of_fp32_peak")]
            if fwd_all:
                top = max(fwd_all, key=lambda r: r["fraction_of_fp32_peak"])
                key = f"{bb}_forward_fraction_of_fp32_peak_best_{top['variant']}_b{top['batch']}"
                ratios[key] = top["fraction_of_fp32_peak"]
            if bb == "cnn" and fwd and peak:
                top = max(fwd, key=lambda r: r["images_per_s"])
                ratios["cnn_forward_fraction_of_fp32_peak_at_official_flops"] = (
                    OFFICIAL_CNN_GFLOP * top["images_per_s"] / peak)
        if not cpu:
            top_bf = max((r for r in timed
                          if r["backbone"] == bb and r["mode"] == "loss_fwd_bwd" and "bf16" in r["variant"]),
                         key=lambda r: r["images_per_s"], default=None)
            if top_bf:
                ratios[f"{bb}_bf16_loss_images_per_s_{top_bf['variant']}_b{top_bf['batch']}"] = top_bf["images_per_s"]
                if top_bf.get("fraction_of_bf16_peak") is not None:
                    ratios[f"{bb}_bf16_loss_fraction_of_bf16_peak"] = top_bf["fraction_of_bf16_peak"]
                ratios[f"{bb}_bf16_loss_mem_per_image_mb"] = top_bf["mem_per_image_mb"]
            err = [r["max_abs"] for r in records if r["backbone"] == bb and r["mode"] == "bf16_score_error"]
            if err:
                ratios[f"{bb}_bf16_score_max_abs_error"] = err[0]
    for r in records:
        if r["mode"] in ("ab_score", "ab_loss_fwd_bwd") and r.get("path"):
            mode = "score" if r["mode"] == "ab_score" else "loss"
            ratios[f"{r['backbone']}_{r['path']}_on_vs_off_{mode}_b{r['batch']}_interleaved"] = r["speedup"]
        if r["mode"] == "ab_loss_fwd_bwd" and r["variant"] == "lite_vs_cnn":
            ratios[f"lite_vs_cnn_loss_b{r['batch']}_interleaved"] = r["speedup"]
        if r["mode"] == "ab_score_vs_matmul":
            ratios[f"cnn_forward_fraction_of_fp32_peak_{r['variant']}_interleaved_with_matmul"] = r["executed_fraction"]
            if r["variant"] == "default":
                ratios["cnn_forward_fraction_of_fp32_peak_at_official_flops_interleaved"] = r["nominal_fraction"]
    cli, naive = best("cnn", "cli_folder", "ifqa_score"), best("cnn", "naive_folder")
    if cli and naive:
        ratios["cnn_cli_folder_vs_naive"] = cli["images_per_s"] / naive["images_per_s"]
        plain = best("cnn", "cli_folder", "ifqa_score_glibc_malloc_defaults")
        if plain:
            ratios["cnn_cli_folder_vs_naive_glibc_malloc_defaults"] = plain["images_per_s"] / naive["images_per_s"]
    return ratios


if __name__ == "__main__":
    main()
