"""IFQA adversarial training: a restoration generator against a per-pixel U-Net discriminator.

Per step: HQ faces (real, label 1) are degraded; the generator restores them; restored faces, plus a share
of raw degraded ones, are the fakes (label 0). Facial primary region swap (FPRS) pastes the eyes/nose/mouth
of a fake into its HQ twin and the reverse, with per-pixel labels following each pixel's source; CutMix does
the same with random rectangles, so every part of the face is judged locally. Real faces get colour and
zoom augmentations before degradation, so identity and framing do not predict the label. The
discriminator's per-pixel BCE puts ``1 + primary_weight`` on primary-region pixels. The generator minimises
L1 plus an adversarial term from the discriminator's map.

With ``raw_fake_frac=1`` every fake is a raw degraded face and the generator is skipped: a discriminator-only
stage, typically started from trained weights with ``init`` (e.g. to add a degradation the model under-ranks).
Optional terms (off by default): severity and region ranking (``ranking.py``), and mirror consistency, which
asks the map of a mirrored real face to be the mirrored map; cross-face ranking, the severity line, calibration
and adversarial copies of the step's faces that keep their labels (``robust.py``). ``ema_decay`` exports a moving
average of the discriminator's weights instead of the last ones.

Each step of :func:`train` is :func:`draw_batch`, :func:`make_fakes`, :func:`discriminator_step` (BCE plus the
:data:`EXTRA_TERMS` that are on) and :func:`generator_step`, then :func:`validation_record` and the checkpoint when
due. The options are declared once, in ``config.py``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..models import LITE_BOTTLENECK, LITE_WIDTHS, build_model
from ..regions import region_masks
from ..weights import load_into, load_model, save_official, save_weights
from .augment import random_boxes_mask, random_color, random_zoom
from .config import TrainConfig, check_config
from .data import FaceSet, read_name_list
from .degradations import DegradationConfig, Degrader
from .generator import RestorationUNet
from .ranking import ranking_faces, ranking_hinge, region_pairs, severity_pairs
from .robust import (calibration_loss, cross_content_images, cross_face_hinge, draw_eps, gradient_alignment,
                     perturb, severity_level_loss)

__all__ = ["LICENCE_NOTE", "TrainConfig", "Batch", "ExtraTerm", "EXTRA_TERMS", "extra_terms", "discriminator_batch",
           "flip_consistency", "robust_terms", "alignment_terms", "draw_batch", "make_fakes", "discriminator_step",
           "generator_step", "validate", "validation_record", "train"]

LICENCE_NOTE = ("Trained on SCUT-FBP5500 faces (non-commercial research licence): these weights inherit the "
                "data's NON-COMMERCIAL terms. Research and evaluation use only.")


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _setup_distributed(device: str) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")


def _arch_config(cfg: TrainConfig) -> dict:
    if cfg.arch == "cnn":
        return {}
    if cfg.arch != "lite":
        raise ValueError(f"--arch must be 'lite' or 'cnn', got {cfg.arch!r}")
    return {"widths": list(cfg.widths or LITE_WIDTHS), "num_bottleneck": cfg.num_bottleneck if cfg.num_bottleneck
            is not None else LITE_BOTTLENECK}


class _Logits(nn.Module):
    """Wraps a discriminator so DDP sees the logits as its forward."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_logits(x)


def discriminator_batch(hq: torch.Tensor, fake: torch.Tensor, masks: torch.Tensor, swap: torch.Tensor,
                        cut_masks: torch.Tensor | None = None, cut: torch.Tensor | None = None):
    """Inputs and per-pixel labels for one discriminator step, FPRS (and optional CutMix) included.

    Args:
        hq, fake: (B, 3, H, W) aligned twins. masks: (B, 1, H, W) primary regions. swap: (B,) bool: FPRS.
        cut_masks: (B, 1, H, W) random rectangles; cut: (B,) bool: which samples also get a CutMix pair.
    Returns:
        images (M, 3, H, W), labels (M, 1, H, W), primary-region masks (M, 1, H, W).
    """
    imgs, labels, regions = [hq, fake], [torch.ones_like(masks), torch.zeros_like(masks)], [masks, masks]
    for sel, mix in ((swap, masks), (cut, cut_masks)):
        if sel is None or not sel.any():
            continue
        m, h, f = mix[sel], hq[sel], fake[sel]
        imgs += [h * (1 - m) + f * m, f * (1 - m) + h * m]  # fake pixels in the HQ face, HQ pixels in the fake
        labels += [1 - m, m]
        regions += [masks[sel], masks[sel]]
    return torch.cat(imgs), torch.cat(labels), torch.cat(regions)


def flip_consistency(logits: torch.Tensor, mirrored_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the quality maps of faces and the re-mirrored maps of their mirror images.

    Args:
        logits: (B, 1, h, w) logits for the faces; mirrored_logits: (B, 1, h, w) logits for the same faces flipped
            left-right.
    Returns:
        scalar: 0 when the maps are exactly mirror-equivariant; both branches get gradients.
    """
    return (torch.sigmoid(logits) - torch.sigmoid(mirrored_logits).flip(-1)).pow(2).mean()


@torch.no_grad()
def validate(d: nn.Module, val: FaceSet, device: torch.device, n: int, seed: int = 1234, batch: int = 16) -> dict:
    """Mean score of held-out HQ faces and of fixed-seed degraded twins, and the AUC separating them."""
    net = (d.module if hasattr(d, "module") else d).net
    was_training = net.training
    net.eval()
    degrader = Degrader(seed=seed)
    hq_scores, lq_scores = [], []
    for start in range(0, min(n, len(val)), batch):
        idx = torch.arange(start, min(start + batch, n, len(val)))
        hq, _ = val.batch(idx, device)
        lq = degrader(hq)
        hq_scores.append(net(hq * 2 - 1).mean(dim=(1, 2, 3)).cpu())
        lq_scores.append(net(lq * 2 - 1).mean(dim=(1, 2, 3)).cpu())
    net.train(was_training)
    hq_s, lq_s = torch.cat(hq_scores), torch.cat(lq_scores)
    auc = (hq_s[:, None] > lq_s[None, :]).float().mean() + 0.5 * (hq_s[:, None] == lq_s[None, :]).float().mean()
    return {"val_hq_score": float(hq_s.mean()), "val_lq_score": float(lq_s.mean()), "val_auc": float(auc),
            "val_images": int(hq_s.numel())}


@dataclass
class Batch:
    """One step's real faces, their primary-region masks and their degraded twins; all (B, C, H, W) in [0, 1]."""

    hq: torch.Tensor
    masks: torch.Tensor
    lq: torch.Tensor


@dataclass
class ExtraTerm:
    """One extra discriminator loss, weighted into the step's total and logged under ``name``.

    Its ``images`` (in [0, 1]) are scored in the same forward pass as the BCE batch; ``loss`` gets their logits and
    the BCE batch's logits (whose first rows are the step's real faces) and returns a scalar.
    """

    name: str
    weight: float
    images: torch.Tensor
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    gap: torch.Tensor | None = None  # severity pairs only: the images are (milder, harsher), gap (k,) between them
    line: torch.Tensor | None = None  # severity line only: (M,) severities of its pool, the k clean faces first


def _random_grid(cfg: TrainConfig) -> bool:
    """Whether the extra terms' JPEG blocks sit at random offsets too (``--degradation jpeg_grid=random``)."""
    return DegradationConfig(**cfg.degradation).jpeg_grid == "random"


def _image_scores(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits).mean(dim=(1, 2, 3))


def severity_ranking_term(cfg: TrainConfig, batch: Batch, gen: torch.Generator) -> ExtraTerm:
    """The harsher twin of a severity pair must score lower by ``rank_margin`` per unit of severity gap."""
    k = min(cfg.rank_pairs, cfg.batch_size)
    base = ranking_faces(batch.hq[:k], gen, cfg.rank_zoom, cfg.rank_soften)
    milder, harsher, gap = severity_pairs(base, cfg.rank_kinds, gen, random_grid=_random_grid(cfg))

    def loss(logits: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        s_milder, s_harsher = _image_scores(logits).split(k)
        return ranking_hinge(s_milder, s_harsher, cfg.rank_margin * gap)

    return ExtraTerm("loss_rank", cfg.rank_weight, torch.cat([milder, harsher]), loss, gap)


def region_ranking_term(cfg: TrainConfig, batch: Batch, gen: torch.Generator) -> ExtraTerm:
    """Damage pasted into the primary regions must score lower than the same damage elsewhere."""
    k = min(cfg.rank_pairs, cfg.batch_size)
    in_primary, elsewhere = region_pairs(batch.hq[:k], batch.lq[:k], batch.masks[:k], gen)

    def loss(logits: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        s_primary, s_elsewhere = _image_scores(logits).split(k)
        return ranking_hinge(s_elsewhere, s_primary, cfg.region_rank_margin)

    return ExtraTerm("loss_region_rank", cfg.region_rank_weight, torch.cat([in_primary, elsewhere]), loss)


def mirror_term(cfg: TrainConfig, batch: Batch, gen: torch.Generator) -> ExtraTerm:
    """The map of a mirrored real face must be the mirrored map (:func:`flip_consistency`); draws nothing."""
    n = min(cfg.flip_pairs, cfg.batch_size)

    def loss(logits: torch.Tensor, batch_logits: torch.Tensor) -> torch.Tensor:
        return flip_consistency(batch_logits[:n], logits)  # the BCE batch starts with the real faces

    return ExtraTerm("loss_flip", cfg.flip_weight, batch.hq[:n].flip(-1), loss)


def cross_content_term(cfg: TrainConfig, batch: Batch, gen: torch.Generator) -> ExtraTerm:
    """Across *different* faces, the milder-degraded image must score higher by ``cross_rank_margin`` per unit of
    severity gap, whoever the faces are. The pool is the first ``rank_pairs`` real faces (severity 0, scored in the
    BCE batch already) and one degraded version of each (random kind of ``cross_kinds``, random severity)."""
    k = min(cfg.rank_pairs, cfg.batch_size)
    degraded, severity = cross_content_images(batch.hq[:k], cfg.cross_kinds, gen, random_grid=_random_grid(cfg))
    face = torch.arange(k, device=severity.device).repeat(2)
    pool_severity = torch.cat([torch.zeros_like(severity), severity])

    def loss(logits: torch.Tensor, batch_logits: torch.Tensor) -> torch.Tensor:
        pool = torch.cat([_image_scores(batch_logits[:k]), _image_scores(logits)])  # the BCE batch starts with reals
        return cross_face_hinge(pool, pool_severity, face, cfg.cross_rank_margin)

    return ExtraTerm("loss_cross_rank", cfg.cross_rank_weight, degraded, loss)


def severity_level_term(cfg: TrainConfig, batch: Batch, gen: torch.Generator) -> ExtraTerm:
    """The first ``rank_pairs`` real faces (severity 0) and one degraded version of each (its own draw of kind and
    severity) must score on the line from ``calib_target`` to ``level_floor`` (:func:`severity_level_loss`),
    severity measured on the benchmark's levels (``sweep_scale``). With ``level_zoom`` > 1 both are zoomed in by
    1..``level_zoom`` first and the zoomed clean faces are scored too; otherwise the clean faces are the BCE
    batch's own, scored there already."""
    k = min(cfg.rank_pairs, cfg.batch_size)
    zoomed = cfg.level_zoom > 1
    base = ranking_faces(batch.hq[:k], gen, cfg.level_zoom) if zoomed else batch.hq[:k]
    degraded, severity = cross_content_images(base, cfg.cross_kinds, gen, sweep_scale=True,
                                              random_grid=_random_grid(cfg))
    pool_severity = torch.cat([torch.zeros_like(severity), severity])

    def loss(logits: torch.Tensor, batch_logits: torch.Tensor) -> torch.Tensor:
        clean = logits[:k] if zoomed else batch_logits[:k]  # the BCE batch starts with the real faces
        pool = torch.cat([_image_scores(clean), _image_scores(logits[-k:])])
        return severity_level_loss(pool, pool_severity, cfg.calib_target, cfg.level_floor)

    return ExtraTerm("loss_level", cfg.level_weight, torch.cat([base, degraded]) if zoomed else degraded, loss,
                     line=pool_severity)


def calibration_term(cfg: TrainConfig, batch: Batch, gen: torch.Generator) -> ExtraTerm:
    """Every real face of the batch must score at least ``calib_target``; scores the BCE batch only, draws nothing."""
    n = cfg.batch_size

    def loss(_: torch.Tensor, batch_logits: torch.Tensor) -> torch.Tensor:
        return calibration_loss(_image_scores(batch_logits[:n]), cfg.calib_target)

    return ExtraTerm("loss_calib", cfg.calib_weight, batch.hq[:0], loss)


#: The extra terms: (config field holding the weight, builder), in the order they draw from the generator and
#: are logged. A term whose weight is 0 is not built, so it draws nothing and other recipes keep their streams.
EXTRA_TERMS: tuple[tuple[str, Callable[[TrainConfig, Batch, torch.Generator], ExtraTerm]], ...] = (
    ("rank_weight", severity_ranking_term),
    ("region_rank_weight", region_ranking_term),
    ("flip_weight", mirror_term),
    ("cross_rank_weight", cross_content_term),
    ("level_weight", severity_level_term),
    ("calib_weight", calibration_term),
)


def extra_terms(cfg: TrainConfig, batch: Batch, gen: torch.Generator) -> list[ExtraTerm]:
    return [build(cfg, batch, gen) for weight, build in EXTRA_TERMS if getattr(cfg, weight) > 0]


def _line_pool(terms: list[ExtraTerm], batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The severity line's pool (``loss_level``, in ``terms``): its clean faces, their degraded twins and the
    twins' severities; None without the line. Without level zoom the clean faces are the BCE batch's."""
    line = next((t for t in terms if t.line is not None), None)
    if line is None:
        return None
    m = line.line.shape[0] // 2  # severities of m clean faces, then of their m degraded twins
    clean = line.images[:m] if line.images.shape[0] == 2 * m else batch.hq[:m]
    return clean, line.images[-m:], line.line[m:]


def robust_terms(cfg: TrainConfig, d_net: nn.Module, batch: Batch, fake: torch.Tensor, terms: list[ExtraTerm],
                 gen: torch.Generator) -> list[ExtraTerm]:
    """Adversarial copies that keep their labels, attacked against the current weights (:func:`robust.perturb`).

    ``loss_robust``: the first ``robust_faces`` real faces attacked to score lower, and as many fakes attacked to
    score higher, under the per-pixel BCE with their own labels. ``loss_robust_rank``: the severity twins of
    ``loss_rank`` (in ``terms``), the harsher attacked up and the milder down, under the same hinge.
    ``loss_robust_level``: the severity line's degraded images (``loss_level``) attacked up, each still asked to
    score on its point of the line. Its clean faces are not attacked: a perturbation of a few levels on a clean
    face is itself a mild degradation (level 1 of the noise sweep is sigma 3), which the line must see. One
    attack covers them all, so the network runs once per attack step. Off (empty, nothing drawn) while their
    weights are 0.
    """
    if cfg.robust_weight <= 0 and cfg.robust_rank_weight <= 0 and cfg.robust_level_weight <= 0:
        return []
    n = min(cfg.robust_faces, cfg.batch_size) if cfg.robust_weight > 0 else 0
    rank = next((t for t in terms if t.gap is not None), None) if cfg.robust_rank_weight > 0 else None
    k = 0 if rank is None else rank.gap.shape[0]
    line = _line_pool(terms, batch) if cfg.robust_level_weight > 0 else None
    m = 0 if line is None else line[1].shape[0]
    images = torch.cat([batch.hq[:n], fake[:n], *([] if rank is None else [rank.images]),
                        *([] if line is None else [line[1]])])
    # real and milder down; fake, harsher and degraded up
    direction = torch.cat([-torch.ones(n), torch.ones(n), -torch.ones(k), torch.ones(k), torch.ones(m)])

    def score(x: torch.Tensor) -> torch.Tensor:
        return _image_scores(d_net.forward_logits(x * 2 - 1))

    d_net.requires_grad_(False)  # input gradients only: the attack must not cost weight gradients
    try:
        adv = perturb(score, images, draw_eps(images.shape[0], cfg.robust_eps, gen), cfg.robust_steps, direction,
                      gen)
    finally:
        d_net.requires_grad_(True)
    out = []
    if n:
        labels = torch.cat([torch.ones_like(batch.masks[:n]), torch.zeros_like(batch.masks[:n])])
        weight = 1.0 + cfg.primary_weight * torch.cat([batch.masks[:n], batch.masks[:n]])

        def bce(logits: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(logits, labels, weight=weight)

        out.append(ExtraTerm("loss_robust", cfg.robust_weight, adv[:2 * n], bce))
    if rank is not None:
        gap = rank.gap

        def hinge(logits: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            s_milder, s_harsher = _image_scores(logits).split(k)
            return ranking_hinge(s_milder, s_harsher, cfg.rank_margin * gap)

        out.append(ExtraTerm("loss_robust_rank", cfg.robust_rank_weight, adv[2 * n:2 * n + 2 * k], hinge))
    if line is not None:
        severity = line[2]

        def on_line(logits: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            return severity_level_loss(_image_scores(logits), severity, cfg.calib_target, cfg.level_floor)

        out.append(ExtraTerm("loss_robust_level", cfg.robust_level_weight, adv[2 * n + 2 * k:], on_line))
    return out


def alignment_terms(cfg: TrainConfig, batch: Batch, terms: list[ExtraTerm]) -> list[ExtraTerm]:
    """``loss_align``: the first ``align_faces`` degraded images of the severity line (``loss_level``, in
    ``terms``), whose scores' input gradients must point towards their clean faces
    (:func:`robust.gradient_alignment`). The images enter the step's forward pass as leaves that require grad, so
    the loss takes their gradient with ``create_graph=True`` and the step's backward trains on it. Off (empty)
    while its weight is 0; draws nothing."""
    line = _line_pool(terms, batch) if cfg.align_weight > 0 else None
    if line is None:
        return []
    clean, degraded, _ = line
    a = min(cfg.align_faces, degraded.shape[0])
    images = degraded[:a].detach().clone().requires_grad_(True)
    toward = (clean[:a] - images).detach()

    def loss(logits: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        (grad,) = torch.autograd.grad(_image_scores(logits).sum(), images, create_graph=True)
        return gradient_alignment(grad, toward)

    return [ExtraTerm("loss_align", cfg.align_weight, images, loss)]


@dataclass
class _Run:
    """Everything a step changes, and what the checkpoint keeps."""

    d_net: nn.Module
    g_net: nn.Module
    d_model: nn.Module  # d_net's logits, DDP-wrapped under torchrun
    g_model: nn.Module
    opt_d: torch.optim.Optimizer
    opt_g: torch.optim.Optimizer
    ema: AveragedModel | None
    gen: torch.Generator
    degrader: Degrader
    step: int = 0
    elapsed: float = 0.0
    history: list = field(default_factory=list)


def draw_batch(cfg: TrainConfig, train_set: FaceSet, run: _Run, device: torch.device) -> Batch:
    """Sample, mirror at random, augment (colour, zoom) and degrade one batch of real faces."""
    idx = torch.randint(0, len(train_set), (cfg.batch_size,), generator=run.gen)
    flip = torch.rand(cfg.batch_size, generator=run.gen) < 0.5
    hq, boxes = train_set.batch(idx, device, flip)
    if cfg.augment:
        hq, boxes = random_zoom(hq, boxes, run.gen, max_zoom=cfg.max_zoom)
        hq = random_color(hq, run.gen)
    masks = region_masks(boxes, hq.shape[-1])
    return Batch(hq, masks, run.degrader(hq))


def uses_generator(cfg: TrainConfig) -> bool:
    """False for a discriminator-only stage (``raw_fake_frac`` 1): every fake is a raw degraded face."""
    return cfg.raw_fake_frac < 1.0


def make_fakes(cfg: TrainConfig, run: _Run, batch: Batch, device: torch.device):
    """The fakes (restored faces, a ``raw_fake_frac`` share left raw) and the restorations (None: no generator)."""
    if not uses_generator(cfg):
        return batch.lq, None
    restored = run.g_model(batch.lq)
    raw = (torch.rand(cfg.batch_size, generator=run.gen) < cfg.raw_fake_frac).to(device)
    return torch.where(raw[:, None, None, None], batch.lq, restored.detach()), restored


def discriminator_step(cfg: TrainConfig, run: _Run, batch: Batch, fake: torch.Tensor,
                       device: torch.device) -> dict[str, float]:
    """Per-pixel BCE on real, fake, FPRS and CutMix faces, plus the extra terms; one optimiser step."""
    swap = (torch.rand(cfg.batch_size, generator=run.gen) < cfg.fprs_prob).to(device)
    cut = (torch.rand(cfg.batch_size, generator=run.gen) < cfg.cutmix_prob).to(device)
    cut_masks = random_boxes_mask(cfg.batch_size, batch.hq.shape[-1], run.gen, device)
    imgs, labels, regions = discriminator_batch(batch.hq, fake, batch.masks, swap, cut_masks, cut)
    terms = extra_terms(cfg, batch, run.gen)
    terms += robust_terms(cfg, run.d_net, batch, fake, terms, run.gen) + alignment_terms(cfg, batch, terms)
    # one forward pass for all images: the batch shape, and so the numbers, stay those of earlier runs
    logits = run.d_model(torch.cat([imgs, *(t.images for t in terms)]) * 2 - 1 if terms else imgs * 2 - 1)
    n_bce = imgs.shape[0]
    batch_logits = logits[:n_bce]
    loss_d = F.binary_cross_entropy_with_logits(batch_logits, labels, weight=1.0 + cfg.primary_weight * regions)
    values, start = {}, n_bce
    for t in terms:
        values[t.name] = t.loss(logits[start:start + t.images.shape[0]], batch_logits)
        start += t.images.shape[0]
    total = loss_d
    for t in terms:
        total = total + t.weight * values[t.name]
    run.opt_d.zero_grad(set_to_none=True)
    total.backward()
    run.opt_d.step()
    if run.ema is not None:
        run.ema.update_parameters(run.d_net)
    return {"loss_d": loss_d.item(), **{name: v.item() for name, v in values.items()}}


def generator_step(cfg: TrainConfig, run: _Run, batch: Batch, restored: torch.Tensor) -> dict[str, float]:
    """L1 to the real face plus the adversarial term from the (frozen) discriminator's map; one optimiser step."""
    run.d_net.requires_grad_(False)
    adv = F.binary_cross_entropy_with_logits(run.d_net.forward_logits(restored * 2 - 1), torch.ones_like(batch.masks),
                                             weight=1.0 + cfg.primary_weight * batch.masks)
    l1 = F.l1_loss(restored, batch.hq)
    loss_g = l1 + cfg.adv_weight * adv
    run.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    run.opt_g.step()
    run.d_net.requires_grad_(True)
    return {"loss_l1": l1.item(), "loss_adv": adv.item()}


def validation_record(run: _Run, val_set: FaceSet, cfg: TrainConfig, device: torch.device,
                      losses: dict[str, float]) -> dict:
    """The history entry of this step: validation of the exported weights (the average with EMA) and the losses."""
    judged = run.d_model if run.ema is None else _Logits(run.ema.module)
    return {"step": run.step, **validate(judged, val_set, device, cfg.val_images), **losses}


def _log_record(record: dict, bar) -> None:
    line = json.dumps(record)  # one JSON line per validation on stderr; stdout keeps only the CLI's final summary
    if bar is not None:
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Run (or resume) training; returns the model card written next to the weights.

    ``progress`` shows a bar with the losses. Either way each validation record goes to stderr as a JSON line.
    """
    check_config(cfg)
    _setup_distributed(cfg.device)
    rank, world = _dist_info()
    if world > 1 and cfg.align_weight > 0:  # DistributedDataParallel does not support double backward
        raise ValueError("--align-weight needs a second backward pass, which multi-process training does not "
                         "support: run it in one process")
    device = torch.device(cfg.device if not cfg.device.startswith("cuda") or world == 1 else f"cuda:{rank}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    init_net = None
    if cfg.init is not None:  # before the data: a bad file fails at once
        init_net = load_model(cfg.arch, cfg.init).model
        if cfg.arch == "lite" and cfg.widths is None and cfg.num_bottleneck is None:
            cfg.widths, cfg.num_bottleneck = list(init_net.widths), init_net.num_bottleneck
    held_out = read_name_list(cfg.val_list)
    train_set = FaceSet(cfg.data, cfg.landmarks, include=read_name_list(cfg.train_list) if cfg.train_list else None,
                        exclude=held_out, limit=cfg.limit)
    val_set = FaceSet(cfg.data, cfg.landmarks, include=held_out, limit=cfg.val_images) if held_out else None

    arch_cfg = _arch_config(cfg)
    run = _build_run(cfg, arch_cfg, init_net, device, rank, world)
    ckpt_path = out / "checkpoint.pt"
    if cfg.resume and ckpt_path.is_file():
        _load_checkpoint(ckpt_path, run, rank)

    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=run.step, desc=f"train {cfg.arch}", dynamic_ncols=True)
    t0 = time.perf_counter() - run.elapsed
    run.d_net.train()
    run.g_net.train()
    while run.step < cfg.steps:
        batch = draw_batch(cfg, train_set, run, device)
        fake, restored = make_fakes(cfg, run, batch, device)
        losses = discriminator_step(cfg, run, batch, fake, device)
        if restored is not None:
            losses.update(generator_step(cfg, run, batch, restored))
        run.step += 1

        if not all(math.isfinite(v) for v in losses.values()):
            raise FloatingPointError(f"training diverged at step {run.step}: {losses}")
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k[5:]: f"{v:.3f}" for k, v in losses.items()})
        last = run.step == cfg.steps
        if val_set is not None and (run.step % cfg.val_every == 0 or last):
            record = validation_record(run, val_set, cfg, device, losses)
            run.history.append(record)
            if rank == 0:
                _log_record(record, bar)
        if run.step % cfg.ckpt_every == 0 or last:
            run.elapsed = time.perf_counter() - t0
            _checkpoint(ckpt_path, run, rank, world)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    card = {}
    if rank == 0:
        exported = run.d_net if run.ema is None else run.ema.module
        card = _export(cfg, exported, run.g_net if uses_generator(cfg) else None, arch_cfg, train_set, val_set,
                       run.step, wall, run.history)
    if world > 1:
        dist.barrier()
    return card


def _build_run(cfg: TrainConfig, arch_cfg: dict, init_net: nn.Module | None, device: torch.device, rank: int,
               world: int) -> _Run:
    """Fresh networks, optimisers and random streams (created in this order: the seed fixes all of them)."""
    d_net = build_model(cfg.arch, **arch_cfg)
    if init_net is not None:
        load_into(d_net, init_net.state_dict(), str(cfg.init), cfg.arch)
    d_net = d_net.to(device)
    g_net = RestorationUNet(cfg.generator_width).to(device)
    d_model: nn.Module = _Logits(d_net)
    g_model: nn.Module = g_net
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        d_model = nn.parallel.DistributedDataParallel(d_model, device_ids=ids)
        g_model = nn.parallel.DistributedDataParallel(g_model, device_ids=ids)
    opt_d = torch.optim.Adam(d_net.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
    # the average starts from the current weights at its first update (also when resuming a run without one)
    ema = AveragedModel(d_net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay)) if cfg.ema_decay > 0 else None
    opt_g = torch.optim.Adam(g_net.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    degrader = Degrader(DegradationConfig(**cfg.degradation), seed=cfg.seed * 1000 + rank + 1)
    return _Run(d_net, g_net, d_model, g_model, opt_d, opt_g, ema, gen, degrader)


def _gather_rng(gen: torch.Generator, degrader: Degrader, world: int) -> list[list[torch.Tensor]]:
    states = [gen.get_state(), degrader.gen.get_state()]
    if world == 1:
        return [[states[0]], [states[1]]]
    out = []
    for s in states:
        bucket = [torch.empty_like(s) for _ in range(world)]
        dist.all_gather(bucket, s)
        out.append(bucket)
    return out


def _checkpoint(path: Path, run: _Run, rank: int, world: int) -> None:
    """Rank 0 writes the checkpoint with every rank's random streams; the other ranks hand theirs over."""
    streams = _gather_rng(run.gen, run.degrader, world)
    if rank == 0:
        _save_checkpoint(path, run, streams)


def _save_checkpoint(path: Path, run: _Run, streams: list[list[torch.Tensor]]) -> None:
    gens, degs = streams
    ck = {"d": run.d_net.state_dict(), "g": run.g_net.state_dict(), "opt_d": run.opt_d.state_dict(),
          "opt_g": run.opt_g.state_dict(), "step": run.step, "elapsed": run.elapsed, "gen": gens, "deg": degs,
          "history": torch.tensor(list(json.dumps(run.history).encode()), dtype=torch.uint8)}
    if run.ema is not None:
        ck["ema"] = run.ema.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ck, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, run: _Run, rank: int) -> None:
    """Continue ``run`` from ``path``; a rank the checkpoint has no streams for takes rank 0's."""
    ck = torch.load(path, map_location="cpu", weights_only=True)  # RNG states must stay on the CPU
    run.d_net.load_state_dict(ck["d"])
    run.g_net.load_state_dict(ck["g"])
    run.opt_d.load_state_dict(ck["opt_d"])
    run.opt_g.load_state_dict(ck["opt_g"])
    run.step, run.elapsed = int(ck["step"]), float(ck["elapsed"])
    run.gen.set_state(ck["gen"][rank] if rank < len(ck["gen"]) else ck["gen"][0])
    run.degrader.gen.set_state(ck["deg"][rank] if rank < len(ck["deg"]) else ck["deg"][0])
    run.history = json.loads(bytes(ck["history"].tolist()).decode()) if "history" in ck else []
    if run.ema is not None and "ema" in ck:
        run.ema.load_state_dict(ck["ema"])


def _export(cfg: TrainConfig, d_net, g_net, arch_cfg, train_set, val_set, step, wall, history) -> dict:
    out = Path(cfg.out)
    name = f"ifqa-{cfg.arch}"
    d_net.eval()
    weights_path = out / f"{name}.safetensors"
    sha = save_weights(d_net, weights_path, cfg.arch, arch_cfg, {"ifqa.licence": LICENCE_NOTE, "ifqa.steps": str(step)})
    g_sha = None if g_net is None else save_weights(g_net, out / "generator.safetensors", "generator",
                                                    {"width": cfg.generator_width})
    card = {
        "name": name, "file": weights_path.name, "sha256": sha, "backbone": cfg.arch, "config": arch_cfg,
        "parameters": sum(p.numel() for p in d_net.parameters()),
        "data": {"folder": str(cfg.data), "train_images": len(train_set), "with_landmarks": train_set.with_landmarks,
                 "train_list": cfg.train_list, "val_list": cfg.val_list,
                 "val_images": len(val_set) if val_set is not None else 0},
        "training": {k: v for k, v in asdict(cfg).items() if k not in ("data", "out")},
        "steps": step, "wall_time_s": round(wall, 1), "device": cfg.device, "torch": torch.__version__,
        "validation": history[-1] if history else None, "history": history,
        "generator": {"file": "generator.safetensors", "sha256": g_sha} if g_sha else None,
        "licence": LICENCE_NOTE,
        "description": f"IFQA {cfg.arch} discriminator trained with ifqa-loss's recipe (degradations, generator, "
                       "FPRS).",
    }
    if cfg.export_official:
        if cfg.arch != "cnn":
            raise ValueError("the official {'D': state_dict} format exists only for --arch cnn")
        card["official_file"] = "IFQA_Metric.pth"
        card["official_sha256"] = save_official(d_net, out / "IFQA_Metric.pth")
    (out / f"{name}.json").write_text(json.dumps(card, indent=1))
    return card
