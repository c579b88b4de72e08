"""Extra discriminator terms of the training recipe: ordered severity pairs, region pairs, the hinge, mirror
consistency, and a run with them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ifqa_loss.cli import main
from ifqa_loss.regions import region_masks, template_boxes
from ifqa_loss.train.ranking import (SEVERITY_RANGES, degrade_at, moved_masks, ranking_faces, ranking_hinge,
                                     region_pairs, severity_pairs)
from ifqa_loss.train.trainer import flip_consistency

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces256"


def _face_like(n: int = 4, size: int = 64) -> torch.Tensor:
    """Smooth shading plus fine texture, so blur, JPEG and resampling all remove something."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = (0.3 + 0.4 * xx * yy)[None, None].expand(n, 3, size, size)
    return (base + 0.15 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("kind", sorted(SEVERITY_RANGES))
def test_higher_severity_moves_further_from_the_clean_image(kind):
    x = _face_like()
    errs = []
    for u in (0.1, 0.5, 0.95):
        y = degrade_at(x, kind, torch.full((x.shape[0],), u), torch.Generator().manual_seed(1))
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
        errs.append(float((y - x).square().mean()))
    assert errs[0] < errs[1] < errs[2], errs


def test_severity_pairs_are_ordered_and_clean_twins_are_exact():
    x = _face_like(6)
    milder, harsher, gap = severity_pairs(x, ["blur", "jpeg", "downup"], torch.Generator().manual_seed(3))
    assert milder.shape == harsher.shape == x.shape and gap.shape == (6,)
    assert ((gap > 0) & (gap <= 1)).all()
    err = lambda y: (y - x).square().mean(dim=(1, 2, 3))  # noqa: E731
    assert (err(harsher) > err(milder)).all()
    milder, harsher, _ = severity_pairs(x, ["noise"], torch.Generator().manual_seed(3), p_clean=1.0)
    assert torch.equal(milder, x) and not torch.equal(harsher, x)


def test_unknown_kind_names_the_choices():
    with pytest.raises(ValueError, match="unknown degradation kind 'sharp'.*jpeg"):
        severity_pairs(_face_like(2), ["jpeg", "sharp"], torch.Generator())


def test_ranking_faces_off_is_the_input_and_draws_nothing():
    x, gen = _face_like(3), torch.Generator().manual_seed(5)
    state = gen.get_state()
    assert ranking_faces(x, gen) is x and torch.equal(gen.get_state(), state)


def test_ranking_faces_zoom_magnifies_the_centre():
    size = 64
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((yy - 31.5) ** 2 + (xx - 31.5) ** 2) < 12 ** 2).float()[None, None].expand(8, 3, size, size)
    zoomed = ranking_faces(disc, torch.Generator().manual_seed(0), zoom=2.0)
    area = (zoomed[:, 0] > 0.5).float().sum((1, 2)) / (disc[:, 0] > 0.5).float().sum((1, 2))
    assert zoomed.shape == disc.shape and 0 <= zoomed.min() and zoomed.max() <= 1
    assert (area >= 0.97).all() and (area <= 4.1).all() and area.max() > 1.3, area


def test_ranking_faces_soften_removes_fine_detail_from_the_chosen_share():
    x = _face_like(8)
    soft = ranking_faces(x, torch.Generator().manual_seed(0), soften=1.0)
    detail = lambda y: (y[..., 1:] - y[..., :-1]).abs().mean(dim=(1, 2, 3))  # noqa: E731
    assert (detail(soft) < 0.8 * detail(x)).all()
    assert torch.equal(ranking_faces(x, torch.Generator().manual_seed(0), soften=0.0), x)


def test_region_pairs_paste_the_same_damage_into_disjoint_equal_shapes():
    masks = region_masks(template_boxes(3), 64)
    hq, lq = _face_like(3), torch.zeros(3, 3, 64, 64)
    control = moved_masks(masks, torch.Generator().manual_seed(4))
    assert (control * masks).sum() == 0
    assert ((control.sum((1, 2, 3)) > 0) & (control.sum((1, 2, 3)) <= masks.sum((1, 2, 3)))).all()
    in_primary, elsewhere = region_pairs(hq, lq, masks, torch.Generator().manual_seed(4))
    torch.testing.assert_close(in_primary, hq * (1 - masks))
    torch.testing.assert_close(elsewhere, hq * (1 - control))


def test_ranking_hinge_is_zero_once_the_margin_is_met_and_pushes_otherwise():
    better = torch.tensor([0.8, 0.5], requires_grad=True)
    worse = torch.tensor([0.6, 0.49], requires_grad=True)
    loss = ranking_hinge(better, worse, torch.tensor([0.1, 0.1]))
    assert loss.item() == pytest.approx(0.09 / 2)
    loss.backward()
    assert better.grad.tolist() == [0.0, -0.5] and worse.grad.tolist() == [0.0, 0.5]


def test_flip_consistency_is_zero_only_for_mirror_equivariant_maps():
    maps = torch.randn(3, 1, 8, 8)
    assert flip_consistency(maps, maps.flip(-1)).item() == 0.0  # the mirror image's map is the mirrored map
    asym = torch.zeros(1, 1, 4, 4)
    asym[..., :2] = 4.0  # left half confident, right half unsure
    same = asym.clone().requires_grad_(True)  # same map for the mirror image: not equivariant
    loss = flip_consistency(asym, same)
    expected = (torch.sigmoid(torch.tensor(4.0)) - 0.5) ** 2  # every pixel differs by the same amount
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert same.grad.abs().sum() > 0


@pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data/faces256 is absent (training data)")
def test_train_with_ranking_terms_logs_them(tmp_path):
    rc = main(["train", "--data", str(FACES / "images"), "--landmarks", str(FACES / "landmarks68.npz"),
               "--val-list", str(FACES / "val.txt"), "--out", str(tmp_path), "--steps", "2", "--batch-size", "2",
               "--limit", "4", "--val-every", "2", "--val-images", "2", "--raw-fake-frac", "1",
               "--rank-weight", "5", "--rank-kinds", "jpeg,blur", "--region-rank-weight", "5", "--rank-pairs", "2",
               "--rank-zoom", "1.5", "--rank-soften", "0.5", "--max-zoom", "1.4", "--flip-weight", "3",
               "--flip-pairs", "1", "--no-progress"])
    assert rc == 0
    card = json.loads((tmp_path / "ifqa-lite.json").read_text())
    assert card["training"]["rank_kinds"] == ["jpeg", "blur"] and card["training"]["region_rank_weight"] == 5
    training = card["training"]
    assert (training["rank_zoom"], training["rank_soften"], training["max_zoom"]) == (1.5, 0.5, 1.4)
    val = card["validation"]
    assert val["loss_rank"] >= 0 and val["loss_region_rank"] >= 0 and 0 <= val["loss_flip"] <= 1
    assert (card["training"]["flip_weight"], card["training"]["flip_pairs"]) == (3, 1)


@pytest.mark.parametrize("flags, message", [
    (["--rank-weight", "1", "--rank-kinds", "jpeg,sharp"], "rank_kinds"),
    (["--region-rank-weight", "-1"], "region_rank_weight"),
    (["--rank-pairs", "0"], "rank_pairs"),
    (["--rank-zoom", "0.5"], "rank_zoom"),
    (["--max-zoom", "9"], "max_zoom"),
    (["--rank-soften", "1.5"], "rank_soften"),
    (["--flip-weight", "-1"], "flip_weight"),
    (["--flip-pairs", "0"], "flip_pairs"),
    (["--ema-decay", "1"], "ema_decay"),
])
def test_bad_ranking_options_are_usage_errors_before_any_data_loads(tmp_path, capsys, flags, message):
    rc = main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--no-progress", *flags])
    assert rc == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["jpeg", "mixed"])
def test_random_grid_moves_only_the_jpeg_of_the_terms(kind):
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    sev = torch.tensor([0.3, 0.6, 0.9])
    fixed = degrade_at(x, kind, sev, torch.Generator().manual_seed(1))
    assert torch.equal(degrade_at(x, kind, sev, torch.Generator().manual_seed(1), random_grid=False), fixed)
    moved = degrade_at(x, kind, sev, torch.Generator().manual_seed(1), random_grid=True)
    assert moved.shape == x.shape and not torch.equal(moved, fixed)
    # the same codec at the same quality: the error to the input is of the same size either way
    err_fixed, err_moved = (fixed - x).abs().mean(), (moved - x).abs().mean()
    assert 0.7 < float(err_moved / err_fixed) < 1.3
    blurred = torch.Generator().manual_seed(1)
    assert torch.equal(degrade_at(x, "blur", sev, blurred, random_grid=True),
                       degrade_at(x, "blur", sev, torch.Generator().manual_seed(1)))
