"""benchmarks/experiments/severity_line.py: half B is disjoint from what trains, and a run on a few faces."""
from __future__ import annotations

import sys

import pytest

from conftest import REPO, SHARED, run_benchmark
from ifqa_loss.train.degradations import SWEEP_LEVELS

sys.path.insert(0, str(REPO / "benchmarks" / "experiments"))
line = pytest.importorskip("severity_line")
FACES = SHARED / "data" / "faces256"
needs_faces = pytest.mark.skipif(not (FACES / "val.txt").is_file(), reason="../shared/data/faces256 is absent")


@needs_faces
def test_half_b_is_neither_the_bundles_faces_nor_val_and_half_a_holds_them():
    names = line.half_names(FACES, 10_000)
    bundled = set((REPO / "ifqa_loss" / "bundled" / "ifqa-lite.train.txt").read_text().split())
    val = set((FACES / "val.txt").read_text().split())
    assert len(names) == 5035 - line.HALF_A and len(set(names)) == len(names)
    assert not set(names) & bundled and not set(names) & val
    half_a = line.half_names(FACES, 10_000, "a")
    assert len(half_a) == line.HALF_A and not set(half_a) & set(names) and not set(half_a) & val
    assert set(half_a[:len(bundled)]) == bundled  # the bundle's 1,300 faces open half A


@needs_faces
def test_runs_on_a_few_faces(tmp_path):
    stdout, res = run_benchmark("experiments/severity_line.py", tmp_path / "line.json", "--n", "4", timeout=600)
    assert "mean±sd score per sweep level" in stdout
    (model,) = res["results"].values()
    assert len(res["faces"]) == 4 and res["line"][0] == pytest.approx(0.9)
    for kind in SWEEP_LEVELS:
        means = [m for m, _ in model[kind]]
        assert len(means) == 5 and all(0 <= m <= 1 for m in means)
        assert means[-1] < model["clean"][0]  # the bundled model scores level 5 of every kind below the clean faces
    assert len(model["kind_spread_per_level"]) == 5
