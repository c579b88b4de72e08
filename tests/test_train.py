"""Training recipe: degradations, FPRS batches, and a smoke run of `ifqa train` whose weights reload."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ifqa_loss import IFQA
from ifqa_loss.cli import main
from ifqa_loss.regions import region_masks, template_boxes
from ifqa_loss.train.degradations import DegradationConfig, Degrader, gaussian_blur, unsharp_mask
from ifqa_loss.train.trainer import discriminator_batch

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces256"


def test_degrader_is_seeded_in_range_and_degrades():
    x = torch.rand(6, 3, 64, 64)
    a, b = Degrader(seed=3)(x), Degrader(seed=3)(x)
    assert torch.equal(a, b)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert ((a - x).abs().mean(dim=(1, 2, 3)) > 1e-4).all(), "every sample gets at least one degradation"
    assert not torch.equal(Degrader(seed=4)(x), a)


@pytest.mark.parametrize("stage", ["blur", "down", "noise", "jpeg"])
def test_each_degradation_stage_alone(stage):
    probs = {k: 0.0 for k in ("p_blur", "p_down", "p_noise", "p_jpeg")}
    probs[f"p_{stage}"] = 1.0
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    y = Degrader(DegradationConfig(**probs), seed=0)(x)
    assert (y - x).abs().mean() > 1e-3


def test_fprs_labels_follow_pixel_source():
    hq, fake = torch.ones(2, 3, 32, 32), torch.zeros(2, 3, 32, 32)
    masks = region_masks(template_boxes(2), 32)
    imgs, labels, regions = discriminator_batch(hq, fake, masks, torch.tensor([True, False]))
    assert imgs.shape[0] == 6 and labels.shape == (6, 1, 32, 32) and regions.shape == labels.shape
    # each pixel's label equals its source: HQ pixels are 1 (=image value here), fake pixels 0
    assert torch.equal(labels, imgs[:, :1])
    assert 0 < labels[4].mean() < 1 and 0 < labels[5].mean() < 1


@pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data/faces256 is absent (training data)")
def test_train_smoke_reloads_and_resumes(tmp_path, capsys):
    def args(steps):
        return ["train", "--data", str(FACES / "images"), "--landmarks", str(FACES / "landmarks68.npz"),
                "--val-list", str(FACES / "val.txt"), "--out", str(tmp_path), "--steps", str(steps),
                "--batch-size", "2", "--limit", "6", "--val-every", "2", "--val-images", "4", "--ckpt-every", "1",
                "--train-list", str(train_list), "--degradation", "p_jpeg=0.9", "--degradation", "jpeg_quality=40,60",
                "--no-progress"]

    names = sorted(p.name for p in (FACES / "images").iterdir())
    held_out = set((FACES / "val.txt").read_text().split())
    train_list = tmp_path / "train.txt"
    train_list.write_text("\n".join([n for n in names if n not in held_out][:5] + sorted(held_out)[:1]) + "\n")

    assert main(args(2)) == 0
    card = json.loads((tmp_path / "ifqa-lite.json").read_text())
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert logged == card["history"]  # without a bar, each validation is one JSON line on stderr
    assert card["steps"] == 2 and card["backbone"] == "lite" and "NON-COMMERCIAL" in card["licence"]
    assert card["data"]["train_images"] == 5  # the listed validation image stays out
    assert card["training"]["degradation"] == {"p_jpeg": 0.9, "jpeg_quality": [40, 60]}
    assert card["validation"]["val_images"] == 4 and 0 <= card["validation"]["val_auc"] <= 1
    model = IFQA(weights=tmp_path / "ifqa-lite.safetensors")
    assert model.backbone == "lite"
    score = model(torch.rand(1, 3, 64, 64)).score
    assert score.shape == (1,) and 0 <= float(score) <= 1
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert int(ck["step"]) == 2
    # resume to 3 steps: continues from the checkpoint instead of starting over
    assert main(args(3)) == 0
    card = json.loads((tmp_path / "ifqa-lite.json").read_text())
    assert card["steps"] == 3
    assert [h["step"] for h in card["history"]] == [2, 3]


def test_jpeg_only_share_gets_a_plain_jpeg_round_trip():
    from ifqa_loss.train.degradations import jpeg_pil

    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    cfg = DegradationConfig(p_blur=1.0, p_noise=1.0, p_jpeg_only=1.0, jpeg_quality=(50, 50), jpeg_backend="pil")
    torch.testing.assert_close(Degrader(cfg, seed=0)(x), jpeg_pil(x, torch.full((3,), 50)), rtol=0, atol=0)
    # unused (0), it draws no random numbers: existing recipes keep their exact degradations
    assert torch.equal(Degrader(DegradationConfig(p_jpeg_only=0.0), seed=5)(x), Degrader(seed=5)(x))
    # JPEG-only samples stay JPEG-only when over-sharpening is on
    cfg.p_sharpen = 1.0
    torch.testing.assert_close(Degrader(cfg, seed=0)(x), jpeg_pil(x, torch.full((3,), 50)), rtol=0, atol=0)


def _high_pass_energy(x: torch.Tensor) -> torch.Tensor:
    lap = x[..., 1:-1, 2:] + x[..., 1:-1, :-2] + x[..., 2:, 1:-1] + x[..., :-2, 1:-1] - 4 * x[..., 1:-1, 1:-1]
    return lap.square().mean(dim=(1, 2, 3))


def _smooth_faces(n: int) -> torch.Tensor:
    """Soft random texture in [0.2, 0.8]: detail at every scale for a sharpener to boost."""
    texture = torch.rand(n, 1, 64, 64, generator=torch.Generator().manual_seed(0)).expand(n, 3, 64, 64)
    return 0.2 + 0.6 * gaussian_blur(texture.contiguous(), torch.full((n,), 1.0))


def test_unsharp_mask_adds_high_frequencies_and_zero_amount_is_identity():
    x = _smooth_faces(3)
    sigma = torch.tensor([0.8, 1.5, 2.5])
    torch.testing.assert_close(unsharp_mask(x, sigma, torch.zeros(3)), x)
    weak, strong = unsharp_mask(x, sigma, torch.full((3,), 1.0)), unsharp_mask(x, sigma, torch.full((3,), 4.0))
    assert 0 <= strong.min() and strong.max() <= 1
    assert (_high_pass_energy(x) < _high_pass_energy(weak)).all()
    assert (_high_pass_energy(weak) < _high_pass_energy(strong)).all()


def test_over_sharpening_stage_sharpens_after_the_down_up_stage():
    x = _smooth_faces(4)
    only_down = dict(p_blur=0.0, p_down=1.0, scale=(2.0, 2.0), p_noise=0.0, p_jpeg=0.0)
    plain = Degrader(DegradationConfig(**only_down), seed=1)(x)
    sharp = Degrader(DegradationConfig(**only_down, p_sharpen=1.0, sharpen_amount=(3.0, 3.0)), seed=1)(x)
    assert (_high_pass_energy(sharp) > 1.5 * _high_pass_energy(plain)).all()


@pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data/faces256 is absent (training data)")
def test_discriminator_only_stage_starts_from_init_weights(tmp_path):
    """--raw-fake-frac 1 skips the generator; --init loads the starting weights (lr 0 keeps them exactly)."""
    from safetensors.torch import load_file

    from ifqa_loss.weights import registered_path

    base = ["train", "--data", str(FACES / "images"), "--val-list", str(FACES / "val.txt"), "--steps", "2",
            "--batch-size", "2", "--limit", "4", "--val-every", "2", "--val-images", "2", "--raw-fake-frac", "1",
            "--init", "ifqa-lite", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "frozen"), "--lr-d", "0"]) == 0
    init = load_file(registered_path("ifqa-lite"))
    out = load_file(tmp_path / "frozen" / "ifqa-lite.safetensors")
    assert out.keys() == init.keys() and all(torch.equal(out[k], init[k]) for k in init)
    card = json.loads((tmp_path / "frozen" / "ifqa-lite.json").read_text())
    assert card["generator"] is None and not (tmp_path / "frozen" / "generator.safetensors").exists()
    assert card["training"]["init"] == "ifqa-lite" and "loss_l1" not in card["validation"]
    assert main(base + ["--out", str(tmp_path / "moved")]) == 0
    moved = load_file(tmp_path / "moved" / "ifqa-lite.safetensors")
    assert any(not torch.equal(moved[k], init[k]) for k in init)


def test_bad_init_weights_are_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights")
    rc = main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--init", str(bad), "--no-progress"])
    assert rc == 2 and "bad.safetensors" in capsys.readouterr().err


def test_zoom_moves_region_boxes_with_the_image():
    from ifqa_loss.train.augment import random_zoom

    x = torch.zeros(3, 3, 128, 128)
    boxes = torch.tensor([[[0.40, 0.40, 0.50, 0.50]]]).repeat(3, 1, 1)
    x[:, :, 51:64, 51:64] = 1.0  # a bright square exactly at the box
    y, moved = random_zoom(x, boxes, torch.Generator().manual_seed(0), max_zoom=1.3, max_shift=0.05)
    inside = region_masks(torch.cat([moved[:, :, :2] + 0.01, moved[:, :, 2:] - 0.01], -1), 128, margin=0.0)
    assert not torch.equal(moved, boxes)
    # the transformed box still sits on the bright square
    assert (y[:, :1] * inside).sum() / inside.sum() > 0.9


def test_cutmix_pairs_label_each_pixel_by_source():
    from ifqa_loss.train.augment import random_boxes_mask

    hq, fake = torch.ones(3, 3, 32, 32), torch.zeros(3, 3, 32, 32)
    masks = region_masks(template_boxes(3), 32)
    cut_masks = random_boxes_mask(3, 32, torch.Generator().manual_seed(0), "cpu")
    assert ((cut_masks.mean(dim=(1, 2, 3)) > 0.03) & (cut_masks.mean(dim=(1, 2, 3)) < 0.35)).all()
    imgs, labels, regions = discriminator_batch(hq, fake, masks, torch.zeros(3, dtype=torch.bool), cut_masks,
                                                torch.tensor([True, True, False]))
    assert imgs.shape[0] == 3 + 3 + 4
    assert torch.equal(labels, imgs[:, :1])
    assert torch.equal(regions[-4:], torch.cat([masks[:2], masks[:2]]))


@pytest.mark.parametrize("item,expected", [("p_jpeg=0.7", {"p_jpeg": 0.7}),
                                           ("jpeg_quality=30,95", {"jpeg_quality": (30, 95)}),
                                           ("jpeg_backend=pil", {"jpeg_backend": "pil"}),
                                           ("jpeg_grid=random", {"jpeg_grid": "random"}),
                                           ("motion_kernel=5,9", {"motion_kernel": (5, 9)})])
def test_degradation_overrides_are_typed(item, expected):
    from ifqa_loss.cli import _degradation_overrides

    assert _degradation_overrides([item]) == expected


@pytest.mark.parametrize("item", ["p_jpeg", "nope=1", "p_jpeg=high", "jpeg_quality=95,30", "jpeg_quality=30"])
def test_bad_degradation_override_is_a_usage_error(item, capsys):
    assert main(["train", "--data", "x", "--out", "y", "--degradation", item]) == 2
    assert "--degradation" in capsys.readouterr().err


@pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data/faces256 is absent (training data)")
def test_ema_weights_are_exported_and_survive_resumption(tmp_path):
    """--ema-decay 0.5 over two steps run as two invocations: the export is the mean of both steps' weights."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    base = ["train", "--data", str(FACES / "images"), "--val-list", str(FACES / "val.txt"), "--out", str(out),
            "--batch-size", "2", "--limit", "4", "--val-every", "1", "--val-images", "2", "--raw-fake-frac", "1",
            "--init", "ifqa-lite", "--ckpt-every", "1", "--ema-decay", "0.5", "--no-progress"]
    assert main(base + ["--steps", "1"]) == 0
    first = torch.load(out / "checkpoint.pt", weights_only=True)
    assert main(base + ["--steps", "2"]) == 0
    second = torch.load(out / "checkpoint.pt", weights_only=True)
    assert int(second["ema"]["n_averaged"]) == 2
    exported = load_file(out / "ifqa-lite.safetensors")
    for k, v in exported.items():
        torch.testing.assert_close(v, 0.5 * first["d"][k] + 0.5 * second["d"][k])
    assert any(not torch.equal(v, second["d"][k]) for k, v in exported.items())  # not the raw last weights
    assert json.loads((out / "ifqa-lite.json").read_text())["training"]["ema_decay"] == 0.5


def test_extra_terms_are_named_in_order_and_off_terms_draw_nothing():
    from ifqa_loss.train.trainer import Batch, TrainConfig, extra_terms

    hq = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    masks = region_masks(template_boxes(3), 64)
    batch = Batch(hq, masks, (hq * 0.5).clamp(0, 1))
    gen = torch.Generator().manual_seed(1)
    state = gen.get_state()
    assert extra_terms(TrainConfig("d", "o", batch_size=3), batch, gen) == []
    assert torch.equal(gen.get_state(), state)
    cfg = TrainConfig("d", "o", batch_size=3, rank_weight=2.0, region_rank_weight=3.0, rank_pairs=2, flip_weight=4.0,
                      flip_pairs=1, rank_kinds=["blur"])
    terms = extra_terms(cfg, batch, gen)
    assert [(t.name, t.weight, t.images.shape[0]) for t in terms] == [
        ("loss_rank", 2.0, 4), ("loss_region_rank", 3.0, 4), ("loss_flip", 4.0, 1)]
    assert torch.equal(terms[2].images, hq[:1].flip(-1))
    # mirror term: zero when the mirrored face's map is the mirrored map of the real face
    maps = torch.randn(6, 1, 8, 8)
    assert terms[2].loss(maps[:1].flip(-1), maps).item() == 0
    assert terms[2].loss(maps[:1], maps).item() > 0


@pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data/faces256 is absent (training data)")
def test_resumed_run_gives_the_uninterrupted_runs_weights(tmp_path):
    """Every extra term, EMA and the generator on: stopping after step 1 and resuming must continue each random
    stream and optimiser state, so the weights equal those of one uninterrupted run of the same seed."""
    from safetensors.torch import load_file

    def run(out, steps):
        assert main(["train", "--data", str(FACES / "images"), "--landmarks", str(FACES / "landmarks68.npz"),
                     "--val-list", str(FACES / "val.txt"), "--out", str(out), "--steps", str(steps),
                     "--batch-size", "2", "--limit", "4", "--val-every", "1", "--val-images", "2", "--ckpt-every", "1",
                     "--rank-weight", "5", "--region-rank-weight", "5", "--rank-pairs", "2", "--rank-zoom", "1.5",
                     "--rank-soften", "0.5", "--flip-weight", "3", "--flip-pairs", "1", "--ema-decay", "0.5",
                     "--no-progress"]) == 0

    run(tmp_path / "straight", 2)
    run(tmp_path / "resumed", 1)
    ck = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert set(ck) == {"d", "g", "opt_d", "opt_g", "step", "elapsed", "gen", "deg", "history", "ema"}
    run(tmp_path / "resumed", 2)
    for name in ("ifqa-lite.safetensors", "generator.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "resumed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    cards = [json.loads((tmp_path / d / "ifqa-lite.json").read_text()) for d in ("straight", "resumed")]
    assert cards[0]["history"] == cards[1]["history"]
    assert list(cards[0]["history"][-1]) == ["step", "val_hq_score", "val_lq_score", "val_auc", "val_images", "loss_d",
                                             "loss_rank", "loss_region_rank", "loss_flip", "loss_l1", "loss_adv"]
