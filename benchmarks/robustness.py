"""Robustness benchmark: can pixel-level optimisation fool the quality model that IFQALoss uses?

On the first N held-out faces of faces256 (``val.txt``, 256x256; never hq_eval, which choices were made on),
degraded to three starting points (Gaussian blur sigma 2, JPEG q15, Gaussian noise sigma 15; rounded to 8 bits
as a saved file would be, with :func:`ifqa_loss.train.degradations.degrade`):

  (1) PGD: L-infinity projected gradient ascent on the pixels against the loss model (the :class:`ifqa_loss.IFQA`
      that :class:`ifqa_loss.IFQALoss` wraps), budgets 1/255, 2/255, 4/255 and 8/255; ``--steps`` steps (50) of
      size 2.5 * eps / steps along the sign of the gradient, each followed by the projection onto the eps-ball
      around the start and a clamp to [0, 1]; no random start; the iterate with the highest score is kept per
      face. Reported: the loss model's score before and after (and after rounding to 8 bits), and the score that
      the INDEPENDENT evaluator (examples/weights/ifqa-lite-evaluator.safetensors, trained on the other half of
      the faces, never a loss) gives the same images.
  (2) reverse: the same attack pushing the score of the clean faces down.
  (3) EOT: expectation over transformation against a randomised scorer, :func:`random_transform_ensemble`
      (random flips, shifts, zooms, small rotations and colour gains, averaged): each step averages the gradient
      over ``--eot-draws`` fresh draws; the ensemble's score is measured on a fixed set of draws, the same before
      and after. Shows that a random defence is measured, not taken on trust.
  (4) Adam: unconstrained optimisation of the pixels with IFQALoss (lr 2e-3, ``--adam-steps`` 100 steps, clamp to
      [0, 1] after each) from the blurred and JPEG faces; every ``--track-every`` (25) steps: the loss model's
      score, the evaluator's, PSNR and SSIM to the HQ faces (SSIM: torchmetrics'
      ``structural_similarity_index_measure``) and the variance of the Laplacian (quality.py's).
  (5) where the gradient points: per start, the cosine between the input gradient of the loss model's score and
      the HQ face minus the start (+1: gradient ascent on the score restores the face; about 0: it ignores that
      way). No target: a diagnostic of what (4) will do.

All scores are :meth:`ifqa_loss.IFQA.score_images` of the float images (what a loss sees) unless marked 8-bit.
Writes JSON (no images) and one picture of a single face (HQ / start / PGD 4/255 / Adam, and the amplified
changes) to ``--picture`` (default benchmarks/results/robustness_example.png, git-ignored: faces256 is research
data and must not be committed).

``--quick`` screens a candidate in a few minutes: blur and JPEG starts only, budgets 1/255 and 4/255, no reverse
or EOT attack, no picture, and by default fewer faces (6) and PGD steps (20) and its own output file. A quick run
is for choosing what to run in full: acceptance figures come from the full 50-step run.

Usage: python benchmarks/robustness.py [--n 8] [--steps 50] [--weights ifqa-lite] [--out FILE] [--quick]
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from quality import laplacian_variance
from torchmetrics.functional.image import structural_similarity_index_measure

from common import REPO, RESULTS, SHARED, machine, print_table, require, write_json
from ifqa_loss import IFQA, IFQALoss
from ifqa_loss.io import load_folder, to_float, to_uint8
from ifqa_loss.train.degradations import degrade

SIZE = 256
STARTS = {"blur": 2.0, "jpeg": 15, "noise": 15.0}  # kind -> level (blur sigma px, JPEG quality, noise sigma /255)
EPS_255 = [1, 2, 4, 8]  # L-infinity budgets in 8-bit levels
STEP_FACTOR = 2.5  # PGD step size = STEP_FACTOR * eps / steps
EOT_EPS_255 = [1, 4]
EOT_STARTS = ["blur", "jpeg"]
ADAM_STARTS = ["blur", "jpeg"]
EVALUATOR = REPO / "examples" / "weights" / "ifqa-lite-evaluator.safetensors"
PICTURE = RESULTS / "robustness_example.png"
# acceptance of issue 30 (blur and JPEG starting points)
TARGETS = {"pgd_rise_1/255": 0.10, "pgd_rise_4/255": 0.25}
QUICK = {"n": 6, "steps": 20, "starts": ["blur", "jpeg"], "eps_255": [1, 4], "out": "/tmp/robustness_quick.json"}


def eps_key(e: int) -> str:
    return f"{e}/255"


# ---------------------------------------------------------------- scorers


def random_transform_ensemble(model: IFQA, draws: int = 4, flip: bool = True, max_shift: float = 0.04,
                              zoom: tuple[float, float] = (0.9, 1.1), max_rotation_deg: float = 5.0,
                              gain: tuple[float, float] = (0.9, 1.1)):
    """A randomised scorer: the mean of ``model``'s score over ``draws`` random transformations of each image.

    Each draw, per image: a left-right flip (probability 1/2), a shift of up to ``max_shift`` of the width, a zoom
    in ``zoom``, a rotation of up to ``max_rotation_deg`` degrees (one affine warp, bilinear, reflection padding)
    and a colour gain per channel in ``gain``. Differentiable in the images.

    Returns ``score(x, generator) -> (N,)`` for (N, 3, H, W) images in [0, 1]; the draws come from ``generator``.
    """
    def score(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        m = n * draws

        def uniform(lo, hi, *shape):
            return lo + (hi - lo) * torch.rand(m, *shape, generator=generator)

        angle = uniform(-max_rotation_deg, max_rotation_deg) * math.pi / 180
        scale = 1 / uniform(*zoom)
        sign = torch.where(torch.rand(m, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(m)
        shift = uniform(-2 * max_shift, 2 * max_shift, 2)  # grid coordinates span 2 per image width
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos * sign, -sin, shift[:, 0]], 1),
                             torch.stack([sin * sign, cos, shift[:, 1]], 1)], 1).to(x)
        xs = x.repeat(draws, 1, 1, 1)  # draw-major: rows k * n .. k * n + n - 1 are draw k
        grid = F.affine_grid(theta, list(xs.shape), align_corners=False)
        warped = F.grid_sample(xs, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        warped = (warped * uniform(*gain, 3, 1, 1).to(x)).clamp(0, 1)
        return model(warped).score.view(draws, n).mean(0)

    return score


def scores(model: IFQA, x: torch.Tensor) -> np.ndarray:
    """``model``'s scores of float images in [0, 1], as ``ifqa score`` computes them (score_images)."""
    return model.score_images(list(x), batch_size=16).score.cpu().numpy()


# ---------------------------------------------------------------- attacks


def pgd(score_fn, x0: torch.Tensor, eps: float, steps: int, direction: float = 1.0, keep_best: bool = True):
    """L-infinity PGD on the pixels: ``steps`` sign-gradient steps of 2.5 * eps / steps that move
    ``score_fn(x) -> (N,)`` in ``direction`` (+1 up, -1 down), each projected onto the eps-ball around ``x0``
    and clamped to [0, 1]. Starts at ``x0``. With ``keep_best`` returns, per image, the iterate (the start
    included) with the best score; otherwise the last one (for a randomised ``score_fn``, whose values are noisy).
    """
    alpha = STEP_FACTOR * eps / steps
    x = x0.clone()
    best, best_val = x0.clone(), torch.full((len(x0),), -math.inf)
    for step in range(steps + 1):
        x.requires_grad_(True)
        s = score_fn(x)
        with torch.no_grad():
            val = direction * s.detach()
            better = val > best_val
            best[better], best_val[better] = x.detach()[better], val[better]
        if step == steps:
            break
        (grad,) = torch.autograd.grad((direction * s).sum(), x)
        with torch.no_grad():
            x = x.detach() + alpha * grad.sign()
            x = torch.minimum(torch.maximum(x, x0 - eps), x0 + eps).clamp(0, 1)
    return best if keep_best else x.detach()


def gradient_cosine(score_fn, x0: torch.Tensor, hq: torch.Tensor) -> np.ndarray:
    """(N,) cosine between the input gradient of each image's score at ``x0`` and ``hq - x0``: +1 when raising
    the score means moving straight towards the HQ face, about 0 when the gradient ignores that direction (in
    196,608 dimensions two unrelated directions are nearly orthogonal)."""
    x = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(score_fn(x).sum(), x)
    return torch.nn.functional.cosine_similarity(g.flatten(1), (hq - x0).flatten(1), dim=1).numpy()


def psnr(x: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    mse = (x - ref).square().mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return (10 * torch.log10(1 / mse)).numpy()


def image_metrics(loss_model: IFQA, evaluator: IFQA, x: torch.Tensor, hq: torch.Tensor) -> dict:
    """Per-image metrics of ``x`` against the HQ faces ``hq``, lists in face order."""
    ssim = structural_similarity_index_measure(x, hq, data_range=1.0, reduction="none")
    return {"loss_model": scores(loss_model, x).tolist(), "evaluator": scores(evaluator, x).tolist(),
            "psnr": psnr(x, hq).tolist(), "ssim": ssim.numpy().tolist(),
            "laplacian_var": laplacian_variance(x).numpy().tolist()}


def adam_run(criterion: IFQALoss, evaluator: IFQA, x0: torch.Tensor, hq: torch.Tensor, steps: int, lr: float,
             track_every: int) -> tuple[list[dict], torch.Tensor]:
    """Adam on the pixels minimising ``criterion`` (1 - score), clamping to [0, 1] after each step."""
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    track = []
    for step in range(steps + 1):
        if step % track_every == 0 or step == steps:
            with torch.no_grad():
                m = image_metrics(criterion.ifqa, evaluator, x.detach(), hq)
            track.append({"step": step, **{k: float(np.mean(v)) for k, v in m.items()}, "per_image": m})
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        criterion(x).backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    return track, x.detach()


# ---------------------------------------------------------------- picture


def save_picture(path: Path, panels: list[tuple[str, torch.Tensor]]) -> None:
    """One row of labelled (3, H, W) float panels as a PNG."""
    from PIL import Image, ImageDraw

    tiles = [to_uint8(p[None])[0].permute(1, 2, 0).numpy() for _, p in panels]
    h, w = tiles[0].shape[:2]
    label_h = 16
    canvas = Image.new("RGB", (w * len(tiles), h + label_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, ((label, _), tile) in enumerate(zip(panels, tiles)):
        canvas.paste(Image.fromarray(tile), (i * w, label_h))
        draw.text((i * w + 4, 2), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    print(f"wrote {path}")


# ---------------------------------------------------------------- main


def summarise(start: np.ndarray, after: np.ndarray, names: list[str]) -> dict:
    return {"mean_start": float(start.mean()), "mean_after": float(after.mean()),
            "change": float((after - start).mean()),
            "per_image": {n: {"start": float(a), "after": float(b)} for n, a, b in zip(names, start, after)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="screening: blur and JPEG starts, 1/255 and 4/255, no reverse/EOT/picture; defaults "
                         f"--n {QUICK['n']} --steps {QUICK['steps']} --out {QUICK['out']}")
    ap.add_argument("--n", type=int, default=None, help="first N names of faces256's val.txt (default 8)")
    ap.add_argument("--steps", type=int, default=None, help="PGD steps (step size 2.5 * eps / steps; default 50)")
    ap.add_argument("--weights", default=None, help="loss model weights, path or name (default: bundled ifqa-lite)")
    ap.add_argument("--evaluator", default=str(EVALUATOR), help="independent IFQA weights, only for judging")
    ap.add_argument("--eot-steps", type=int, default=25, help="PGD steps of the EOT attack")
    ap.add_argument("--eot-draws", type=int, default=4, help="transformations per EOT gradient (K)")
    ap.add_argument("--ensemble-eval-draws", type=int, default=8, help="fixed draws that measure the ensemble")
    ap.add_argument("--adam-steps", type=int, default=100)
    ap.add_argument("--adam-lr", type=float, default=2e-3)
    ap.add_argument("--track-every", type=int, default=25)
    ap.add_argument("--picture", default=str(PICTURE), help="PNG of one face; '' for none")
    ap.add_argument("--out", default=None, help="JSON results (default benchmarks/results/robustness.json)")
    args = ap.parse_args()
    full = {"n": 8, "steps": 50, "out": str(RESULTS / "robustness.json")}
    for key, value in (QUICK if args.quick else full).items():
        if key in full and getattr(args, key) is None:
            setattr(args, key, value)
    starts_run = QUICK["starts"] if args.quick else list(STARTS)
    eps_run = QUICK["eps_255"] if args.quick else EPS_255
    if args.quick:
        args.picture = ""
    if args.n < 1 or args.steps < 1 or args.adam_steps < 1 or args.track_every < 1 or args.eot_steps < 1:
        raise SystemExit("--n, --steps, --eot-steps, --adam-steps and --track-every must be at least 1")
    t0 = time.perf_counter()
    root = require(SHARED / "data" / "faces256", "faces256")
    names = (root / "val.txt").read_text().split()[: args.n]
    names, faces = load_folder(root / "images", size=SIZE, names=names)
    hq = to_float(faces)
    starts = {kind: to_float(to_uint8(degrade(hq, kind, STARTS[kind], seed=0))) for kind in starts_run}
    criterion = IFQALoss(weights=args.weights)
    model = criterion.ifqa
    evaluator = IFQA(weights=args.evaluator)
    print(f"loss model {model.backbone} ({model.weights_source}), evaluator {evaluator.weights_source}; "
          f"{len(names)} val.txt faces at {SIZE} px; {torch.get_num_threads()} threads")

    def loss_score(x):
        return model(x).score

    clean = {"loss_model": scores(model, hq).tolist(), "evaluator": scores(evaluator, hq).tolist()}

    # (1) PGD up from each degraded start, (2) down from the clean faces
    def attack_table(x0: torch.Tensor, direction: float) -> tuple[dict, torch.Tensor]:
        """The attack at every budget; also returns the images attacked at 4/255 (for the picture)."""
        s0, e0 = scores(model, x0), scores(evaluator, x0)
        out = {"start": {"loss_model": float(s0.mean()), "evaluator": float(e0.mean())}, "eps": {}}
        adv4 = None
        for e in eps_run:
            eps = e / 255
            adv = pgd(loss_score, x0, eps, args.steps, direction)
            out["eps"][eps_key(e)] = {
                "eps": eps, "linf": float((adv - x0).abs().max()),
                "loss_model": summarise(s0, scores(model, adv), names),
                "loss_model_8bit": summarise(s0, scores(model, to_float(to_uint8(adv))), names),
                "evaluator": summarise(e0, scores(evaluator, adv), names)}
            if e == 4:
                adv4 = adv
        return out, adv4

    pgd_res, adv4 = {}, {}
    for kind, x0 in starts.items():
        pgd_res[kind], adv4[kind] = attack_table(x0, 1.0)
    reverse = None if args.quick else attack_table(hq, -1.0)[0]
    rows = []
    for kind, res in [*pgd_res.items(), *([] if reverse is None else [("clean (reverse)", reverse)])]:
        for k, r in res["eps"].items():
            rows.append([kind, k, r["loss_model"]["mean_start"], r["loss_model"]["mean_after"],
                         r["loss_model"]["change"], r["loss_model_8bit"]["mean_after"], r["evaluator"]["mean_start"],
                         r["evaluator"]["mean_after"], r["evaluator"]["change"], f"{r['linf'] * 255:.3f}/255"])
    print_table(f"(1, 2) L-inf PGD, {args.steps} steps of 2.5 eps/steps, sign gradient; clean faces: loss model "
                f"{np.mean(clean['loss_model']):.3f}, evaluator {np.mean(clean['evaluator']):.3f}",
                ["start", "eps", "loss start", "loss after", "change", "after 8-bit", "eval start", "eval after",
                 "eval change", "max |delta|"], rows)

    # (3) EOT against the random-transformation ensemble
    ens = random_transform_ensemble(model, draws=args.eot_draws)
    ens_eval = random_transform_ensemble(model, draws=args.ensemble_eval_draws)
    attack_gen = torch.Generator().manual_seed(1)

    def ens_fixed(x):  # the same draws every call: a fixed measurement
        with torch.no_grad():
            return ens_eval(x, torch.Generator().manual_seed(12345)).numpy()

    eot = {}
    for kind in [] if args.quick else EOT_STARTS:
        x0 = starts[kind]
        s0, e0 = ens_fixed(x0), scores(evaluator, x0)
        eot[kind] = {}
        for e in EOT_EPS_255:
            eps = e / 255
            adv = pgd(lambda x: ens(x, attack_gen), x0, eps, args.eot_steps, keep_best=False)
            eot[kind][eps_key(e)] = {"eps": eps, "linf": float((adv - x0).abs().max()),
                                     "ensemble": summarise(s0, ens_fixed(adv), names),
                                     "evaluator": summarise(e0, scores(evaluator, adv), names)}
    if eot:
        print_table(f"(3) EOT PGD against random_transform_ensemble ({args.eot_steps} steps, gradient averaged over "
                f"{args.eot_draws} draws; ensemble measured on {args.ensemble_eval_draws} fixed draws)",
                    ["start", "eps", "ensemble start", "ensemble after", "change", "eval start", "eval after"],
                    [[kind, k, r["ensemble"]["mean_start"], r["ensemble"]["mean_after"], r["ensemble"]["change"],
                      r["evaluator"]["mean_start"], r["evaluator"]["mean_after"]]
                     for kind, res in eot.items() for k, r in res.items()])

    # (4) Adam on the pixels
    adam, adam_last = {}, {}
    for kind in ADAM_STARTS:
        track, adam_last[kind] = adam_run(criterion, evaluator, starts[kind], hq, args.adam_steps, args.adam_lr,
                                          args.track_every)
        first, last = track[0], track[-1]
        adam[kind] = {"track": track, "mean_abs_change": float((adam_last[kind] - starts[kind]).abs().mean()),
                      "change": {k: last[k] - first[k] for k in ("loss_model", "evaluator", "psnr", "ssim",
                                                                 "laplacian_var")}}
    hq_lap = float(laplacian_variance(hq).mean())
    print_table(f"(4) Adam on the pixels (lr {args.adam_lr}, clamp to [0, 1]); HQ faces: Laplacian variance "
                f"{hq_lap:.0f}", ["start", "step", "loss model", "evaluator", "PSNR dB", "SSIM", "Laplacian var"],
                [[kind, t["step"], t["loss_model"], t["evaluator"], t["psnr"], t["ssim"], t["laplacian_var"]]
                 for kind, a in adam.items() for t in a["track"]])

    # (5) where the gradient points
    cosine = {kind: gradient_cosine(loss_score, x0, hq) for kind, x0 in starts.items()}
    print_table("(5) cosine between the input gradient of the loss model's score and HQ minus the start (+1 = "
                "raising the score restores the face; about 0 = it ignores the way back)",
                ["start", "mean", "min", "max"],
                [[kind, float(c.mean()), float(c.min()), float(c.max())] for kind, c in cosine.items()])

    # acceptance (issue 30): blur and JPEG starts
    acc = {}
    for e, target in [(1, TARGETS["pgd_rise_1/255"]), (4, TARGETS["pgd_rise_4/255"])]:
        rise = {k: pgd_res[k]["eps"][eps_key(e)]["loss_model"]["change"] for k in ("blur", "jpeg")}
        acc[f"pgd_rise_{eps_key(e)}"] = {"target": f"<= {target}", **rise,
                                         "met": all(v <= target for v in rise.values())}
    for metric, name in [("psnr", "adam_psnr_change"), ("evaluator", "adam_evaluator_change")]:
        ch = {k: adam[k]["change"][metric] for k in ADAM_STARTS}
        acc[name] = {"target": ">= 0", **ch, "met": all(v >= 0 for v in ch.values())}
    print_table(f"acceptance (issue 30; {args.steps} PGD steps, {args.adam_steps} Adam steps"
                f"{'; QUICK SCREENING, not the acceptance run' if args.quick else ''})",
                ["criterion", "target", "blur", "jpeg", "met"],
                [[k, v["target"], v["blur"], v["jpeg"], v["met"]] for k, v in acc.items()])

    if args.picture:
        i = 0
        d_pgd = adv4["blur"][i] - starts["blur"][i]
        d_adam = adam_last["blur"][i] - starts["blur"][i]
        amp = 0.5 / max(float(d_adam.abs().flatten().quantile(0.99)), 1e-6)  # a few pixels move far more
        save_picture(Path(args.picture), [
            ("HQ", hq[i]), ("blurred (start)", starts["blur"][i]), ("PGD 4/255", adv4["blur"][i]),
            (f"Adam {args.adam_steps} steps", adam_last["blur"][i]),
            ("PGD change x32", (0.5 + d_pgd * (0.5 / (4 / 255))).clamp(0, 1)),
            (f"Adam change x{amp:.0f}", (0.5 + d_adam * amp).clamp(0, 1))])

    write_json(Path(args.out), {
        "model": {"backbone": model.backbone, "weights": model.weights_source},
        "evaluator": {"weights": evaluator.weights_source}, "images": len(names), "names": names, "size": SIZE,
        "data": "faces256 val.txt (held out), first N names", "starts": {k: STARTS[k] for k in starts_run},
        "quick": args.quick,
        "attack": {"norm": "linf", "steps": args.steps, "step_size": "2.5 * eps / steps", "step_factor": STEP_FACTOR,
                   "eps_255": eps_run, "gradient": "sign", "start": "the unperturbed image (no random start)",
                   "projection": "eps-ball around the start, then clamp to [0, 1]",
                   "kept": "per image, the iterate with the best score (start included)"},
        "clean": {k: float(np.mean(v)) for k, v in clean.items()}, "clean_per_image": clean,
        "pgd": pgd_res, "reverse": reverse,
        "eot": {"scorer": "random_transform_ensemble (flip, shift 0.04, zoom 0.9-1.1, rotation 5 deg, gain 0.9-1.1)",
                "steps": args.eot_steps, "draws_per_gradient": args.eot_draws,
                "eval_draws": args.ensemble_eval_draws, "kept": "last iterate", "results": eot},
        "adam": {"lr": args.adam_lr, "steps": args.adam_steps, "track_every": args.track_every, "clamp": [0, 1],
                 "hq_laplacian_var": hq_lap, "results": adam},
        "gradient_cosine": {kind: {"mean": float(c.mean()), "per_image": dict(zip(names, map(float, c)))}
                            for kind, c in cosine.items()},
        "acceptance": acc, "machine": machine(), "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
