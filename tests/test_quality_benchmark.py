"""CI run of benchmarks/quality.py on a small subset, with loose thresholds for the bundled model."""
from __future__ import annotations

import pytest

from conftest import SHARED, run_benchmark


@pytest.mark.skipif(not (SHARED / "data" / "hq_eval").is_dir() or not (SHARED / "data" / "lq_real").is_dir(),
                    reason="../shared/data/hq_eval and lq_real are absent (evaluation data)")
def test_quality_benchmark_subset(tmp_path):
    stdout, res = run_benchmark("quality.py", tmp_path / "quality.json", "--subset", "12")
    assert "summary" in stdout
    assert res["images"] == 12 and res["model"]["backbone"] == "lite"
    sev = res["severity"]["ifqa"]
    assert set(sev) == {"blur", "noise", "jpeg", "downup", "mixed"}
    # loose floors under the bundled model's full-set numbers (README: worst type -0.96, AUC 0.961, region
    # ratio 7.1); on these 12 faces: JPEG -0.97, AUC 0.98, region ratio 2.9
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
    # inflates the Laplacian's variance, so that classic score is fooled on most faces
    sharp = res["over_sharpening"]
    assert len(sharp["ifqa"]) == len(res["sharpen_levels"]["blur"]) * len(res["sharpen_levels"]["amount"])
    assert all(0 <= v <= 1 for m in sharp.values() for v in m.values())
    assert res["summary"]["sharpened_at_or_above_clean_worst"]["laplacian_var"] > 0.5
    # (5) mirror consistency: the classic filters are symmetric, so mirroring leaves their scores unchanged
    mirror = res["mirror"]
    assert set(mirror) == set(res["real_lq"])
    for baseline in ("laplacian_var", "tenengrad"):
        assert mirror[baseline]["mean_abs_change_over_std"] < 1e-3 and mirror[baseline]["pearson"] > 0.999
    assert 0 <= mirror["ifqa"]["mean_abs_change_over_std"] < 1.5 and mirror["ifqa"]["pearson"] > 0


@pytest.mark.skipif(not (SHARED / "data" / "faces256" / "val.txt").is_file(),
                    reason="../shared/data/faces256 is absent (training data)")
def test_heldout_severity_subset(tmp_path):
    stdout, res = run_benchmark("heldout_severity.py", tmp_path / "heldout.json", "--n", "6")
    assert "held-out severity" in stdout and res["images"] == 6
    (only,) = res["results"].values()
    assert set(only) == {"blur", "noise", "jpeg", "downup", "mixed", "mirror_pearson"}
    # loose floors: the bundled model orders every type well on held-out faces (README: worst JPEG -0.94)
    for kind in ("blur", "noise", "jpeg", "downup", "mixed"):
        assert only[kind] < -0.8, (kind, only[kind])
    assert -1 <= only["mirror_pearson"] <= 1
