"""`torchrun --nproc_per_node 2 -m ifqa_loss score` (gloo, two CPU processes) writes what one process writes."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from ifqa_loss.cli import _Dist, _dist_bounds, _dist_reserved_stems


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(path: Path, size: tuple[int, int], seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


# the same threads per process in both runs: float rounding depends on the thread count (cli.py says so)
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _one(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ifqa_loss", "score", *args], capture_output=True, env=ENV,
                          cwd=cwd, timeout=300)


def _two(args: list[str], cwd: Path, logs: Path) -> subprocess.CompletedProcess:
    """torchrun with each worker's stderr in logs/.../<rank>/stderr.log, to see which rank did what."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "--log-dir", str(logs), "--redirects", "2", "-m", "ifqa_loss", "score", *args]
    return subprocess.run(cmd, capture_output=True, env=ENV, cwd=cwd, timeout=300)


def _rank_stderr(logs: Path, rank: int) -> str:
    found = list(logs.glob(f"**/attempt_0/{rank}/stderr.log"))
    assert len(found) == 1, f"no single stderr log for rank {rank} under {logs}"
    return found[0].read_text()


@pytest.mark.parametrize("n,batch,world", [(0, 2, 2), (1, 2, 2), (7, 2, 2), (8, 2, 2), (9, 4, 3), (5, 8, 2),
                                           (100, 3, 4)])
def test_shares_are_whole_batches_in_order(n, batch, world):
    bounds = [_dist_bounds(n, batch, _Dist(r, world, True)) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(hi == lo for (_, hi), (lo, _) in zip(bounds, bounds[1:])), "contiguous, in rank order"
    assert all(lo % batch == 0 for lo, _ in bounds), "every share starts on a batch boundary"
    batches = [-(-(hi - lo) // batch) for lo, hi in bounds]
    assert max(batches) - min(batches) <= 1


def test_reserved_stems_are_the_other_ranks_names(tmp_path):
    files = [str(tmp_path / d / "face.png") for d in ("a", "b", "c")] + [str(tmp_path / "face_2.png")]
    # one process names them face, face_2, face_3, face_2_2; rank 1 of 2 (batch 2) scores the last two
    reserved = _dist_reserved_stems(files, 2, _Dist(1, 2, True), tmp_path / "maps", set())
    assert reserved == {"face", "face_2"}
    assert _dist_reserved_stems(files, 2, _Dist(1, 2, True), None, set()) == set()


@pytest.mark.slow
def test_two_processes_write_the_same_bytes_as_one(tmp_path):
    # 8 files at batch 2: rank 0 scores the first 4, rank 1 the last 4, which hold the undecodable one
    bad = tmp_path / "bad"
    for i, size in enumerate([(256, 256), (120, 90), (300, 260), (64, 64), (200, 180), (256, 256), (90, 120)]):
        _png(bad / f"f{i}.png", size, i)
    (bad / "f4b.png").write_bytes(b"not an image")
    args = [str(bad), "--json", "--batch-size", "2", "--no-progress"]
    one, two = _one(args, tmp_path), _two(args, tmp_path, tmp_path / "logs_json")
    assert one.returncode == 1 and two.returncode == 1, two.stderr.decode()[-3000:]
    assert b"f4b.png" in one.stderr
    assert two.stdout == one.stdout  # byte-identical JSON, on stdout once
    assert one.stdout.count(b'"path"') == 7
    assert "f4b.png" in _rank_stderr(tmp_path / "logs_json", 1)
    assert "ifqa:" not in _rank_stderr(tmp_path / "logs_json", 0), "rank 0 scored only decodable files"

    # a clean recursive run with maps: same stems across ranks (a/face, b/face), same CSV, same map files
    clean = tmp_path / "clean"
    for i, rel in enumerate(["a/face.png", "a/x.png", "b/face.png", "b/y.png", "c/face.png"]):
        _png(clean / rel, (96 + 16 * i, 96), 20 + i)
    out = {}
    for name in ("one", "two"):
        args = [str(clean), "--recursive", "--csv", f"{name}.csv", "--save-maps", f"maps_{name}", "--batch-size", "2",
                "--no-progress"]
        proc = _one(args, tmp_path) if name == "one" else _two(args, tmp_path, tmp_path / "logs_csv")
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        maps = tmp_path / f"maps_{name}"
        out[name] = ((tmp_path / f"{name}.csv").read_bytes(), {p.name: p.read_bytes() for p in maps.iterdir()})
    assert out["two"][0] == out["one"][0]
    assert out["one"][0].decode().splitlines()[0] == "path,score" and len(out["one"][0].decode().splitlines()) == 6
    assert sorted(out["one"][1]) == sorted(f"{s}.{e}" for s in ("face", "face_2", "face_3", "x", "y")
                                           for e in ("npy", "png"))
    assert out["two"][1] == out["one"][1]
    assert not list(tmp_path.glob("two.csv.*")), "only rank 0 writes the CSV"
