"""Robust and cross-content training terms (``ifqa_loss/train/robust.py``): the attacks stay inside their budget
and move the score the way they are told before the update, the labels are kept, cross-face pairs are formed
across faces only, and every new term is off by default and then changes nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ifqa_loss.cli import main
from ifqa_loss.regions import region_masks, template_boxes
from ifqa_loss.train.config import TrainConfig, check_config
from ifqa_loss.train.degradations import SWEEP_CLEAN, SWEEP_LEVELS, degrade, gaussian_blur, sweep_level
from ifqa_loss.train.ranking import SEVERITY_RANGES, degrade_at, mixed_at, ranking_faces, severity_value
from ifqa_loss.train.robust import (SWEEP_SPAN, calibration_loss, cross_content_images, cross_face_hinge, draw_eps,
                                   gradient_alignment, perturb, severity_level_loss)
from ifqa_loss.train.trainer import Batch, alignment_terms, extra_terms, robust_terms
from ifqa_loss.weights import load_model

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces256"


@pytest.fixture(scope="module")
def lite():
    """The bundled discriminator: a trained network, so its score of blurred images has room to rise."""
    net = load_model("lite", "ifqa-lite").model.eval()
    return net


def _score(net):
    return lambda x: torch.sigmoid(net.forward_logits(x * 2 - 1)).mean(dim=(1, 2, 3))


def _faces(n: int = 4, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = (0.3 + 0.4 * xx * yy)[None, None].expand(n, 3, size, size)
    return (base + 0.15 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("steps", [1, 3])
def test_attack_stays_in_budget_and_moves_the_score_its_way(lite, steps):
    # up from blurred faces (a fake made to look better), down from sharp ones (a real face made to look worse)
    clean = _faces()
    blurred = gaussian_blur(clean, torch.full((4,), 2.0))
    eps = torch.tensor([1.0, 2.0, 4.0, 8.0]) / 255
    score = _score(lite)
    up = perturb(score, blurred, eps, steps, torch.ones(4), torch.Generator().manual_seed(0))
    down = perturb(score, clean, eps, steps, -torch.ones(4), torch.Generator().manual_seed(0))
    for adv, x in ((up, blurred), (down, clean)):
        assert not adv.requires_grad and adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
        assert ((adv - x).abs().amax(dim=(1, 2, 3)) <= eps + 1e-6).all()
    with torch.no_grad():
        rise, fall = score(up) - score(blurred), score(clean) - score(down)
    # one FGSM step from a random start can lose to its own start noise on an image; on average it must not,
    # and a few PGD steps must win on every image
    assert (rise.mean() > 0 and fall.mean() > 0) if steps == 1 else ((rise > 0).all() and (fall > 0).all())
    assert all(p.grad is None for p in lite.parameters()), "the attack must not leave weight gradients"


def test_zero_budget_is_the_identity_and_budgets_are_in_range():
    x = _faces(2)
    out = perturb(lambda y: y.mean(dim=(1, 2, 3)), x, torch.zeros(2), 2, torch.ones(2), torch.Generator())
    assert torch.equal(out, x)
    eps = draw_eps(1000, 4.0, torch.Generator().manual_seed(0))
    assert eps.min() >= 0 and eps.max() <= 4 / 255 and eps.mean() > 1.5 / 255


def test_cross_face_pairs_are_formed_across_faces_only():
    # faces 0 and 1, each clean (severity 0) and degraded (0.5); within each face the order is wrong
    severity = torch.tensor([0.0, 0.5, 0.0, 0.5])
    face = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([0.5, 0.9, 0.95, 0.2])  # face 0's clean 0.5 < its degraded 0.9: same face, not counted
    # cross pairs: (clean 0 vs degraded 1): 0.5 - 0.2 = 0.3 >= 0.1 * 0.5; (clean 1 vs degraded 0): 0.95 - 0.9 = 0.05
    loss = cross_face_hinge(scores, severity, face, margin=0.1)
    assert loss.item() == pytest.approx(0.0)
    loss = cross_face_hinge(scores, severity, face, margin=0.2)  # only (clean 1, degraded 0) is short: 0.1 - 0.05
    assert loss.item() == pytest.approx((0.05 + 0.0) / 2)
    # one face only: no pair at all, a zero that still has a graph
    s = torch.tensor([0.1, 0.9], requires_grad=True)
    z = cross_face_hinge(s, torch.tensor([0.0, 0.9]), torch.tensor([0, 0]), 1.0)
    z.backward()
    assert z.item() == 0 and torch.equal(s.grad, torch.zeros(2))


def test_cross_content_images_one_kind_and_severity_per_face():
    x = _faces(8)
    out, u = cross_content_images(x, ["blur", "jpeg"], torch.Generator().manual_seed(1))
    assert out.shape == x.shape and u.shape == (8,) and (u >= 0).all() and (u <= 1).all()
    assert ((out - x).abs().mean(dim=(1, 2, 3)) > 0).all()
    with pytest.raises(ValueError, match="unknown degradation kind"):
        cross_content_images(x, ["sharp"], torch.Generator())


def test_calibration_pulls_only_scores_below_the_target():
    s = torch.tensor([0.95, 0.5, 0.8], requires_grad=True)
    loss = calibration_loss(s, 0.9)
    loss.backward()
    assert loss.item() == pytest.approx((0.4 ** 2 + 0.1 ** 2) / 3)
    assert s.grad[0] == 0 and s.grad[1] < s.grad[2] < 0


def test_severity_level_is_zero_on_the_line_and_pulls_towards_it():
    severity = torch.tensor([0.0, 0.5, 1.0, 0.5])
    on_line = 0.9 - 0.85 * severity
    assert severity_level_loss(on_line, severity, 0.9, 0.05).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.tensor([0.99, 0.3, 0.05, 0.6], requires_grad=True)  # too high, too low, on the line, too high
    loss = severity_level_loss(s, severity, 0.9, 0.05)
    loss.backward()
    assert loss.item() > 0
    assert s.grad[0] > 0 and s.grad[1] < 0 and s.grad[2].abs() < 1e-6 and s.grad[3] > 0
    # the same shortfall costs more where the target is extreme: the gradient does not die in saturation
    far = severity_level_loss(torch.tensor([0.5]), torch.tensor([1.0]), 0.9, 0.05)
    near = severity_level_loss(torch.tensor([0.5]), torch.tensor([0.53]), 0.9, 0.05)
    assert far > near


def test_mixed_severity_is_degrades_mixed_level():
    x = _faces(1)
    for level in (1.0, 3.0, 5.0):
        ours = mixed_at(x, torch.tensor([level]), torch.Generator().manual_seed(7))
        assert torch.equal(ours, degrade(x, "mixed", level, seed=7))
    lo, hi = SEVERITY_RANGES["mixed"]
    u = torch.tensor([0.13, 0.89])
    x2 = _faces(2)
    assert torch.equal(degrade_at(x2, "mixed", u, torch.Generator().manual_seed(1)),
                       mixed_at(x2, lo + u * (hi - lo), torch.Generator().manual_seed(1)))
    assert (lo + u * (hi - lo) - torch.tensor([1.0, 5.0])).abs().max() < 0.03  # where the benchmark's levels fall


def test_sweep_scale_puts_each_kinds_benchmark_levels_at_the_same_severity():
    for kind, levels in SWEEP_LEVELS.items():
        assert torch.allclose(sweep_level(kind, torch.tensor(levels, dtype=torch.float32)),
                              torch.arange(1.0, 6.0), atol=1e-5)
        assert sweep_level(kind, torch.tensor([float(SWEEP_CLEAN[kind])])).item() == 0
    # the harshest draws of SEVERITY_RANGES lie past level 5, below SWEEP_SPAN
    for kind in SWEEP_LEVELS:
        top = sweep_level(kind, severity_value(kind, torch.tensor([1.0]))).item()
        assert 5 < top <= SWEEP_SPAN
    x = _faces(12)
    kinds = ["blur", "noise", "jpeg", "downup", "mixed"]
    _, u = cross_content_images(x, kinds, torch.Generator().manual_seed(3))
    _, s = cross_content_images(x, kinds, torch.Generator().manual_seed(3), sweep_scale=True)
    assert ((s >= 0) & (s <= 1)).all() and not torch.equal(s, u)
    with pytest.raises(ValueError, match="'sharpen' has no sweep levels"):
        cross_content_images(x, ["sharpen"], torch.Generator(), sweep_scale=True)


def test_the_severity_line_refuses_kinds_without_sweep_levels():
    with pytest.raises(ValueError, match="cross_kinds: the severity line needs kinds with sweep levels.*sharpen"):
        check_config(TrainConfig("d", "o", level_weight=1.0, cross_kinds=["blur", "sharpen"]))
    check_config(TrainConfig("d", "o", cross_rank_weight=1.0, cross_kinds=["blur", "sharpen"]))  # the hinge may


def _batch(n: int = 4, size: int = 64) -> Batch:
    hq = _faces(n, size)
    return Batch(hq, region_masks(template_boxes(n), size), gaussian_blur(hq, torch.full((n,), 2.5)))


def test_new_terms_are_off_by_default_and_draw_nothing(lite):
    cfg = TrainConfig("d", "o", batch_size=4)
    assert (cfg.robust_weight, cfg.robust_rank_weight, cfg.cross_rank_weight, cfg.calib_weight) == (0, 0, 0, 0)
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    batch = _batch()
    assert extra_terms(cfg, batch, gen) == [] and robust_terms(cfg, lite, batch, batch.lq, [], gen) == []
    assert torch.equal(gen.get_state(), state)


def test_robust_terms_keep_labels_and_raise_the_fakes_score_before_the_update(lite):
    cfg = TrainConfig("d", "o", batch_size=4, rank_weight=1.0, rank_pairs=2, rank_kinds=["blur"], robust_weight=1.0,
                      robust_rank_weight=2.0, robust_faces=3, robust_eps=8.0, robust_steps=3)
    check_config(cfg)
    batch, gen = _batch(), torch.Generator().manual_seed(0)
    terms = extra_terms(cfg, batch, gen)
    robust = robust_terms(cfg, lite, batch, batch.lq, terms, gen)
    assert [(t.name, t.weight, t.images.shape[0]) for t in robust] == [("loss_robust", 1.0, 6),
                                                                         ("loss_robust_rank", 2.0, 4)]
    adv, clean = robust[0].images, torch.cat([batch.hq[:3], batch.lq[:3]])
    assert (adv - clean).abs().max() <= 8 / 255 + 1e-6
    score = _score(lite)
    with torch.no_grad():
        assert score(adv[3:]).mean() > score(clean[3:]).mean()  # fakes pushed up ...
        assert score(adv[:3]).mean() < score(clean[:3]).mean()  # ... real faces pushed down
        logits = lite.forward_logits(adv * 2 - 1)
    # the labels are kept: BCE towards 1 on the attacked reals and 0 on the attacked fakes
    reals_only = robust[0].loss(torch.cat([logits[:3], torch.full_like(logits[3:], -30.0)]), None)
    fakes_only = robust[0].loss(torch.cat([torch.full_like(logits[:3], 30.0), logits[3:]]), None)
    assert reals_only.item() > 0 and fakes_only.item() > 0
    assert robust[0].loss(torch.cat([torch.full_like(logits[:3], 30.0), torch.full_like(logits[3:], -30.0)]),
                          None).item() < 1e-9
    # the attacked twins: the milder went down and the harsher up, and the hinge is that of loss_rank
    twins = terms[0].images
    with torch.no_grad():
        assert (score(robust[1].images[:2]) <= score(twins[:2]) + 1e-6).all()
        assert (score(robust[1].images[2:]) >= score(twins[2:]) - 1e-6).all()
        tl = lite.forward_logits(twins * 2 - 1)
    assert robust[1].loss(tl, None).item() == pytest.approx(terms[0].loss(tl, None).item())


@pytest.mark.parametrize("zoom", [1.0, 1.5])
def test_robust_level_attacks_the_lines_degraded_images_and_keeps_their_points(lite, zoom):
    cfg = TrainConfig("d", "o", batch_size=4, rank_pairs=3, level_weight=4.0, level_zoom=zoom,
                      cross_kinds=["blur", "jpeg"], robust_level_weight=7.0, robust_eps=8.0, robust_steps=3,
                      calib_target=0.9, level_floor=0.05)
    check_config(cfg)
    batch, gen = _batch(), torch.Generator().manual_seed(0)
    terms = extra_terms(cfg, batch, gen)
    (level,) = terms
    (robust,) = robust_terms(cfg, lite, batch, batch.lq, terms, gen)
    assert (robust.name, robust.weight, robust.images.shape[0]) == ("loss_robust_level", 7.0, 3)
    degraded = level.images[-3:]  # the clean faces are not attacked
    assert (robust.images - degraded).abs().max() <= 8 / 255 + 1e-6
    score = _score(lite)
    with torch.no_grad():
        assert score(robust.images).mean() > score(degraded).mean()  # pushed up
        logits = lite.forward_logits(degraded * 2 - 1)
    # the same line as loss_level's: the degraded images cost what they cost there (with the clean faces on it)
    _, severity = level.line.split(3)
    target = torch.logit(0.9 - 0.85 * severity)[:, None, None, None].expand(3, 1, 8, 8)
    on_line = torch.full((4, 1, 8, 8), float(torch.logit(torch.tensor(0.9))))
    pool = torch.cat([on_line[:3], target]) if zoom > 1 else target
    assert robust.loss(target, None).item() == pytest.approx(0.0, abs=1e-5)
    assert level.loss(pool, on_line).item() == pytest.approx(0.0, abs=1e-5)
    clean = torch.full((3, *logits.shape[1:]), float(torch.logit(torch.tensor(0.9))))  # on the line
    assert robust.loss(logits, None).item() == pytest.approx(
        2 * level.loss(torch.cat([clean, logits]) if zoom > 1 else logits, clean).item(), rel=1e-5)


def test_robust_level_needs_the_line():
    with pytest.raises(ValueError, match="robust_level_weight.*needs level_weight"):
        check_config(TrainConfig("d", "o", robust_level_weight=1.0))


def test_gradient_alignment_is_one_minus_the_cosine_per_image():
    d = torch.randn(3, 3, 8, 8)
    other = torch.randn(3, 3, 8, 8)
    ortho = other - (other * d).sum((1, 2, 3), keepdim=True) / d.square().sum((1, 2, 3), keepdim=True) * d
    assert gradient_alignment(5 * d, d).item() == pytest.approx(0.0, abs=1e-6)  # any length
    assert gradient_alignment(-d, d).item() == pytest.approx(2.0, abs=1e-6)
    assert gradient_alignment(ortho, d).item() == pytest.approx(1.0, abs=1e-5)
    mixed = torch.cat([d[:1], -d[1:2], ortho[2:]])
    assert gradient_alignment(mixed, d).item() == pytest.approx(1.0, abs=1e-5)  # (0 + 2 + 1) / 3


@pytest.mark.parametrize("zoom", [1.0, 1.5])
def test_alignment_term_scores_the_input_gradient_of_the_lines_degraded_images(zoom):
    net = load_model("lite", "ifqa-lite").model.train().requires_grad_(True)  # as the trainer has it
    cfg = TrainConfig("d", "o", batch_size=4, rank_pairs=3, level_weight=4.0, level_zoom=zoom,
                      cross_kinds=["blur", "noise"], align_weight=3.0, align_faces=2)
    check_config(cfg)
    batch = _batch()
    terms = extra_terms(cfg, batch, torch.Generator().manual_seed(0))
    (level,) = terms
    (align,) = alignment_terms(cfg, batch, terms)
    assert (align.name, align.weight, align.images.shape[0], align.images.requires_grad) == ("loss_align", 3.0, 2,
                                                                                           True)
    degraded = level.images[-3:][:2]
    clean = level.images[:2] if zoom > 1 else batch.hq[:2]
    assert torch.equal(align.images.detach(), degraded)
    # the loss is 1 - cos(gradient of the score, clean - degraded), with the gradient taken afresh here
    x = degraded.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_score(net)(x).sum(), x)
    expected = gradient_alignment(g, clean - degraded)
    value = align.loss(net.forward_logits(align.images * 2 - 1), None)
    assert value.item() == pytest.approx(expected.item(), rel=1e-4)
    # it trains the network: the second-order path reaches the weights, and a few steps on it alone align better
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    first = None
    for _ in range(6):
        opt.zero_grad()
        loss = align.loss(net.forward_logits(align.images * 2 - 1), None)
        first = loss.item() if first is None else first
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
        opt.step()
    assert align.loss(net.forward_logits(align.images * 2 - 1), None).item() < first


def test_alignment_needs_the_line_and_one_process(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="align_weight.*needs level_weight"):
        check_config(TrainConfig("d", "o", align_weight=1.0))
    assert alignment_terms(TrainConfig("d", "o", level_weight=1.0), _batch(), []) == []
    import ifqa_loss.train.trainer as trainer
    monkeypatch.setattr(trainer, "_setup_distributed", lambda device: None)
    monkeypatch.setattr(trainer, "_dist_info", lambda: (0, 2))
    with pytest.raises(ValueError, match="align-weight needs a second backward pass.*one process"):
        trainer.train(TrainConfig(str(tmp_path), str(tmp_path / "out"), level_weight=1.0, align_weight=1.0))


def test_severity_level_term_scores_the_real_faces_and_their_degraded_twins():
    cfg = TrainConfig("d", "o", batch_size=4, rank_pairs=3, level_weight=4.0, cross_kinds=["blur", "mixed"],
                      calib_target=0.9, level_floor=0.05)
    batch = _batch()
    (term,) = extra_terms(cfg, batch, torch.Generator().manual_seed(0))
    _, severity = cross_content_images(batch.hq[:3], ["blur", "mixed"], torch.Generator().manual_seed(0),
                                       sweep_scale=True)
    assert (term.name, term.weight, term.images.shape[0]) == ("loss_level", 4.0, 3)
    target = 0.9 - 0.85 * severity
    on_line = torch.logit(target)[:, None, None, None].expand(3, 1, 8, 8)
    clean = torch.full((4, 1, 8, 8), float(torch.logit(torch.tensor(0.9))))
    assert term.loss(on_line, clean).item() == pytest.approx(0.0, abs=1e-5)
    assert term.loss(on_line, -clean).item() > 0.1  # clean faces scored low
    assert term.loss(clean[:3], clean).item() > term.loss(on_line, clean).item()  # degraded scored as clean


def test_zoomed_severity_line_scores_its_own_clean_faces():
    cfg = TrainConfig("d", "o", batch_size=4, rank_pairs=3, level_weight=1.0, level_zoom=1.5,
                      cross_kinds=["blur", "jpeg"])
    batch = _batch()
    (term,) = extra_terms(cfg, batch, torch.Generator().manual_seed(0))
    assert term.images.shape[0] == 6  # 3 zoomed clean faces, then their degraded versions
    assert not torch.equal(term.images[:3], batch.hq[:3])  # zoomed in
    g = torch.Generator().manual_seed(0)
    base = ranking_faces(batch.hq[:3], g, 1.5)
    _, severity = cross_content_images(base, ["blur", "jpeg"], g, sweep_scale=True)
    assert torch.equal(term.images[:3], base)
    on_line = torch.logit(torch.cat([torch.full((3,), 0.9), 0.9 - 0.85 * severity]))[:, None, None, None]
    on_line = on_line.expand(6, 1, 8, 8)
    batch_logits = torch.full((4, 1, 8, 8), -5.0)  # the BCE batch is ignored: the term scores its own clean faces
    assert term.loss(on_line, batch_logits).item() == pytest.approx(0.0, abs=1e-5)
    assert term.loss(-on_line, batch_logits).item() > 0.1


def test_cross_and_calibration_terms_score_the_real_faces_of_the_batch():
    cfg = TrainConfig("d", "o", batch_size=4, rank_pairs=3, cross_rank_weight=5.0, calib_weight=2.0,
                      cross_rank_margin=0.0)  # margin 0: equal degraded scores cost nothing
    batch = _batch()
    cross, calib = extra_terms(cfg, batch, torch.Generator().manual_seed(0))
    assert (cross.name, cross.images.shape[0], calib.name, calib.images.shape[0]) == ("loss_cross_rank", 3,
                                                                                      "loss_calib", 0)
    high, low = torch.full((4, 1, 8, 8), 10.0), torch.full((3, 1, 8, 8), -10.0)
    assert cross.loss(low, high).item() == pytest.approx(0.0, abs=1e-6)  # clean faces above the degraded ones
    assert cross.loss(high[:3], low.repeat(2, 1, 1, 1)[:4]).item() > 0  # reversed: every cross pair is short
    assert calib.loss(low[:0], high).item() == 0 and calib.loss(low[:0], -high).item() > 0


def test_robust_rank_needs_the_severity_pairs():
    with pytest.raises(ValueError, match="needs rank_weight"):
        check_config(TrainConfig("d", "o", robust_rank_weight=1.0))
    with pytest.raises(ValueError, match="cross_kinds"):
        check_config(TrainConfig("d", "o", cross_rank_weight=1.0, cross_kinds=["sharp"]))


@pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data/faces256 is absent (training data)")
def test_train_with_every_new_term_logs_them(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", str(FACES / "images"), "--landmarks", str(FACES / "landmarks68.npz"),
                 "--val-list", str(FACES / "val.txt"), "--out", str(out), "--steps", "1", "--batch-size", "2",
                 "--limit", "4", "--val-every", "1", "--val-images", "2", "--raw-fake-frac", "1", "--init",
                 "ifqa-lite", "--rank-weight", "5", "--rank-pairs", "2", "--robust-weight", "1",
                 "--robust-rank-weight", "5", "--robust-steps", "2", "--cross-rank-weight", "3", "--calib-weight", "2",
                 "--level-weight", "4", "--robust-level-weight", "6", "--align-weight", "2", "--align-faces", "1",
                 "--no-progress"]) == 0
    card = json.loads((out / "ifqa-lite.json").read_text())
    assert {"loss_rank", "loss_cross_rank", "loss_calib", "loss_robust", "loss_robust_rank", "loss_level",
            "loss_robust_level", "loss_align"} <= set(card["validation"])
    assert card["training"]["robust_steps"] == 2 and card["training"]["cross_kinds"] == ["blur", "noise", "jpeg",
                                                                                          "downup"]
