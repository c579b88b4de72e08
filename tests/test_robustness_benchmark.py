"""benchmarks/robustness.py: its attack and randomised scorer on their own, and a CI subset of the benchmark."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import REPO, SHARED, face_like_batch, run_benchmark

sys.path.insert(0, str(REPO / "benchmarks"))
import robustness  # noqa: E402


def test_pgd_stays_in_the_budget_and_keeps_the_best_iterate(lite_model):
    x0 = face_like_batch(4, size=64, seed=3)

    def score(x):
        return lite_model(x).score

    with torch.no_grad():
        s0 = score(x0)
    for eps in (1 / 255, 4 / 255):
        up = robustness.pgd(score, x0, eps, steps=6)
        down = robustness.pgd(score, x0, eps, steps=6, direction=-1.0)
        for adv in (up, down):
            assert (adv - x0).abs().max() <= eps + 1e-6
            assert adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            s_up, s_down = score(up), score(down)
        assert (s_up >= s0 - 1e-6).all() and (s_down <= s0 + 1e-6).all()
        assert s_up.mean() > s0.mean() and s_down.mean() < s0.mean()  # even a random network's score moves
    # the last iterate (for randomised scorers) also respects the budget
    last = robustness.pgd(score, x0, 2 / 255, steps=3, keep_best=False)
    assert (last - x0).abs().max() <= 2 / 255 + 1e-6


def test_random_transform_ensemble_is_random_repeatable_and_differentiable(lite_model):
    x = face_like_batch(3, size=64, seed=5).requires_grad_(True)
    ens = robustness.random_transform_ensemble(lite_model, draws=3)
    a = ens(x, torch.Generator().manual_seed(0))
    b = ens(x, torch.Generator().manual_seed(0))
    c = ens(x, torch.Generator().manual_seed(1))
    assert a.shape == (3,) and torch.equal(a, b)
    assert not torch.allclose(a, c)  # other draws, other score: a randomised scorer
    (grad,) = torch.autograd.grad(a.sum(), x)
    assert grad.abs().sum() > 0
    # with every transformation switched off it is the model itself
    identity = robustness.random_transform_ensemble(lite_model, draws=2, flip=False, max_shift=0.0, zoom=(1.0, 1.0),
                                                    max_rotation_deg=0.0, gain=(1.0, 1.0))
    with torch.no_grad():
        assert torch.allclose(identity(x, torch.Generator().manual_seed(0)), lite_model(x).score, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "data" / "faces256" / "val.txt").is_file(),
                    reason="../shared/data/faces256 is absent (the held-out faces the benchmark attacks)")
def test_gradient_cosine_is_one_towards_the_hq_face_and_minus_one_away():
    hq, x0 = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    towards = robustness.gradient_cosine(lambda x: -(x - hq).square().sum((1, 2, 3)), x0, hq)  # peak at HQ
    away = robustness.gradient_cosine(lambda x: (x - hq).square().sum((1, 2, 3)), x0, hq)
    assert towards == pytest.approx([1.0, 1.0], abs=1e-5) and away == pytest.approx([-1.0, -1.0], abs=1e-5)


def test_robustness_benchmark_subset(tmp_path):
    picture = tmp_path / "example.png"
    stdout, res = run_benchmark("robustness.py", tmp_path / "robustness.json", "--n", "2", "--steps", "5",
                                "--eot-steps", "2", "--adam-steps", "4", "--track-every", "2",
                                "--picture", str(picture))
    assert "acceptance" in stdout and res["images"] == 2 and len(res["names"]) == 2
    assert res["model"]["backbone"] == "lite" and "evaluator" in res["evaluator"]["weights"]
    assert res["attack"]["steps"] == 5 and res["attack"]["step_size"] == "2.5 * eps / steps"
    keys = [f"{e}/255" for e in (1, 2, 4, 8)]
    assert set(res["pgd"]) == {"blur", "jpeg", "noise"}
    for kind, r in [*res["pgd"].items(), ("reverse", res["reverse"])]:
        assert list(r["eps"]) == keys
        for k in keys:
            e = r["eps"][k]
            assert e["linf"] <= e["eps"] + 1e-6, (kind, k)
            per = e["loss_model"]["per_image"]
            assert list(per) == res["names"]
            if kind == "reverse":  # pushed down, never up
                assert all(v["after"] <= v["start"] + 1e-6 for v in per.values()), (kind, k)
            else:
                assert all(v["after"] >= v["start"] - 1e-6 for v in per.values()), (kind, k)
            assert e["loss_model"]["mean_start"] == pytest.approx(r["start"]["loss_model"], abs=1e-6)
            assert e["evaluator"]["mean_start"] == pytest.approx(r["start"]["evaluator"], abs=1e-6)
        if kind == "reverse":
            assert all(r["eps"][k]["loss_model"]["change"] < 0 for k in keys)
    assert max(res["pgd"]["blur"]["eps"][k]["loss_model"]["change"] for k in keys) > 0
    assert res["reverse"]["start"]["loss_model"] == pytest.approx(res["clean"]["loss_model"], abs=1e-6)
    # EOT: budget kept; the ensemble is measured on the same fixed draws before every attack
    for kind, r in res["eot"]["results"].items():
        starts = {e["ensemble"]["mean_start"] for e in r.values()}
        assert len(starts) == 1, (kind, starts)
        assert all(e["linf"] <= e["eps"] + 1e-6 for e in r.values())
    # Adam: tracked at steps 0, 2, 4; step 0 is the start the PGD section scored; the steps change the image
    for kind, a in res["adam"]["results"].items():
        track = a["track"]
        assert [t["step"] for t in track] == [0, 2, 4]
        assert track[0]["loss_model"] == pytest.approx(res["pgd"][kind]["start"]["loss_model"], abs=1e-6)
        assert track[0]["evaluator"] == pytest.approx(res["pgd"][kind]["start"]["evaluator"], abs=1e-6)
        assert a["mean_abs_change"] > 0 and track[-1]["psnr"] != track[0]["psnr"]
        assert track[-1]["loss_model"] > track[0]["loss_model"]  # Adam minimises 1 - score
        assert all(0 < t["ssim"] <= 1 and t["laplacian_var"] > 0 for t in track)
        assert a["change"]["psnr"] == pytest.approx(track[-1]["psnr"] - track[0]["psnr"])
    # where the gradient points: one cosine per face and start, the mean of them
    assert set(res["gradient_cosine"]) == {"blur", "jpeg", "noise"}
    for c in res["gradient_cosine"].values():
        assert list(c["per_image"]) == res["names"] and all(-1 <= v <= 1 for v in c["per_image"].values())
        assert c["mean"] == pytest.approx(sum(c["per_image"].values()) / 2)
    acc = res["acceptance"]
    assert set(acc) == {"pgd_rise_1/255", "pgd_rise_4/255", "adam_psnr_change", "adam_evaluator_change"}
    assert acc["pgd_rise_1/255"]["blur"] == res["pgd"]["blur"]["eps"]["1/255"]["loss_model"]["change"]
    assert acc["pgd_rise_1/255"]["met"] == all(acc["pgd_rise_1/255"][k] <= 0.10 for k in ("blur", "jpeg"))
    # the picture: 6 panels of 256 px under a label strip
    from PIL import Image

    with Image.open(picture) as im:
        assert im.format == "PNG" and im.size == (6 * 256, 256 + 16)


def test_the_default_picture_is_not_committed():
    """It shows a faces256 face (research data): git must ignore it."""
    rel = robustness.PICTURE.relative_to(REPO)
    proc = subprocess.run(["git", "check-ignore", "-q", str(rel)], cwd=REPO)
    if proc.returncode == 128:
        pytest.skip("not a git checkout")
    assert proc.returncode == 0, f"{rel} is not git-ignored"


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "data" / "faces256" / "val.txt").is_file(),
                    reason="../shared/data/faces256 is absent (the held-out faces the benchmark attacks)")
def test_quick_screening_runs_only_blur_and_jpeg_at_two_budgets(tmp_path):
    stdout, res = run_benchmark("robustness.py", tmp_path / "quick.json", "--quick", "--n", "2", "--steps", "3",
                                "--adam-steps", "2", "--track-every", "2")
    assert "QUICK SCREENING" in stdout and res["quick"] is True
    assert set(res["pgd"]) == {"blur", "jpeg"} and res["reverse"] is None and res["eot"]["results"] == {}
    assert all(list(r["eps"]) == ["1/255", "4/255"] for r in res["pgd"].values())
    assert res["attack"]["steps"] == 3 and res["attack"]["eps_255"] == [1, 4]
    assert set(res["acceptance"]) == {"pgd_rise_1/255", "pgd_rise_4/255", "adam_psnr_change", "adam_evaluator_change"}
    assert not (tmp_path / "robustness_example.png").exists()
