"""benchmarks/experiments/jpeg_probe.py: the block-boundary statistic, and a run on a few hq_eval faces."""
from __future__ import annotations

import sys

import pytest
import torch

from conftest import REPO, SHARED, run_benchmark
from ifqa_loss.train.degradations import degrade

sys.path.insert(0, str(REPO / "benchmarks" / "experiments"))
probe = pytest.importorskip("jpeg_probe")


def test_boundary_share_finds_the_boundary_phase():
    f = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.1
    flat = probe.boundary_share(f)
    assert flat.shape == (2, 3) and ((flat - 1).abs() < 0.3).all(), flat
    lines = f.clone()
    lines[..., 3::4, :] += 1.0  # energy on the boundary rows only
    assert (probe.boundary_share(lines) > 2 * flat).all()
    off_phase = f.clone()
    off_phase[..., 1::4, :] += 1.0  # same energy on another phase
    assert (probe.boundary_share(off_phase) < flat).all()
    with pytest.raises(ValueError, match="multiples of 4"):
        probe.boundary_share(torch.rand(1, 1, 30, 32))


def test_fixed_probe_rises_as_jpeg_quality_falls():
    # a smooth image with fine texture: JPEG removes the texture and adds 8x8 blocks
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 128), torch.linspace(0, 1, 128), indexing="ij")
    base = torch.stack([0.3 + 0.4 * xx, 0.2 + 0.5 * yy, 0.5 + 0.2 * xx * yy])
    base = base + 0.03 * torch.randn(3, 128, 128, generator=g)
    shares = [float(probe.fixed_blockiness(degrade(base.clamp(0, 1)[None], "jpeg", q))) for q in (90, 50, 15)]
    assert shares[0] < shares[1] < shares[2], shares
    assert 0.8 < float(probe.fixed_blockiness(base.clamp(0, 1)[None])) < 1.25  # no JPEG: no boundary phase


@pytest.mark.skipif(not (SHARED / "data" / "hq_eval").is_dir(),
                    reason="../shared/data/hq_eval is absent (evaluation data)")
def test_probe_runs_on_the_bundled_model(tmp_path):
    stdout, res = run_benchmark("experiments/jpeg_probe.py", tmp_path / "probe.json", "--subset", "8", timeout=600)
    assert "JPEG probe" in stdout
    assert res["images"] == 8 and res["model"]["backbone"] == "lite"
    probes = res["probes"]
    assert set(probes) == {"score", "fixed_laplacian_pooled", "first_block_conv_pool", "first_block_output"}
    assert len(probes["first_block_conv_pool"]["per_channel"]) == 3
    assert len(probes["first_block_output"]["per_channel"]) == 8  # widths[0] of the bundled lite
    assert probes["fixed_laplacian_pooled"]["best"] > 0.9  # +1.00 on all 114 faces
    assert probes["score"]["best"] < -0.5  # the model's own JPEG order (-0.96 on all faces)
