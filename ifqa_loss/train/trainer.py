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
asks the map of a mirrored real face to be the mirrored map. ``ema_decay`` exports a moving average of the
discriminator's weights instead of the last ones.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..models import LITE_BOTTLENECK, LITE_WIDTHS, build_model
from ..regions import region_masks
from ..weights import load_into, load_model, save_official, save_weights
from .augment import random_boxes_mask, random_color, random_zoom
from .data import FaceSet, read_name_list
from .ranking import check_kinds, ranking_faces, ranking_hinge, region_pairs, severity_pairs
from .degradations import DegradationConfig, Degrader
from .generator import RestorationUNet

LICENCE_NOTE = ("Trained on SCUT-FBP5500 faces (non-commercial research licence): these weights inherit the "
                "data's NON-COMMERCIAL terms. Research and evaluation use only.")


@dataclass
class TrainConfig:
    data: str
    out: str
    landmarks: str | None = None
    val_list: str | None = None
    train_list: str | None = None
    arch: str = "lite"
    steps: int = 2000
    batch_size: int = 8
    lr_d: float = 2e-4
    lr_g: float = 2e-4
    adv_weight: float = 0.02
    primary_weight: float = 2.0
    fprs_prob: float = 0.5
    cutmix_prob: float = 0.25
    augment: bool = True
    max_zoom: float = 1.2  # augmentation: real faces zoomed in by 1..max_zoom (covers tighter framings)
    raw_fake_frac: float = 0.5
    val_every: int = 250
    val_images: int = 64
    ckpt_every: int = 100
    seed: int = 0
    device: str = "cpu"
    limit: int | None = None
    resume: bool = True
    export_official: bool = False
    generator_width: int = 16
    widths: list[int] | None = None
    num_bottleneck: int | None = None
    degradation: dict = field(default_factory=dict)
    init: str | None = None  # start the discriminator from these weights (path or registered name)
    rank_weight: float = 0.0  # severity-ranking hinge (see ranking.py); 0 = off, the paper's recipe
    rank_margin: float = 0.15  # score margin per unit of severity gap
    rank_kinds: list[str] = field(default_factory=lambda: ["jpeg", "jpeg", "jpeg", "blur", "noise", "downup"])
    region_rank_weight: float = 0.0  # primary-region-ranking hinge; 0 = off
    region_rank_margin: float = 0.03
    rank_pairs: int = 8  # faces of each batch that also form ranking pairs
    rank_zoom: float = 1.0  # ranking faces zoomed in by a further 1..rank_zoom (1 = no extra zoom)
    rank_soften: float = 0.0  # share of ranking faces blurred (sigma 0.4-1.2) before both twins are degraded
    flip_weight: float = 0.0  # mirror consistency: map(flip(x)) should equal flip(map(x)) on real faces; 0 = off
    flip_pairs: int = 4  # real faces of each batch also scored mirrored when flip_weight > 0
    ema_decay: float = 0.0  # export (and validate) an exponential moving average of the weights; 0 = off


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _setup_distributed(device: str) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")


def _check_options(cfg: TrainConfig) -> None:
    for name in ("rank_weight", "rank_margin", "region_rank_weight", "region_rank_margin", "flip_weight"):
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    for name in ("rank_pairs", "flip_pairs"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("max_zoom", "rank_zoom"):
        if not 1.0 <= getattr(cfg, name) <= 4.0:
            raise ValueError(f"{name} must be in [1, 4], got {getattr(cfg, name)}")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
    if not 0.0 <= cfg.rank_soften <= 1.0:
        raise ValueError(f"rank_soften must be in [0, 1], got {cfg.rank_soften}")
    if cfg.rank_weight > 0:
        try:
            check_kinds(cfg.rank_kinds)
        except ValueError as e:
            raise ValueError(f"rank_kinds: {e}") from None


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


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Run (or resume) training; returns the model card written next to the weights.

    ``progress`` shows a bar with the losses. Either way each validation record goes to stderr as a JSON line.
    """
    _check_options(cfg)
    _setup_distributed(cfg.device)
    rank, world = _dist_info()
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
    d_net = build_model(cfg.arch, **arch_cfg)
    if init_net is not None:
        load_into(d_net, init_net.state_dict(), str(cfg.init), cfg.arch)
    d_net = d_net.to(device)
    use_generator = cfg.raw_fake_frac < 1.0
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

    ckpt_path = out / "checkpoint.pt"
    step, elapsed, history = 0, 0.0, []
    if cfg.resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # RNG states must stay on the CPU
        d_net.load_state_dict(ck["d"])
        g_net.load_state_dict(ck["g"])
        opt_d.load_state_dict(ck["opt_d"])
        opt_g.load_state_dict(ck["opt_g"])
        step, elapsed = int(ck["step"]), float(ck["elapsed"])
        gen.set_state(ck["gen"][rank] if rank < len(ck["gen"]) else ck["gen"][0])
        degrader.gen.set_state(ck["deg"][rank] if rank < len(ck["deg"]) else ck["deg"][0])
        history = json.loads(bytes(ck["history"].tolist()).decode()) if "history" in ck else []
        if ema is not None and "ema" in ck:
            ema.load_state_dict(ck["ema"])

    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.arch}", dynamic_ncols=True)
    t0 = time.perf_counter() - elapsed
    d_net.train()
    g_net.train()
    while step < cfg.steps:
        idx = torch.randint(0, len(train_set), (cfg.batch_size,), generator=gen)
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5
        hq, boxes = train_set.batch(idx, device, flip)
        if cfg.augment:
            hq, boxes = random_zoom(hq, boxes, gen, max_zoom=cfg.max_zoom)
            hq = random_color(hq, gen)
        masks = region_masks(boxes, hq.shape[-1])
        lq = degrader(hq)

        if use_generator:
            restored = g_model(lq)
            raw = (torch.rand(cfg.batch_size, generator=gen) < cfg.raw_fake_frac).to(device)
            fake = torch.where(raw[:, None, None, None], lq, restored.detach())
        else:
            fake = lq
        swap = (torch.rand(cfg.batch_size, generator=gen) < cfg.fprs_prob).to(device)
        cut = (torch.rand(cfg.batch_size, generator=gen) < cfg.cutmix_prob).to(device)
        cut_masks = random_boxes_mask(cfg.batch_size, hq.shape[-1], gen, device)
        imgs, labels, regions = discriminator_batch(hq, fake, masks, swap, cut_masks, cut)
        n_bce, extra = imgs.shape[0], []
        k = min(cfg.rank_pairs, cfg.batch_size)
        if cfg.rank_weight > 0:  # no random draws when off, so other recipes keep their streams
            base = ranking_faces(hq[:k], gen, cfg.rank_zoom, cfg.rank_soften)
            milder, harsher, gap = severity_pairs(base, cfg.rank_kinds, gen)
            extra += [milder, harsher]
        if cfg.region_rank_weight > 0:
            extra += list(region_pairs(hq[:k], lq[:k], masks[:k], gen))
        n_flip = min(cfg.flip_pairs, cfg.batch_size) if cfg.flip_weight > 0 else 0
        if n_flip:  # imgs starts with hq, so logits[:n_flip] are the unmirrored maps
            extra.append(hq[:n_flip].flip(-1))
        logits = d_model(torch.cat([imgs, *extra]) * 2 - 1 if extra else imgs * 2 - 1)
        if n_flip:
            logits, mirrored = logits[:-n_flip], logits[-n_flip:]
            extra.pop()
        weight = 1.0 + cfg.primary_weight * regions
        loss_d = F.binary_cross_entropy_with_logits(logits[:n_bce], labels, weight=weight)
        pair_scores = list(torch.sigmoid(logits[n_bce:]).mean(dim=(1, 2, 3)).split(k)) if extra else []
        rank_losses = {}
        if cfg.rank_weight > 0:
            rank_losses["loss_rank"] = ranking_hinge(pair_scores.pop(0), pair_scores.pop(0), cfg.rank_margin * gap)
        if cfg.region_rank_weight > 0:
            in_primary, elsewhere = pair_scores.pop(0), pair_scores.pop(0)
            rank_losses["loss_region_rank"] = ranking_hinge(elsewhere, in_primary, cfg.region_rank_margin)
        if n_flip:
            rank_losses["loss_flip"] = flip_consistency(logits[:n_flip], mirrored)
        total_d = loss_d + cfg.rank_weight * rank_losses.get("loss_rank", 0.0) \
            + cfg.region_rank_weight * rank_losses.get("loss_region_rank", 0.0) \
            + cfg.flip_weight * rank_losses.get("loss_flip", 0.0)
        opt_d.zero_grad(set_to_none=True)
        total_d.backward()
        opt_d.step()
        if ema is not None:
            ema.update_parameters(d_net)

        losses = {"loss_d": loss_d.item(), **{name: v.item() for name, v in rank_losses.items()}}
        if use_generator:
            d_net.requires_grad_(False)
            adv = F.binary_cross_entropy_with_logits(d_net.forward_logits(restored * 2 - 1), torch.ones_like(masks),
                                                     weight=1.0 + cfg.primary_weight * masks)
            l1 = F.l1_loss(restored, hq)
            loss_g = l1 + cfg.adv_weight * adv
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            d_net.requires_grad_(True)
            losses.update(loss_l1=l1.item(), loss_adv=adv.item())
        step += 1

        if not all(math.isfinite(v) for v in losses.values()):
            raise FloatingPointError(f"training diverged at step {step}: {losses}")
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k[5:]: f"{v:.3f}" for k, v in losses.items()})
        record = None
        if val_set is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            judged = d_model if ema is None else _Logits(ema.module)
            record = {"step": step, **validate(judged, val_set, device, cfg.val_images), **losses}
            history.append(record)
            if rank == 0:  # one JSON line per validation on stderr; stdout keeps only the CLI's final summary
                line = json.dumps(record)
                if bar is not None:
                    bar.write(line, file=sys.stderr)
                else:
                    print(line, file=sys.stderr, flush=True)
        if rank == 0 and (step % cfg.ckpt_every == 0 or step == cfg.steps):
            _save_checkpoint(ckpt_path, d_net, g_net, opt_d, opt_g, step, time.perf_counter() - t0, gen, degrader,
                             history, world, ema)
        elif world > 1 and (step % cfg.ckpt_every == 0 or step == cfg.steps):
            _gather_rng(gen, degrader, world)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    card = {}
    if rank == 0:
        exported = d_net if ema is None else ema.module
        card = _export(cfg, exported, g_net if use_generator else None, arch_cfg, train_set, val_set, step, wall,
                       history)
    if world > 1:
        dist.barrier()
    return card


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


def _save_checkpoint(path: Path, d_net, g_net, opt_d, opt_g, step, elapsed, gen, degrader, history, world,
                     ema=None) -> None:
    gens, degs = _gather_rng(gen, degrader, world)
    ck = {"d": d_net.state_dict(), "g": g_net.state_dict(), "opt_d": opt_d.state_dict(), "opt_g": opt_g.state_dict(),
          "step": step, "elapsed": elapsed, "gen": gens, "deg": degs,
          "history": torch.tensor(list(json.dumps(history).encode()), dtype=torch.uint8)}
    if ema is not None:
        ck["ema"] = ema.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ck, tmp)
    os.replace(tmp, path)


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
        "description": f"IFQA {cfg.arch} discriminator trained with ifqa-loss's recipe (degradations, generator, FPRS).",
    }
    if cfg.export_official:
        if cfg.arch != "cnn":
            raise ValueError("the official {'D': state_dict} format exists only for --arch cnn")
        card["official_file"] = "IFQA_Metric.pth"
        card["official_sha256"] = save_official(d_net, out / "IFQA_Metric.pth")
    (out / f"{name}.json").write_text(json.dumps(card, indent=1))
    return card
