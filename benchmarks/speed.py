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
- CPU bf16 (--bf16): the fp32 and bf16 matmul peaks, whether bf16 is native (AVX512-BF16/AMX), bf16 autocast
  against fp32 for score and loss (interleaved), bf16 + model.compile() (--compile), the score error on real
  faces, each kernel and switch under bf16, and cnn's bf16 scoring as a fraction of the bf16 matmul peak.

Timings are torch.utils.benchmark medians. The JSON records the CPU (model name, ISA flags, the
capability PyTorch dispatches on); its keys and its mode/variant names are identifiers.

Usage: python benchmarks/speed.py [--backbones lite cnn] [--quick] [--fast-paths-only] [--bf16 [--compile]]
       [--out FILE]
       python benchmarks/speed.py --dsl DIR|synthetic [--device cuda] [--out FILE]   (DSL-FIQA: one crop)
Without --out, a complete run (default backbones and batch sizes, not --quick) writes
benchmarks/results/speed.json and any other run benchmarks/results/speed_partial.json.
"""
from __future__ import annotations

import argparse
import contextlib
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

from common import RESULTS, SHARED, machine, print_table, synth_ckpt, write_json
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
    path = tmp / f"{backbone}.pth"
    if not path.exists():
        spec = "spec_cnn.json" if backbone == "cnn" else "spec_vit.json"
        synth_ckpt("ifqa-reference").write(spec, str(path))
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


def layer_ab(min_time: float, batch: int = 8, bf16: bool = False) -> list[dict]:
    """Each CPU kernel vs PyTorch's convolution on single layers, forward and forward+backward to the input
    (the weights frozen, as in the loss): ms per call and speed-up.

    ``bf16``: both sides under ``torch.autocast("cpu", torch.bfloat16)`` with bf16 inputs, weights and
    kernels, as the library runs them there (its kernels and weights are cached as bf16 copies)."""
    g = torch.Generator().manual_seed(0)
    out = []
    K = _cpu_kernels
    low = torch.bfloat16 if bf16 else torch.float32
    tag = "_bf16" if bf16 else ""

    def plain_conv(w, b):
        return lambda x: F.conv2d(x, w, b, padding=1)

    cases = []
    for c_in, c_out, side in WINOGRAD_LAYERS:
        w, b = torch.randn(c_out, c_in, 3, 3, generator=g) * 0.02, torch.randn(c_out, generator=g)
        k = K.winograd_kernel(w).contiguous().to(low)
        w, b = w.to(low), b.to(low)
        cases.append(("winograd", c_in, c_out, side, plain_conv(w, b), lambda x, k=k, b=b: K.winograd_conv3x3(x, k, b)))
    for c_in, c_out, side in NARROW_LAYERS:
        w, b = torch.randn(c_out, c_in, 3, 3, generator=g) * 0.02, torch.randn(c_out, generator=g)
        k = K.narrow_kernel(w).contiguous().to(low)
        w, b = w.to(low), b.to(low)
        cases.append(("narrow", c_in, c_out, side, plain_conv(w, b), lambda x, k=k, b=b: K.narrow_conv3x3(x, k, b)))
    for c_in, c_out, side in UPSAMPLE_LAYERS:
        w, b = torch.randn(c_out, c_in, 3, 3, generator=g) * 0.02, torch.randn(c_out, generator=g)
        k = K.transposed_kernel(w).contiguous().to(low)
        w, b = w.to(low), b.to(low)
        cases.append(("fused_upsample", c_in, c_out, side,
                      lambda x, w=w, b=b: F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, b, padding=1),
                      lambda x, k=k, b=b: F.conv_transpose2d(x, k, b, stride=2, padding=1)))
    for path, c_in, c_out, side, plain, fast in cases:
        x = torch.randn(batch, c_in, side, side, generator=g).to(low)
        xg = x.clone().requires_grad_(True)

        def fwd(f):
            def run():
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    f(x)
            return run

        def fwd_bwd(f):
            def run():
                xg.grad = None
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    y = f(xg)
                y.float().sum().backward()
            return run

        for mode, wrap in (("layer_fwd", fwd), ("layer_fwd_bwd", fwd_bwd)):
            tp, tf = timeit(wrap(plain), min_time), timeit(wrap(fast), min_time)
            out.append({"backbone": "layer", "batch": batch, "mode": mode + tag,
                        "variant": f"{path}_{c_in}_{c_out}_{side}", "path": path, "plain_ms": 1e3 * tp,
                        "fast_ms": 1e3 * tf, "speedup": tp / tf})
            print(f"  layer{tag} {path} {c_in}->{c_out} @{side} b{batch} {mode}: {1e3 * tp:.1f} -> {1e3 * tf:.1f} ms "
                  f"({tp / tf:.2f}x)", flush=True)
    return out


#: Whole-network switches: the fast path's flag on the U-Net (or the memory format), on vs off.
#: ``control`` switches nothing: its "speed-up" is this machine's noise floor for the comparison.
NETWORK_SWITCHES = ("fused_upsample", "winograd", "narrow_conv", "channels_last", "control")
#: Under bf16 also: the blocks' cached bf16 copies of the frozen weights (``FastPaths.bf16_weights``).
BF16_SWITCHES = NETWORK_SWITCHES + ("bf16_weights",)


def _set_blocks(model: IFQA, attr: str, on: bool) -> None:
    for m in model.net.modules():
        if isinstance(m, _cpu_kernels.FastPaths):
            setattr(m, attr, on)


def network_ab(model: IFQA, backbone: str, batch: int, rounds: int,
               switches: tuple[str, ...] = NETWORK_SWITCHES, bf16: bool = False,
               channels_last: bool = False) -> list[dict]:
    """Each switch on vs off for the whole network, the others at their defaults, interleaved.

    ``speedup`` > 1: faster with the switch on, as the rule in ``_cpu_kernels.fast_path`` applies it on this
    CPU. channels_last compares two copies of the model (converting one copy back and forth would be timed).
    ``bf16``: both sides under ``torch.autocast("cpu", torch.bfloat16)`` (the bf16 rule applies), in
    ``channels_last`` when asked (then the channels_last switch compares it with contiguous)."""
    size = model.native_size
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    prepare(model, {"cl": channels_last})
    models = {False: model, True: model}
    out = []
    suffix = "_bf16" if bf16 else ""
    for switch in switches:
        if switch == "winograd" and max(model.net.widths) < _cpu_kernels.WINOGRAD_MIN_CHANNELS:
            continue  # no layer is wide enough: on and off run the same code
        if switch == "channels_last":
            models = {False: copy.deepcopy(model), True: model} if channels_last else {False: model,
                                                                                       True: copy.deepcopy(model)}
            prepare(models[False], {})
            prepare(models[True], {"cl": True})

        def setting(on, fn, switch=switch):
            cl = on if switch == "channels_last" else channels_last
            fmt = torch.channels_last if cl else torch.contiguous_format
            m, inp = models[on], x.contiguous(memory_format=fmt)

            def run():
                if switch == "bf16_weights":
                    _set_blocks(m, "bf16_weights", on)
                elif switch not in ("channels_last", "control"):
                    setattr(m.net, switch, on)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    fn(m, inp)
            return run

        def score(m, inp):
            with torch.inference_mode():
                m(inp)

        def loss(m, inp):
            (1 - m(inp.detach().requires_grad_(True)).score).mean().backward()

        for mode, fn in (("ab_score", score), ("ab_loss_fwd_bwd", loss)):
            r, t_off, t_on = interleaved(setting(False, fn), setting(True, fn), rounds=rounds)
            out.append({"backbone": backbone, "batch": batch, "mode": mode + suffix, "variant": f"{switch}_on_vs_off",
                        "path": switch, "speedup": 1.0 / r, "off_ms": 1e3 * t_off, "on_ms": 1e3 * t_on,
                        "rounds": rounds})
            print(f"  {backbone} b{batch} {mode}{suffix}: {switch} on {1.0 / r:.3f}x off (interleaved)", flush=True)
        if switch == "bf16_weights":
            _set_blocks(model, "bf16_weights", True)
        elif switch not in ("channels_last", "control"):
            setattr(model.net, switch, True)
    prepare(model, {})
    return out


# --- bf16 on the CPU (--bf16) ------------------------------------------------------------------------------

def bf16_native(cpu: dict) -> bool:
    """Whether the CPU computes bf16 products in hardware (AVX512-BF16 or AMX); elsewhere oneDNN emulates them."""
    return bool(cpu.get("avx512_bf16") or cpu.get("amx_bf16"))


def real_faces(size: int, n: int) -> torch.Tensor:
    """``n`` held-out faces of ../shared at the native ``size`` (uniform noise if the data is absent)."""
    from ifqa_loss.io import to_batch

    src = SHARED / "data" / "faces256"
    names = (src / "val.txt").read_text().split()[:n] if (src / "val.txt").exists() else []
    if not names:
        return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    return to_batch([str(src / "images" / f) for f in names], "vit" if size == 224 else "cnn")


BF16_BATCH = {"lite": 32, "cnn": 8, "vit": 1}


def bf16_cpu(tmp: Path, backbones: list[str], min_time: float, rounds: int, compile_: bool,
             peak: float, bf16_peak: float, switches: tuple[str, ...] = BF16_SWITCHES) -> list[dict]:
    """CPU bf16 autocast against fp32, per backbone at one batch size: scores' error on real faces, then
    score and loss forward+backward as fp32 / fp32_channels_last / bf16 / bf16_channels_last (each bf16
    variant interleaved with its fp32 one), bf16 + ``model.compile()``, each fast path on vs off under bf16,
    and for ``cnn`` the best bf16 scoring interleaved with the bf16 matmul (its fraction of the bf16 peak)."""
    out = []
    n = 4096
    a, b = torch.randn(n, n).bfloat16(), torch.randn(n, n).bfloat16()
    for bb in backbones:
        model = IFQA(backbone=bb, weights=weights_for(bb, tmp))
        size, bs = model.native_size, BF16_BATCH.get(bb, 1)
        faces = real_faces(size, 16 if bb != "vit" else 2)
        with torch.inference_mode():
            ref = model(faces).score
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = model(faces).score
        err = float((ref - low).abs().max())
        out.append({"backbone": bb, "mode": "bf16_score_error", "max_abs": err, "n_images": len(faces),
                    "score_min": float(ref.min()), "score_max": float(ref.max()), "out_dtype": str(low.dtype)})
        print(f"  {bb}: bf16 vs fp32 score, {len(faces)} real faces: max |error| {err:.2e}", flush=True)
        x = torch.rand(bs, 3, size, size, generator=torch.Generator().manual_seed(0))
        conv = bb in ("lite", "cnn")
        fns = {}
        for name, opts in (("fp32", {}), ("bf16", {"bf16": True})) + (
                (("fp32_channels_last", {"cl": True}), ("bf16_channels_last", {"bf16": True, "cl": True}))
                if conv else ()):
            m = model if not opts.get("cl") else copy.deepcopy(model)
            run, fmt = prepare(m, opts)
            xi = x.contiguous(memory_format=fmt)
            xg = xi.clone().requires_grad_(True)

            def score(run=run, xi=xi):
                with torch.inference_mode():
                    run(xi)

            def loss(run=run, xg=xg):
                xg.grad = None
                (1 - run(xg)).mean().backward()
            fns[name] = {"score": score, "loss_fwd_bwd": loss}
        flops = {}
        for mode in ("score", "loss_fwd_bwd"):
            flops[mode] = executed_flops(fns["bf16"][mode]) / bs  # the bf16 rule's paths
            for fp, bf in (("fp32", "bf16"), ("fp32_channels_last", "bf16_channels_last"))[:2 if conv else 1]:
                fl32 = executed_flops(fns[fp][mode]) / bs
                r, t32, t16 = interleaved(fns[fp][mode], fns[bf][mode], rounds=rounds, min_time=min_time)
                for name, sec, fl in ((fp, t32, fl32), (bf, t16, flops[mode])):
                    out.append(_bf16_record(bb, bs, mode, name, sec, fl, peak, bf16_peak))
                out.append({"backbone": bb, "batch": bs, "mode": f"ab_{mode}_bf16_vs_fp32", "variant": f"{bf}_vs_{fp}",
                            "speedup": 1.0 / r, "rounds": rounds})
                print(f"  {bb} b{bs} {mode}: {fp} {bs / t32:.2f} img/s, {bf} {bs / t16:.2f} img/s, "
                      f"{1.0 / r:.2f}x interleaved", flush=True)
        eager = [r for r in out if r["backbone"] == bb and r.get("mode") == "score" and r["variant"].startswith("bf16")]
        best = max(eager, key=lambda r: r["images_per_s"])["variant"]
        if bb == "cnn":  # the acceptance ratio: executed FLOPs against the bf16 matmul, interleaved
            t_ratio = interleaved_ratio(lambda: a @ b, fns[best]["score"], rounds=5)
            frac = flops["score"] * bs / (2.0 * n ** 3) / t_ratio
            out.append({"backbone": bb, "batch": bs, "mode": "ab_score_vs_bf16_matmul", "variant": best,
                        "executed_fraction": frac})
            print(f"  cnn b{bs} score [{best}] vs bf16 matmul, interleaved: {frac:.3f} of the bf16 peak", flush=True)
        if compile_ and conv:
            opts = {"bf16": True, "cl": best == "bf16_channels_last", "compile": True}
            run, fmt = prepare(model, opts)
            xi = x.contiguous(memory_format=fmt)
            xg = xi.clone().requires_grad_(True)

            def c_score():
                with torch.inference_mode():
                    run(xi)

            def c_loss():
                xg.grad = None
                (1 - run(xg)).mean().backward()
            for mode, fn in (("score", c_score), ("loss_fwd_bwd", c_loss)):
                t0 = time.perf_counter()
                fn()
                compile_s = time.perf_counter() - t0
                rec = _bf16_record(bb, bs, mode, "bf16_compiled", timeit(fn, min_time), flops[mode], peak, bf16_peak)
                rec["compile_s"], rec["channels_last"] = compile_s, opts["cl"]
                out.append(rec)
                print(f"  {bb} b{bs} {mode} [bf16_compiled]: {rec['images_per_s']:.2f} img/s "
                      f"(first call {compile_s:.0f} s)", flush=True)
            prepare(model, {})
        if conv and switches:
            out.extend(network_ab(model, bb, bs, max(2, rounds - 1), switches, bf16=True,
                                  channels_last=best == "bf16_channels_last"))
        model = fns = None
    return out


def _bf16_record(bb, bs, mode, variant, sec, flops, peak, bf16_peak) -> dict:
    gf = flops * bs / sec / 1e9
    return {"backbone": bb, "batch": bs, "mode": mode, "variant": variant, "images_per_s": bs / sec,
            "ms_per_image": 1e3 * sec / bs, "flops_per_image": flops, "gflops_per_s": gf,
            "fraction_of_fp32_peak": gf / peak, "fraction_of_bf16_peak": gf / bf16_peak}


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


# ---------------------------------------------------------------- DSL-FIQA (python benchmarks/speed.py --dsl DIR)


def dsl_weights(folder: str | None, tmp: Path) -> str:
    """``folder`` (DE.pt + IQA.pt), or synthetic weights in the official format from ../shared/dsl-reference."""
    if folder and folder != "synthetic":
        return folder
    out = tmp / "dsl"
    if not (out / "IQA.pt").exists():
        synth_ckpt("dsl-reference").write(out)
    return str(out)


def dsl_speed(folder: str | None, dev: str, rounds: int, tmp: Path) -> list[dict]:
    """One 384x384 crop (batch 1): score (inference) and loss forward+backward to the image, fp32 and bf16 autocast.

    Each is the median of ``rounds`` calls after a warm-up call (one call is seconds on a CPU); the bf16 rows
    also record the score's difference from fp32 on the same crop."""
    from ifqa_loss import DSLFIQA

    model = DSLFIQA(dsl_weights(folder, tmp), crops="center").to(dev)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 384, 384, generator=g).to(dev)
    lm = (torch.rand(1, 68, 2, generator=g) * 300 + 40).to(dev)
    out, ref = [], None
    for variant in ("fp32", "bf16_autocast"):
        ctx = (lambda: torch.autocast(dev.split(":")[0], dtype=torch.bfloat16)) if variant != "fp32" else \
            contextlib.nullcontext

        def score():
            with torch.inference_mode(), ctx():
                return model(x, lm).score

        def loss():
            xg = x.clone().requires_grad_(True)
            with ctx():
                (1 - model(xg, lm).score).sum().backward()

        for mode, fn in (("score", score), ("loss_fwd_bwd", loss)):
            value = fn()  # warm-up
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                fn()
                if not dev.startswith("cpu"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            sec = float(np.median(times))
            rec = {"backbone": "dsl", "batch": 1, "mode": mode, "variant": variant, "s_per_crop": sec,
                   "images_per_s": 1 / sec}
            if mode == "score":
                ref = float(value) if variant == "fp32" else ref
                rec["score"] = float(value)
                if variant != "fp32":
                    rec["abs_diff_vs_fp32"] = abs(float(value) - ref)
            out.append(rec)
            print(f"  dsl 1 crop {mode} [{variant}]: {rec['s_per_crop']:.2f} s", flush=True)
    return out


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
    ap.add_argument("--switches", nargs="+", choices=BF16_SWITCHES, default=list(BF16_SWITCHES),
                    help="whole-network comparisons to run (default: all)")
    ap.add_argument("--no-layers", action="store_true", help="skip the single-layer kernel comparisons")
    ap.add_argument("--bf16", action="store_true",
                    help="CPU: bf16 autocast against fp32 (score error, score and loss, with --compile also "
                         "compiled, each fast path under bf16, single layers in bf16, then in fp32 to compare)")
    ap.add_argument("--out", help="JSON file (default: results/speed.json for a complete run, else speed_partial.json)")
    ap.add_argument("--naive-folder", help=argparse.SUPPRESS)  # internal: one process of the naive folder loop
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--dsl", metavar="DIR", help="only DSL-FIQA: one crop's score and loss, fp32 and bf16 autocast; "
                    "DIR holds DE.pt and IQA.pt, or 'synthetic' (stand-ins from ../shared/dsl-reference)")
    args = ap.parse_args()
    if args.naive_folder:
        naive_folder(args.naive_folder, args.weights)
        return
    if args.dsl:
        records = dsl_speed(args.dsl, args.device, 2 if args.quick else 3, Path(tempfile.mkdtemp(prefix="ifqa-dsl-")))
        write_json(Path(args.out) if args.out else RESULTS / "speed_dsl.json",
                   {"device": args.device, "argv": sys.argv[1:], "machine": machine(), "cpu": cpu_info(),
                    "records": records})
        return
    dev = args.device
    cpu = dev == "cpu"
    fp32_switches = tuple(sw for sw in args.switches if sw in NETWORK_SWITCHES)
    complete = (not args.quick and not args.batches and not args.fast_paths_only and not args.bf16
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
    if cpu:  # the same matmul in bf16, in the same run: what bf16 can gain on this CPU at best
        bf16_practical = matmul_peak(dev, min_time, dtype=torch.bfloat16)
        native = bf16_native(cpu_desc)
        if not native:
            verdict = "bf16 is NOT native on this CPU (no avx512_bf16, no amx_bf16): oneDNN emulates it, keep fp32"
        elif bf16_practical < peak:  # AVX512-BF16 without AMX measured so on a Xeon: hardware bf16, yet slower
            verdict = "bf16 is native here but slower than fp32 (no AMX tiles?): keep fp32"
        else:
            verdict = "bf16 is native and faster than fp32 on this CPU"
        print(f"4096x4096 bf16 matmul: {bf16_practical:.1f} GFLOP/s ({bf16_practical / peak:.1f}x fp32); {verdict}")
    else:
        bf16_peak = nominal_bf16_peak()
        bf16_practical = matmul_peak(dev, min_time, n=8192, dtype=torch.bfloat16)
        print(f"{torch.cuda.get_device_name(0)}: 8192^3 bf16 matmul {bf16_practical / 1e3:.0f} TFLOP/s; "
              f"datasheet dense bf16 peak {bf16_peak / 1e12 if bf16_peak else float('nan'):.0f} TFLOP/s")

    if args.bf16:
        if not cpu:
            raise SystemExit("--bf16 measures CPU autocast; on a GPU the default run includes bf16 variants")
        if not args.no_layers:
            records.extend(layer_ab(min(min_time, 1.0), bf16=True))
        records.extend(bf16_cpu(tmp, args.backbones, min(min_time, 1.0), args.ab_rounds, args.compile, peak,
                                bf16_practical, tuple(sw for sw in BF16_SWITCHES if sw in args.switches)))
        measured, args.backbones = args.backbones, []  # nothing else to measure

    if args.fast_paths_only:
        if not cpu:
            raise SystemExit("--fast-paths-only measures the CPU kernels; run it with --device cpu")
        if not args.no_layers:
            records.extend(layer_ab(min(min_time, 1.0)))
        for bb in args.backbones:
            model = IFQA(backbone=bb, weights=weights_for(bb, tmp))
            for bs in args.batches or [{"lite": 32, "cnn": 8}.get(bb, 1)]:
                records.extend(network_ab(model, bb, bs, args.ab_rounds, fp32_switches))
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
            records.extend(network_ab(model, bb, {"lite": 32, "cnn": 8}[bb], args.ab_rounds,
                                      fp32_switches))
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
    ratios = summarize(records, measured if args.bf16 else args.backbones, cpu, peak)
    print_table("ratios and targets (same run)", ["ratio", "value"], [[k, v] for k, v in ratios.items()])
    write_json(out_path, {"device": dev, "complete_run": complete, "argv": sys.argv[1:], "machine": machine(),
                          "cpu": cpu_desc, "fast_path_rule": _cpu_kernels.cpu_rule()._asdict(), "matmul_gflops": peak,
                          "bf16_matmul_gflops": bf16_practical, "bf16_datasheet_peak_flops": bf16_peak,
                          "bf16_native": bf16_native(cpu_desc) if cpu else None,
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
                       and r.get("fraction_of_fp32_peak") and not r["variant"].startswith("bf16")]
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
    for bb in backbones:
        err = [r["max_abs"] for r in records if r["backbone"] == bb and r["mode"] == "bf16_score_error"]
        if err:
            ratios[f"{bb}_bf16_score_max_abs_error"] = err[0]
    for r in records:
        if r["mode"] in ("ab_score", "ab_loss_fwd_bwd", "ab_score_bf16", "ab_loss_fwd_bwd_bf16") and r.get("path"):
            mode = ("score" if r["mode"].startswith("ab_score") else "loss") + (
                "_bf16" if r["mode"].endswith("bf16") else "")
            ratios[f"{r['backbone']}_{r['path']}_on_vs_off_{mode}_b{r['batch']}_interleaved"] = r["speedup"]
        if r["mode"] in ("ab_score_bf16_vs_fp32", "ab_loss_fwd_bwd_bf16_vs_fp32"):
            mode = "score" if r["mode"].startswith("ab_score") else "loss"
            ratios[f"{r['backbone']}_{mode}_{r['variant']}_b{r['batch']}_interleaved"] = r["speedup"]
        if r["mode"] == "ab_score_vs_bf16_matmul":
            ratios[f"{r['backbone']}_score_fraction_of_bf16_peak_{r['variant']}_interleaved_with_matmul"] = (
                r["executed_fraction"])
        if r["mode"] == "ab_loss_fwd_bwd" and r["variant"] == "lite_vs_cnn":
            ratios[f"lite_vs_cnn_loss_b{r['batch']}_interleaved"] = r["speedup"]
        if r["mode"] == "ab_score_vs_matmul":
            ratios[f"cnn_forward_fraction_of_fp32_peak_{r['variant']}_interleaved_with_matmul"] = r["executed_fraction"]
            if r["variant"] == "default":
                ratios["cnn_forward_fraction_of_fp32_peak_at_official_flops_interleaved"] = r["nominal_fraction"]
    for bb in backbones if cpu else []:
        for mode, short in (("score", "score"), ("loss_fwd_bwd", "loss")):
            comp, fp = best(bb, mode, "bf16_compiled"), best(bb, mode, "fp32")
            if comp and fp and comp["batch"] == fp["batch"]:
                ratios[f"{bb}_{short}_bf16_compiled_vs_fp32_b{comp['batch']}_sequential"] = (
                    comp["images_per_s"] / fp["images_per_s"])
            bf = [r for r in timed if r["backbone"] == bb and r["mode"] == mode and r.get("fraction_of_bf16_peak")]
            if bf:
                top = max(bf, key=lambda r: r["images_per_s"])
                ratios[f"{bb}_{short}_fraction_of_bf16_peak_{top['variant']}_b{top['batch']}"] = (
                    top["fraction_of_bf16_peak"])
    cli, naive = best("cnn", "cli_folder", "ifqa_score"), best("cnn", "naive_folder")
    if cli and naive:
        ratios["cnn_cli_folder_vs_naive"] = cli["images_per_s"] / naive["images_per_s"]
        plain = best("cnn", "cli_folder", "ifqa_score_glibc_malloc_defaults")
        if plain:
            ratios["cnn_cli_folder_vs_naive_glibc_malloc_defaults"] = plain["images_per_s"] / naive["images_per_s"]
    return ratios


if __name__ == "__main__":
    main()
