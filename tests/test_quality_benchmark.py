"""CI run of benchmarks/quality.py on a small subset, with loose thresholds for the bundled model."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, SHARED, run_benchmark


@pytest.mark.skipif(not (SHARED / "data" / "hq_eval").is_dir() or not (SHARED / "data" / "lq_real").is_dir(),
                    reason="../shared/data/hq_eval and lq_real are absent (evaluation data)")
@pytest.mark.slow
def test_quality_benchmark_subset(tmp_path):
    stdout, res = run_benchmark("quality.py", tmp_path / "quality.json", "--subset", "12")
    assert "summary" in stdout
    assert res["images"] == 12 and res["model"]["backbone"] == "lite"
    sev = res["severity"]["ifqa"]
    assert set(sev) == {"blur", "noise", "jpeg", "downup", "mixed"}
    # loose floors under the bundled model's full-set numbers (benchmarks/results/quality.json: worst type JPEG
    # -0.947, AUC 0.982, region ratio 12.2); on these 12 faces: JPEG -0.967, AUC 0.992, region ratio 5.5
    for kind in ("blur", "noise", "jpeg", "downup", "mixed"):
        assert sev[kind]["mean_spearman"] < -0.9, (kind, sev[kind])
        levels = sev[kind]["mean_score_per_level"]
        assert levels[0] > levels[-1], (kind, levels)
    assert res["real_lq"]["ifqa"]["auc"] > 0.85
    assert res["real_lq"]["ifqa"]["hq_mean"] > res["real_lq"]["ifqa"]["lq_mean"]
    # the per-crop counts of HQ faces scoring at or below each LQ crop are the AUC's misordered pairs
    beaten = res["real_lq"]["ifqa"]["hq_at_or_below_lq"]
    pairs = res["images"] * res["lq_images"]
    assert sum(beaten.values()) / pairs == pytest.approx(1 - res["real_lq"]["ifqa"]["auc"], abs=1e-9)
    assert all(0 < n <= res["images"] for n in beaten.values())
    assert set(res["regions"]["ifqa"]) == {"blur", "noise", "jpeg", "mixed"}
    mixed = res["regions"]["ifqa"]["mixed"]
    assert mixed["drop_primary"] > 1.5 * mixed["drop_control"], mixed  # primary regions weigh more
    for baseline in ("laplacian_var", "tenengrad"):
        assert baseline in res["severity"] and baseline in res["real_lq"]
    # (4) over-sharpening: one share in [0, 1] per setting and scorer; unsharp masking a softened face
    # inflates its gradient energy, so the Tenengrad score is fooled on most faces
    sharp, levels = res["over_sharpening"], res["sharpen_levels"]
    settings = {(b, a) for b in levels["blur_sigma"] for a in levels["unsharp_amount"]}
    for entries in sharp.values():
        assert {(e["blur_sigma"], e["unsharp_amount"]) for e in entries} == settings and len(entries) == len(settings)
        assert all(0 <= e["share_at_or_above_clean"] <= 1 for e in entries)
    assert res["summary"]["sharpened_at_or_above_clean_worst"]["tenengrad"] > 0.5
    # (5) mirror consistency: the classic filters are symmetric, so mirroring leaves their scores unchanged
    mirror = res["mirror"]
    assert set(mirror) == set(res["real_lq"])
    for baseline in ("laplacian_var", "tenengrad"):
        assert mirror[baseline]["mean_abs_change_over_std"] < 1e-3 and mirror[baseline]["pearson"] > 0.999
    assert 0 <= mirror["ifqa"]["mean_abs_change_over_std"] < 1.5 and mirror["ifqa"]["pearson"] > 0
    # (2) scores files as `ifqa score` does: the per-file scores equal the CLI's on the same files, at 512 px,
    # at 1024 px and at a size that is not square (diffbir's 351x365 crop)
    per_file = res["ifqa_score_per_file"]
    assert len(per_file) == res["images"] + res["lq_images"]
    picked = [k for k in per_file if k.startswith("hq_eval/")][:2] + [k for k in per_file if "gpen_val_pairs" in k][:1]
    odd = [k for k in per_file if k.startswith("lq_real/diffbir_aligned/")]
    picked += odd
    proc = subprocess.run([sys.executable, "-m", "ifqa_loss", "score", "--json",
                           *(str(SHARED / "data" / k) for k in picked)], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli = {r["path"]: r["score"] for r in json.loads(proc.stdout)}
    assert len(cli) == len(picked)
    for k in picked:
        assert per_file[k] == pytest.approx(cli[str(SHARED / "data" / k)], abs=1e-6), k
    # the real-LQ AUC is computed from exactly these per-file scores
    hq = [v for k, v in per_file.items() if k.startswith("hq_eval/")]
    lq = [v for k, v in per_file.items() if k.startswith("lq_real/")]
    pairs_won = sum((h > v) + 0.5 * (h == v) for h in hq for v in lq)
    assert res["real_lq"]["ifqa"]["auc"] == pytest.approx(pairs_won / (len(hq) * len(lq)), abs=1e-12)
    assert res["real_lq"]["ifqa"]["lq_mean"] == pytest.approx(sum(lq) / len(lq), abs=1e-6)


@pytest.mark.skipif(not (SHARED / "data" / "faces256" / "val.txt").is_file(),
                    reason="../shared/data/faces256 is absent (training data)")
def test_heldout_severity_subset(tmp_path):
    stdout, res = run_benchmark("heldout_severity.py", tmp_path / "heldout.json", "--n", "6")
    assert "held-out severity" in stdout and res["images"] == 6
    (only,) = res["results"]
    assert set(only) == {"weights", "blur", "noise", "jpeg", "downup", "mixed", "mirror_pearson"}
    assert "ifqa-lite" in only["weights"]  # the bundled model by default
    # loose floors: the bundled model orders every type well on held-out faces (README: worst JPEG -0.94)
    for kind in ("blur", "noise", "jpeg", "downup", "mixed"):
        assert only[kind] < -0.8, (kind, only[kind])
    assert -1 <= only["mirror_pearson"] <= 1


def test_statistics_are_scipy_with_ties_handled():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import numpy as np
    import quality

    # average ranks for ties: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4)
    assert quality.spearman(np.array([0.2, 0.2, 0.5, 0.9]), np.arange(4)) == pytest.approx(0.9486833, abs=1e-6)
    assert quality.spearman(np.array([0.3, 0.3, 0.3]), np.arange(3)) == 0.0  # a constant score orders nothing
    assert quality.spearman(np.array([4.0, 3.0, 1.0]), np.arange(3)) == pytest.approx(-1.0)
    # AUC over all 6 pairs: 0.5 > 0.2 twice, 0.5 = 0.5 counts half, 0.6 beats both, 0.2 vs 0.5 loses
    pos, neg = np.array([0.5, 0.6, 0.2]), np.array([0.5, 0.2])
    assert quality.roc_auc(pos, neg) == pytest.approx((1 + 0.5 + 1 + 1 + 0.5 + 0) / 6)
    # scores above 1 (the Laplacian's variance) are ranked as they are, not squashed
    assert quality.roc_auc(np.array([900.0, 1200.0]), np.array([300.0, 1000.0])) == pytest.approx(0.75)
