"""benchmarks/speed.py's same-run ratios, on synthetic records (no timing)."""
from __future__ import annotations

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
speed = pytest.importorskip("speed")


def _rec(bb, batch, mode, variant, ips, frac=None):
    return {"backbone": bb, "batch": batch, "mode": mode, "variant": variant, "images_per_s": ips,
            "fraction_of_fp32_peak": frac}


def test_summary_reports_targets_from_one_run():
    records = [
        _rec("lite", 8, "loss fwd+bwd", "fp32", 20.0),
        _rec("cnn", 8, "loss fwd+bwd", "fp32", 0.5),
        _rec("cnn", 8, "score", "fp32", 1.5, 0.70),
        _rec("cnn", 8, "score", "fp32 direct conv", 1.3, 0.80),
        _rec("cnn", 8, "score", "fp32 unfused upsample", 1.0, 0.78),
        {"backbone": "cnn", "batch": 8, "mode": "A/B score", "variant": "winograd vs direct conv", "speedup": 1.12},
        {"backbone": "lite", "batch": 8, "mode": "A/B loss fwd+bwd", "variant": "lite vs cnn", "speedup": 24.0},
        {"backbone": "cnn", "batch": 8, "mode": "A/B score vs matmul", "variant": "default", "executed_fraction": 0.7,
         "nominal_fraction": 1.1},
        {"backbone": "cnn", "batch": 8, "mode": "A/B score vs matmul", "variant": "direct conv", "executed_fraction": 0.85,
         "nominal_fraction": 0.9},
        _rec("cnn", 8, "cli folder", "ifqa score", 1.4),
        _rec("cnn", 8, "cli folder", "ifqa score, glibc malloc defaults", 1.6),  # must not stand in for the default
        _rec("cnn", 1, "naive folder", "official", 1.0),
    ]
    r = speed.summarize(records, ["lite", "cnn"], cpu=True, peak=60.0)
    assert r["lite_vs_cnn_loss_b8 (sequential)"] == pytest.approx(40.0)
    assert r["lite_vs_cnn_loss_b8 (interleaved)"] == pytest.approx(24.0)
    assert r["cnn_forward_fraction_of_fp32_peak (default, interleaved with the matmul)"] == pytest.approx(0.7)
    assert r["cnn_forward_fraction_of_fp32_peak (direct conv, interleaved with the matmul)"] == pytest.approx(0.85)
    assert r["cnn_forward_effective_fraction (official 53.1 GFLOP/image, default path, interleaved)"] == pytest.approx(1.1)
    assert not any("lite_winograd" in k for k in r)  # the lite-vs-cnn A/B is not a Winograd comparison
    assert r["cnn_forward_fraction_of_fp32_peak"] == pytest.approx(0.70)  # the default path, executed FLOPs
    assert r["cnn_forward_fraction_of_fp32_peak, any variant (fp32 direct conv, b8)"] == pytest.approx(0.80)
    assert r["cnn_forward_effective_fraction (official 53.1 GFLOP/image, default path)"] == pytest.approx(
        speed.OFFICIAL_CNN_GFLOP * 1.5 / 60.0)
    assert r["cnn_winograd_vs_direct_score_b8 (interleaved)"] == pytest.approx(1.12)
    assert r["cnn_fused_vs_unfused_upsample_score"] == pytest.approx(1.5)
    assert r["cnn_cli_folder_vs_naive"] == pytest.approx(1.4)
    assert r["cnn_cli_folder_vs_naive, glibc malloc defaults"] == pytest.approx(1.6)


def test_interleaved_ratio_is_the_median_of_alternating_rounds(monkeypatch):
    clock = iter([0.0, 1.0, 1.0, 3.0,   # round 1: a 1 s, b 2 s
                  3.0, 4.0, 4.0, 9.0,   # round 2: a 1 s, b 5 s (a burst of load)
                  9.0, 11.0, 11.0, 15.0])  # round 3: a 2 s, b 4 s
    monkeypatch.setattr(speed.time, "perf_counter", lambda: next(clock))
    calls = []
    ratio = speed.interleaved_ratio(lambda: calls.append("a"), lambda: calls.append("b"), rounds=3)
    assert ratio == pytest.approx(2.0)  # median of 2, 5, 2
    assert calls == ["a", "b"] * 4  # warm-up, then strictly alternating
