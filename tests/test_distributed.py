"""Distributed use on CPU (gloo, 2 processes): IFQAMetric agrees with one process; `ifqa train` under torchrun."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import REPO

FACES = REPO.parent / "shared" / "data" / "faces256"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric_worker(rank: int, world: int, port: int, weights: str, images: torch.Tensor, shards, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        from ifqa_loss import IFQAMetric

        metric = IFQAMetric(weights=weights)
        for lo, hi in shards[rank]:
            metric.update(images[lo:hi])
        value = metric.compute()  # synced across ranks, then local states are restored
        metric.sync()
        count = int(metric.count)
        metric.unsync()
        if rank == 0:
            Path(out).write_text(json.dumps({"value": float(value), "count": count, "local": int(metric.count)}))
    finally:
        dist.destroy_process_group()


def test_metric_distributed_equals_single_process(lite_weights, tmp_path):
    from ifqa_loss import IFQAMetric

    images = torch.rand(7, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    single = IFQAMetric(weights=lite_weights)
    single.update(images)
    expected = float(single.compute())
    # uneven shards: rank 0 sees 5 images in two batches, rank 1 sees 2
    shards = [[(0, 3), (3, 5)], [(5, 7)]]
    out = tmp_path / "result.json"
    mp.spawn(_metric_worker, args=(2, _free_port(), str(lite_weights), images, shards, str(out)), nprocs=2, join=True)
    result = json.loads(out.read_text())
    assert result["count"] == 7 and result["local"] == 5
    assert result["value"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data/faces256 is absent (training data)")
def test_train_under_torchrun_gloo(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "ifqa_loss", "train", "--data", str(FACES / "images"), "--landmarks", str(FACES / "landmarks68.npz"),
           "--val-list", str(FACES / "val.txt"), "--out", str(tmp_path), "--steps", "2", "--batch-size", "2",
           "--limit", "8", "--val-every", "2", "--val-images", "2", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((tmp_path / "ifqa-lite.json").read_text())
    assert card["steps"] == 2
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert len(ck["gen"]) == 2, "both ranks' sampling states are saved"
    from ifqa_loss import IFQA

    assert IFQA(weights=tmp_path / "ifqa-lite.safetensors")(torch.rand(1, 3, 32, 32)).score.shape == (1,)
