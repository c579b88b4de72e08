"""The examples run end to end in their --fast mode and write outputs that parse."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, SHARED, write_png

DATA = SHARED / "data"


@pytest.mark.skipif(not (DATA / "faces256").is_dir() or not (DATA / "hq_eval").is_dir(),
                    reason="../shared/data (faces256, hq_eval) is absent")
def test_finetune_restoration_fast(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "finetune_restoration.py"), "--fast",
                           "--device", "cpu", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["arms"]) == {"L1", "L1+0.01*IFQA"}
    arm = res["arms"]["L1+0.01*IFQA"]
    n = len(res["images"]["hq_eval"])
    assert n == 4 and all(len(arm["per_image"][k]) == n for k in ("psnr", "ssim", "ifqa_eval"))
    assert 0 < arm["hq_eval"]["ifqa_eval"]["mean"] < 1 and arm["hq_eval"]["psnr"]["mean"] > 10
    assert 0 < arm["vs_L1"]["ifqa_eval"]["p_sign_flip"] <= 1
    assert res["loss_model"] != res["evaluator"]
    card = json.loads((REPO / "ifqa_loss" / "bundled" / "ifqa-lite.json").read_text())
    assert res["loss_model_sha256"] == card["sha256"]  # the results name the exact loss model
    assert res["evaluator_sha256"] != card["sha256"]
    from PIL import Image

    with Image.open(tmp_path / "comparison.png") as im:
        assert im.size == (4 * 256, 2 * 4 * 256)


def test_paired_test_detects_a_shift_and_not_noise():
    sys.path.insert(0, str(REPO / "examples"))
    import numpy as np
    from finetune_restoration import paired_test

    rng = np.random.default_rng(0)
    assert paired_test(rng.normal(0.5, 1.0, 100))["p_sign_flip"] < 0.01
    assert paired_test(rng.normal(0.0, 1.0, 100))["p_sign_flip"] > 0.01


def test_evaluate_torchmetrics_fast(tmp_path):
    folder = tmp_path / "restored"
    folder.mkdir()
    for i in range(3):
        write_png(folder / f"{i}.png", size=(96, 80), seed=i)
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "evaluate_torchmetrics.py"), str(folder), "--fast",
                           "--workers", "0", "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["images"] == 4 and len(res["unreadable"]) == 1 and "broken.png" in res["unreadable"][0]
    assert 0 <= res["ifqa"] <= 1 and res["world_size"] == 1
    # the mean of what `ifqa score` gives the readable files
    files = [str(folder / f"{i}.png") for i in range(3)]
    proc = subprocess.run([sys.executable, "-m", "ifqa_loss", "score", "--json", *files],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli = [r["score"] for r in json.loads(proc.stdout)]
    assert res["ifqa"] == pytest.approx(sum(cli) / len(cli), abs=1e-6)


def test_demo_sweep_is_the_shared_degradations():
    sys.path.insert(0, str(REPO / "examples"))
    import torch
    from demo import SWEEP, face_at_size, sweep

    from ifqa_loss.io import to_float, to_uint8
    from ifqa_loss.train.degradations import degrade

    image = torch.randint(0, 256, (3, 300, 280), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    face = face_at_size(image)
    assert face.shape == (3, 256, 256) and face.dtype == torch.uint8
    batch = sweep(face)
    assert batch.shape == (len(SWEEP), 3, 256, 256) and batch.dtype == torch.uint8
    assert torch.equal(batch[0], face)  # clean
    label, (kind, level) = SWEEP[-1]
    assert torch.equal(batch[-1:], to_uint8(degrade(to_float(face), kind, level)))
