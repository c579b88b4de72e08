"""Robust and cross-content training terms for the discriminator.

A loss model is only as good as what its gradient rewards: pixel perturbations of 1/255 took the first bundled
``ifqa-lite`` from 0.29 to 0.93 on blurred faces (``benchmarks/robustness.py``). Adversarial training answers
that by showing the discriminator the perturbed images *with their labels kept*: a real face perturbed within the
budget to look worse stays real, a degraded face perturbed to look better stays fake, and (with ranking on) a
harsher severity twin pushed up and its milder twin pushed down must still keep their order. The attacks are fast
on purpose (FGSM with a random start, or a few PGD steps) so that a CPU step costs little more than a plain one.

Cross-content ranking: the severity terms of ``ranking.py`` compare one face with itself, which says nothing about
whether a blurred face of one person scores below a milder one of another. :func:`cross_face_hinge` compares images
of *different* faces by their severities, and :func:`calibration_loss` pulls the clean faces of every person to the
same high score. :func:`severity_level_loss` goes further: it asks every image's score to sit on one line of its
severity, the same for every kind and every person, which is what ranking a folder of different faces needs.
:func:`gradient_alignment` asks more of the gradient itself: raising a degraded face's score must mean moving it
towards its clean face.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .degradations import SWEEP_LEVELS, gaussian_blur, sweep_level
from .ranking import SEVERITY_RANGES, degrade_at, severity_value

#: Kinds whose benchmark levels (``SWEEP_LEVELS``) span about the same severities 0.1-0.95 of :data:`SEVERITY_RANGES`,
#: so one severity number is comparable across them ("mixed" too, by the choice of its range).
CROSS_KINDS = ["blur", "noise", "jpeg", "downup"]


def perturb(score_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: torch.Tensor, steps: int,
            direction: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """L-infinity attack on ``score_fn``: a uniform random start in the eps-ball, then ``steps`` sign-gradient
    steps that move each image's score in its ``direction``, projected back onto the ball and clamped to [0, 1].

    One step is FGSM with a random start (step 1.25 eps, the fast adversarial training recipe of Wong et al.
    2020); more steps are PGD with step 2.5 eps / steps (the benchmark's schedule). The network's own gradients
    are not touched: only the input's gradient is taken.

    Args:
        score_fn: (N, 3, H, W) in [0, 1] -> (N,) scores. x: (N, 3, H, W) in [0, 1].
        eps: (N,) budgets in [0, 1] units. direction: (N,) +1 to raise the score, -1 to lower it.
    Returns:
        (N, 3, H, W) in [0, 1], detached, with ``|result - x| <= eps`` per image.
    """
    e = eps.to(x)[:, None, None, None]
    lo, hi = x - e, x + e
    start = (torch.rand(x.shape, generator=gen) * 2 - 1).to(x)
    adv = (x + start * e).clamp(0, 1)
    alpha = (1.25 if steps == 1 else 2.5 / steps) * e
    d = direction.to(x)
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad((d * score_fn(adv)).sum(), adv)
        adv = torch.minimum(torch.maximum(adv.detach() + alpha * grad.sign(), lo), hi).clamp(0, 1)
    return adv.detach()


def draw_eps(n: int, max_255: float, gen: torch.Generator) -> torch.Tensor:
    """(N,) budgets drawn uniformly in [0, ``max_255``] 8-bit levels, in [0, 1] units: mild and strong attacks."""
    return torch.rand(n, generator=gen) * (max_255 / 255)


#: The sweep level (:data:`~ifqa_loss.train.degradations.SWEEP_LEVELS`) that counts as severity 1 on the sweep
#: scale: a little past level 5, where the harshest draws of :data:`SEVERITY_RANGES` end (levels 5.25-6).
SWEEP_SPAN = 6.0


def cross_content_images(hq: torch.Tensor, kinds: list[str], gen: torch.Generator, soften: float = 0.0,
                         sweep_scale: bool = False, random_grid: bool = False):
    """One degraded version of each face: a kind drawn uniformly from ``kinds`` and a severity in [0, 1].

    ``soften`` blurs that share of the faces slightly first (sigma 0.4-1.2), so that a soft clean face is not
    mistaken for severity 0 only because the training faces are sharp. ``random_grid``: as in
    :func:`~ifqa_loss.train.ranking.degrade_at`.

    Returns:
        images (N, 3, H, W) in [0, 1]; severity (N,): the draw on the scale of :data:`SEVERITY_RANGES`, or with
        ``sweep_scale`` where the image falls on the benchmark's levels, ``sweep_level / SWEEP_SPAN`` clamped to
        [0, 1], so that equal numbers mean equally bad across kinds (kinds of ``SWEEP_LEVELS`` only).
    """
    n = hq.shape[0]
    pick = torch.randint(0, len(kinds), (n,), generator=gen)
    u = torch.rand(n, generator=gen)
    if soften > 0:
        soft = (torch.rand(n, generator=gen) < soften).to(hq.device)
        sigma = 0.4 + 0.8 * torch.rand(n, generator=gen)
        hq = torch.where(soft[:, None, None, None], gaussian_blur(hq, sigma.to(hq.device)), hq)
    out = hq.clone()
    severity = u.clone()
    for kind in dict.fromkeys(kinds):
        if kind not in SEVERITY_RANGES:
            raise ValueError(f"unknown degradation kind {kind!r}; expected one of {sorted(SEVERITY_RANGES)}")
        if sweep_scale and kind not in SWEEP_LEVELS:
            raise ValueError(f"kind {kind!r} has no sweep levels; expected some of {sorted(SWEEP_LEVELS)}")
        sel = torch.tensor([kinds[int(i)] == kind for i in pick])
        if sel.any():
            out[sel.to(hq.device)] = degrade_at(hq[sel.to(hq.device)], kind, u[sel], gen, random_grid)
            if sweep_scale:
                severity[sel] = (sweep_level(kind, severity_value(kind, u[sel])) / SWEEP_SPAN).clamp(0, 1)
    return out, severity.to(hq.device)


def cross_face_hinge(scores: torch.Tensor, severity: torch.Tensor, face: torch.Tensor, margin: float,
                     min_gap: float = 0.05) -> torch.Tensor:
    """Mean of ``relu(margin * gap - (score(milder) - score(harsher)))`` over every pair of images of *different*
    faces whose severities differ by more than ``min_gap`` (smaller gaps are noise across kinds).

    Args:
        scores, severity: (M,). face: (M,) integer id of the face each image was made from.
    Returns:
        scalar; 0 when there is no such pair.
    """
    gap = severity[None, :] - severity[:, None]  # [i, j] > 0: image i is the milder one
    pair = (gap > min_gap) & (face[:, None] != face[None, :])
    if not pair.any():
        return scores.sum() * 0
    lead = scores[:, None] - scores[None, :]
    return F.relu(margin * gap - lead)[pair].mean()


def calibration_loss(scores: torch.Tensor, target: float) -> torch.Tensor:
    """Mean squared shortfall of clean faces' scores below ``target``: every person's clean face scores high."""
    return F.relu(target - scores).square().mean()


def severity_level_loss(scores: torch.Tensor, severity: torch.Tensor, top: float, floor: float) -> torch.Tensor:
    """Mean KL divergence between each image score and the target ``top - (top - floor) * severity``.

    The target is one line for every kind and face, so that equal severities score alike whoever is pictured.
    As a Bernoulli KL (binary cross-entropy minus the target's entropy) it is 0 exactly on the line and its
    gradient does not vanish where the sigmoid of the map saturates, as a squared error's would.

    Args:
        scores: (M,) image scores in [0, 1]. severity: (M,) in [0, 1] (0 = clean).
    Returns:
        scalar >= 0.
    """
    target = (top - (top - floor) * severity.to(scores)).clamp(1e-4, 1 - 1e-4)
    s = scores.clamp(1e-6, 1 - 1e-6)
    kl = target * (target.log() - s.log()) + (1 - target) * ((1 - target).log() - (1 - s).log())
    return kl.mean()


def gradient_alignment(score_grad: torch.Tensor, toward: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 - cos(score_grad, toward)`` per image: 0 when raising the score means moving straight towards
    ``toward`` (the clean face minus the degraded one), 2 when it means moving straight away.

    A loss model's input gradient is what a generator trained with it follows. Asking it to point from a
    degraded face to its clean one makes gradient ascent on the score a restoration, not the added
    high-frequency patterns an unconstrained model rewards. Differentiable in ``score_grad`` (take it with
    ``create_graph=True`` to train on it).

    Args:
        score_grad, toward: (N, C, H, W).
    Returns:
        scalar in [0, 2].
    """
    return (1 - F.cosine_similarity(score_grad.flatten(1), toward.flatten(1), dim=1, eps=1e-12)).mean()
