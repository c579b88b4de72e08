"""benchmarks/speed.py: its same-run ratios on synthetic records, its interleaving and its CPU record (no
real timing)."""
from __future__ import annotations

import re
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
speed = pytest.importorskip("speed")


def _rec(bb, batch, mode, variant, ips, frac=None):
    return {"backbone": bb, "batch": batch, "mode": mode, "variant": variant, "images_per_s": ips,
            "fraction_of_fp32_peak": frac}


def _ab(bb, batch, mode, path, speedup):
    return {"backbone": bb, "batch": batch, "mode": mode, "variant": f"{path}_on_vs_off", "path": path,
            "speedup": speedup}


def test_summary_reports_targets_from_one_run():
    records = [
        _rec("lite", 8, "loss_fwd_bwd", "fp32", 20.0),
        _rec("cnn", 8, "loss_fwd_bwd", "fp32", 0.5),
        _rec("cnn", 8, "score", "fp32", 1.5, 0.70),
        _rec("cnn", 8, "score", "fp32_direct_conv", 1.3, 0.80),
        _rec("cnn", 8, "score", "fp32_unfused_upsample", 1.0, 0.78),
        _rec("cnn", 1, "naive_loss", "official", 0.25),
        _ab("cnn", 8, "ab_score", "winograd", 1.12),
        _ab("cnn", 8, "ab_loss_fwd_bwd", "narrow_conv", 1.02),
        _ab("lite", 32, "ab_score", "channels_last", 1.4),
        {"backbone": "lite", "batch": 8, "mode": "ab_loss_fwd_bwd", "variant": "lite_vs_cnn", "speedup": 24.0},
        {"backbone": "cnn", "batch": 8, "mode": "ab_score_vs_matmul", "variant": "default", "executed_fraction": 0.7,
         "nominal_fraction": 1.1},
        {"backbone": "cnn", "batch": 8, "mode": "ab_score_vs_matmul", "variant": "direct_conv",
         "executed_fraction": 0.85, "nominal_fraction": 0.9},
        {"backbone": "layer", "batch": 8, "mode": "layer_fwd", "variant": "narrow_64_1_256", "path": "narrow",
         "plain_ms": 100.0, "fast_ms": 30.0, "speedup": 3.3},  # a single layer: no network-level ratio
        _rec("cnn", 8, "cli_folder", "ifqa_score", 1.4),
        _rec("cnn", 8, "cli_folder", "ifqa_score_glibc_malloc_defaults", 1.6),  # must not stand in for the default
        _rec("cnn", 1, "naive_folder", "official", 1.0),
    ]
    r = speed.summarize(records, ["lite", "cnn"], cpu=True, peak=60.0)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", k) for k in r), [k for k in r if not re.fullmatch(r"[a-z0-9_]+", k)]
    assert r["lite_vs_cnn_loss_b8_sequential"] == pytest.approx(40.0)
    assert r["lite_vs_cnn_loss_b8_interleaved"] == pytest.approx(24.0)
    assert r["cnn_loss_vs_naive_fp32_b8"] == pytest.approx(2.0)
    assert r["cnn_forward_fraction_of_fp32_peak_default_interleaved_with_matmul"] == pytest.approx(0.7)
    assert r["cnn_forward_fraction_of_fp32_peak_direct_conv_interleaved_with_matmul"] == pytest.approx(0.85)
    assert r["cnn_forward_fraction_of_fp32_peak_at_official_flops_interleaved"] == pytest.approx(1.1)
    assert r["cnn_forward_fraction_of_fp32_peak"] == pytest.approx(0.70)  # the default path, executed FLOPs
    assert r["cnn_forward_fraction_of_fp32_peak_best_fp32_direct_conv_b8"] == pytest.approx(0.80)
    official = speed.OFFICIAL_CNN_GFLOP * 1.5 / 60.0
    assert r["cnn_forward_fraction_of_fp32_peak_at_official_flops"] == pytest.approx(official)
    assert r["cnn_winograd_on_vs_off_score_b8_interleaved"] == pytest.approx(1.12)
    assert r["cnn_narrow_conv_on_vs_off_loss_b8_interleaved"] == pytest.approx(1.02)
    assert r["lite_channels_last_on_vs_off_score_b32_interleaved"] == pytest.approx(1.4)
    assert not any(k.startswith("layer") or "lite_vs_cnn_on_vs_off" in k for k in r)
    assert r["cnn_fused_vs_unfused_upsample_score_sequential"] == pytest.approx(1.5)
    assert r["cnn_cli_folder_vs_naive"] == pytest.approx(1.4)
    assert r["cnn_cli_folder_vs_naive_glibc_malloc_defaults"] == pytest.approx(1.6)


def test_variant_and_mode_names_are_identifiers():
    for cpu in (True, False):
        for bb in ("lite", "cnn", "vit"):
            for name, _ in speed.variants(bb, cpu, compile_=True):
                assert re.fullmatch(r"[a-z0-9_]+", name), name


def test_interleaved_ratio_is_the_median_of_alternating_timer_rounds():
    """Each side of a round is a torch.utils.benchmark Timer measurement on a fake clock: a costs 1 s a
    call; b costs 2, 5 (a burst of load) and 2 s in rounds 1-3 (each after its warm-up call)."""
    clock = [0.0]
    b_cost = iter([2.0, 2.0, 5.0, 5.0, 2.0, 2.0])  # warm-up and timed call of each round
    calls = []

    def a():
        calls.append("a")
        clock[0] += 1.0

    def b():
        calls.append("b")
        clock[0] += next(b_cost)

    ratio = speed.interleaved_ratio(a, b, rounds=3, timer=lambda: clock[0])
    assert ratio == pytest.approx(2.0)  # median of 2, 5, 2
    assert calls == ["a", "a", "b", "b"] * 3  # a warm-up before each timed call, sides alternating


def test_timeit_is_the_timer_median():
    clock = [0.0]

    def work():
        clock[0] += 0.25

    assert speed.timeit(work, min_time=1.0, timer=lambda: clock[0]) == pytest.approx(0.25)


def test_cpu_info_names_the_cpu_and_its_isa():
    info = speed.cpu_info()
    assert info["model_name"] and isinstance(info["model_name"], str)
    assert set(info) >= {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "torch_cpu_capability"}
    assert all(isinstance(info[f], bool) for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16"))
    import torch

    assert info["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_summary_reports_cpu_bf16_ratios():
    """--bf16 records: the interleaved bf16/fp32 ratios, the fraction of the bf16 matmul peak, the switches
    under bf16 (not mixed up with the fp32 ones), the compiled ratio and the score error."""
    records = [
        {**_rec("cnn", 8, "score", "fp32", 2.0, 0.4), "fraction_of_bf16_peak": 0.07},
        {**_rec("cnn", 8, "score", "bf16_channels_last", 5.0, 0.9), "fraction_of_bf16_peak": 0.16},
        {**_rec("cnn", 8, "loss_fwd_bwd", "fp32", 1.0), "fraction_of_bf16_peak": 0.05},
        {**_rec("cnn", 8, "loss_fwd_bwd", "bf16_compiled", 3.0), "fraction_of_bf16_peak": 0.2},
        {"backbone": "cnn", "batch": 8, "mode": "ab_loss_fwd_bwd_bf16_vs_fp32", "variant": "bf16_vs_fp32",
         "speedup": 2.4},
        {"backbone": "cnn", "batch": 8, "mode": "ab_score_vs_bf16_matmul", "variant": "bf16_channels_last",
         "executed_fraction": 0.163},
        _ab("cnn", 8, "ab_score_bf16", "winograd", 0.95),
        _ab("cnn", 8, "ab_score", "winograd", 1.05),
        {"backbone": "cnn", "mode": "bf16_score_error", "max_abs": 7e-4},
    ]
    r = speed.summarize(records, ["cnn"], cpu=True, peak=190.0)
    assert r["cnn_loss_bf16_vs_fp32_b8_interleaved"] == pytest.approx(2.4)
    assert r["cnn_score_fraction_of_bf16_peak_bf16_channels_last_interleaved_with_matmul"] == pytest.approx(0.163)
    assert r["cnn_winograd_on_vs_off_score_bf16_b8_interleaved"] == pytest.approx(0.95)
    assert r["cnn_winograd_on_vs_off_score_b8_interleaved"] == pytest.approx(1.05)
    assert r["cnn_loss_bf16_compiled_vs_fp32_b8_sequential"] == pytest.approx(3.0)
    assert r["cnn_bf16_score_max_abs_error"] == pytest.approx(7e-4)
    assert not any("fp32_peak_best_bf16" in k for k in r)  # a bf16 run is not counted against the fp32 peak


def test_bf16_native_reads_the_isa_flags():
    assert speed.bf16_native({"avx512_bf16": False, "amx_bf16": True})
    assert speed.bf16_native({"avx512_bf16": True, "amx_bf16": False})
    assert not speed.bf16_native({"avx2": True, "avx512_bf16": False, "amx_bf16": False})
