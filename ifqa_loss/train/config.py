"""The options of ``ifqa train``, declared once: :class:`TrainConfig`'s fields.

Each field's ``metadata`` carries what the command line needs: the help text (written for the flag), the argument
group, and where the flag differs from the field, its name, a parser for the string it takes, and the value range
that :func:`check_config` enforces. :func:`add_train_arguments` builds the ``ifqa train`` flags from it and
:func:`config_from_args` turns the parsed flags back into a :class:`TrainConfig`. A boolean field that is on by
default becomes ``--no-<name>``; one that is off becomes ``--<name>``.

Options marked ``experimental`` are training knobs that no recorded recipe (the bundled model card's commands)
sets: the recipes ran with their defaults, and other values are untested.
"""
from __future__ import annotations

import argparse
import dataclasses
import textwrap
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable

from .degradations import SWEEP_LEVELS, DegradationConfig
from .ranking import check_kinds
from .robust import CROSS_KINDS

GROUPS = {
    "data": "data and output",
    "recipe": "recipe",
    "terms": "extra discriminator terms (each off while its weight is 0)",
    "run": "validation, checkpoints and running",
}


class ConfigError(ValueError):
    """A command-line value that cannot become a :class:`TrainConfig` (the CLI reports it as a usage error)."""


def option(default: Any = MISSING, *, help: str, group: str, default_factory: Any = MISSING,
           metavar: str | None = None, choices: list[str] | None = None, parse: Callable[[Any], Any] | None = None,
           cli_default: Any = None, append: bool = False, bounds: tuple | None = None, experimental: bool = False,
           cli: bool = True) -> Any:
    """A :class:`TrainConfig` field with its command-line declaration in ``metadata``.

    Args:
        help: what the flag does. group: a key of ``GROUPS``.
        parse: turns the flag's string (a list of strings with ``append``) into the field's value; ``cli_default``
            is then the flag's default as typed on the command line.
        bounds: ``(lo, hi, hi_open)`` checked by :func:`check_config`; ``hi`` None means no upper bound.
        experimental: no recorded recipe sets it; shown in the help. cli: False for fields with no flag.
    """
    if group not in GROUPS:
        raise ValueError(f"unknown option group {group!r}")
    meta = {"help": help, "group": group, "metavar": metavar, "choices": choices, "parse": parse,
            "cli_default": cli_default, "append": append, "bounds": bounds, "experimental": experimental, "cli": cli}
    return field(default=default, default_factory=default_factory, metadata=meta)


#: The values a text field of :class:`DegradationConfig` accepts.
DEGRADATION_CHOICES = {"jpeg_backend": ("auto", "pil", "kornia"), "jpeg_grid": ("fixed", "random")}


def parse_degradation(items: list[str]) -> dict:
    """``["p_jpeg=0.7", "jpeg_quality=30,95"]`` -> typed :class:`DegradationConfig` overrides."""
    known = {f.name: f for f in dataclasses.fields(DegradationConfig)}
    defaults = DegradationConfig()
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise ConfigError(f"--degradation {item!r}: expected KEY=VALUE with KEY one of {', '.join(known)}")
        default = getattr(defaults, key)
        try:
            if isinstance(default, tuple):
                parts = [type(default[0])(v) for v in value.split(",")]
                if len(parts) != 2 or parts[0] > parts[1]:
                    raise ValueError
                out[key] = tuple(parts)
            elif isinstance(default, str):
                if value not in DEGRADATION_CHOICES.get(key, (value,)):
                    raise ConfigError(f"--degradation {item!r}: {key} must be one of "
                                      f"{', '.join(DEGRADATION_CHOICES[key])}")
                out[key] = value
            else:
                out[key] = type(default)(value)
        except ConfigError:
            raise
        except ValueError:
            raise ConfigError(f"--degradation {item!r}: bad value for {key} (default {default!r})") from None
    return out


def parse_kinds(text: str) -> list[str]:
    """``"jpeg, blur"`` -> ``["jpeg", "blur"]`` (empty entries dropped; the kinds are checked when ranking is on)."""
    return [k.strip() for k in text.split(",") if k.strip()]


RANK_KINDS = ["jpeg", "jpeg", "jpeg", "blur", "noise", "downup"]


@dataclass
class TrainConfig:
    """Everything one ``ifqa train`` run needs; the model card records it as ``training``."""

    data: str = option(help="folder of aligned HQ faces", group="data")
    out: str = option(help="output folder (checkpoint, weights, model card)", group="data")
    landmarks: str | None = option(None, help=".npz with names and 68-point landmarks", group="data")
    val_list: str | None = option(None, help="file names held out for validation", group="data")
    train_list: str | None = option(None, group="data",
                                    help="train only on these file names (one per line); the val list stays out")
    arch: str = option("lite", choices=["lite", "cnn"], group="recipe", help="discriminator backbone")
    steps: int = option(2000, group="recipe", help="training steps (a resumed run continues up to this step)")
    batch_size: int = option(8, group="recipe", help="HQ faces per step")
    lr_d: float = option(2e-4, group="recipe", help="discriminator learning rate (Adam, betas 0.5, 0.999)")
    lr_g: float = option(2e-4, group="recipe", help="generator learning rate (Adam, betas 0.5, 0.999)",
                         experimental=True)
    adv_weight: float = option(0.02, group="recipe", experimental=True,
                               help="weight of the generator's adversarial term against its L1 term")
    primary_weight: float = option(2.0, group="recipe", experimental=True,
                                   help="extra BCE weight on primary-region (eyes, nose, mouth) pixels: 1 + W there")
    fprs_prob: float = option(0.5, group="recipe", experimental=True,
                              help="share of faces that also form a facial-primary-region-swap pair")
    cutmix_prob: float = option(0.25, group="recipe", help="share of faces that also form a CutMix pair")
    augment: bool = option(True, group="recipe", experimental=True,
                           help="no colour/zoom augmentation of real faces")
    max_zoom: float = option(1.2, group="recipe", bounds=(1, 4, False), experimental=True,
                             help="augmentation zooms real faces in by 1..Z")
    raw_fake_frac: float = option(0.5, group="recipe", help="share of fakes that are raw degraded faces; "
                                                           "1 = discriminator only, no generator")
    val_every: int = option(250, group="run", help="validate every N steps (and at the last step)")
    val_images: int = option(64, group="run", help="held-out faces scored at each validation")
    ckpt_every: int = option(100, group="run", help="write the checkpoint every N steps (and at the last step)")
    seed: int = option(0, group="run", help="seed of the weights' initialisation and of every random draw")
    device: str = option("cpu", group="run", help="cpu, cuda or cuda:N (under torchrun each rank takes cuda:RANK)")
    limit: int | None = option(None, group="run", help="use only the first N training images (smoke runs)")
    resume: bool = option(True, group="run", help="ignore an existing checkpoint")
    export_official: bool = option(False, group="run",
                                   help="also write IFQA_Metric.pth ({'D': ...}, cnn only)")
    generator_width: int = option(16, group="recipe", cli=False,
                                  help="base width of the restoration generator (no flag: the recipe's value)")
    widths: list[int] | None = option(None, group="recipe", cli=False,
                                      help="lite stage widths; None = the lite default, or those of --init")
    num_bottleneck: int | None = option(None, group="recipe", cli=False,
                                        help="lite bottleneck blocks; None = the lite default, or that of --init")
    degradation: dict = option(default_factory=dict, group="recipe", append=True, parse=parse_degradation,
                               cli_default=[], metavar="KEY=VALUE",
                               help="override a degradation setting, e.g. p_jpeg=0.7 or jpeg_quality=30,95 "
                                    "(repeatable)")
    init: str | None = option(None, group="recipe", metavar="WEIGHTS",
                              help="start the discriminator from these weights (path or registered name)")
    rank_weight: float = option(0.0, group="terms", bounds=(0, None, False),
                                help="weight of the severity-ranking hinge (harsher twin scores lower; 0 = off)")
    rank_margin: float = option(0.15, group="terms", bounds=(0, None, False),
                                help="score margin per unit of severity gap")
    rank_kinds: list[str] = option(default_factory=lambda: list(RANK_KINDS), group="terms", parse=parse_kinds,
                                   cli_default=",".join(RANK_KINDS), experimental=True,
                                   help="comma-separated kinds for severity pairs: jpeg, blur, noise, downup, mixed, "
                                        "sharpen (repeat one to draw it more often)")
    region_rank_weight: float = option(0.0, group="terms", bounds=(0, None, False),
                                       help="weight of the hinge that makes primary-region damage cost more than "
                                            "damage elsewhere")
    region_rank_margin: float = option(0.03, group="terms", bounds=(0, None, False), experimental=True,
                                       help="score margin of the region-ranking hinge")
    rank_pairs: int = option(8, group="terms", bounds=(1, None, False), experimental=True,
                             help="faces per batch that also form ranking pairs")
    rank_zoom: float = option(1.0, group="terms", bounds=(1, 4, False),
                              help="zoom ranking faces in by a further 1..Z (tighter framings; 1 = off)")
    rank_soften: float = option(0.0, group="terms", bounds=(0, 1, False),
                                help="share of ranking faces blurred slightly (sigma 0.4-1.2) before both twins are "
                                     "degraded")
    flip_weight: float = option(0.0, group="terms", bounds=(0, None, False),
                                help="weight of the mirror-consistency term: a face's map and its mirror image's map "
                                     "must agree")
    flip_pairs: int = option(4, group="terms", bounds=(1, None, False),
                             help="real faces per batch also scored mirrored")
    ema_decay: float = option(0.0, group="terms", bounds=(0, 1, True),
                              help="export an exponential moving average of the discriminator's weights (e.g. 0.99; "
                                   "0 = off)")
    robust_weight: float = option(0.0, group="terms", bounds=(0, None, False),
                                  help="weight of the BCE on adversarial copies of the step's faces, labels kept: "
                                       "real faces attacked to score lower stay real, fakes attacked to score "
                                       "higher stay fake (0 = off)")
    robust_eps: float = option(4.0, group="terms", bounds=(0, 64, False),
                               help="largest L-infinity budget of the attacks, in 8-bit levels; each image draws "
                                    "its own in [0, this]")
    robust_steps: int = option(1, group="terms", bounds=(1, 20, False),
                               help="attack steps: 1 = FGSM with a random start (step 1.25 eps), N = PGD with a "
                                    "random start and N steps of 2.5 eps / N")
    robust_faces: int = option(4, group="terms", bounds=(1, None, False),
                               help="real faces, and as many fakes, attacked per step")
    robust_rank_weight: float = option(0.0, group="terms", bounds=(0, None, False),
                                       help="weight of the severity hinge on attacked ranking twins (the harsher "
                                            "pushed up, the milder down, the order kept; needs --rank-weight)")
    robust_level_weight: float = option(0.0, group="terms", bounds=(0, None, False),
                                        help="weight of the severity line on its degraded images attacked to "
                                             "score higher, each kept on its point of the line (needs "
                                             "--level-weight)")
    align_weight: float = option(0.0, group="terms", bounds=(0, None, False),
                                 help="weight of the gradient-alignment term: the input gradient of a degraded "
                                      "severity-line image's score must point towards its clean face, 1 - cosine "
                                      "(needs --level-weight; a second backward pass through those images)")
    align_faces: int = option(4, group="terms", bounds=(1, None, False),
                              help="severity-line images per step under the gradient-alignment term")
    cross_rank_weight: float = option(0.0, group="terms", bounds=(0, None, False),
                                      help="weight of the cross-face severity hinge: of two images of different "
                                           "faces, the milder-degraded one must score higher (0 = off)")
    cross_rank_margin: float = option(0.15, group="terms", bounds=(0, None, False),
                                      help="score margin per unit of severity gap of the cross-face hinge")
    cross_kinds: list[str] = option(default_factory=lambda: list(CROSS_KINDS), group="terms", parse=parse_kinds,
                                    cli_default=",".join(CROSS_KINDS), experimental=True,
                                    help="comma-separated kinds of the cross-face images (one per face; severity "
                                         "is compared across kinds)")
    level_weight: float = option(0.0, group="terms", bounds=(0, None, False),
                                 help="weight of the severity-line term: the clean faces and one degraded version "
                                      "of each (a kind of --cross-kinds, a random severity) must score on one line "
                                      "of the benchmark's levels, from --calib-target when clean to --level-floor "
                                      "at level 6, whatever the kind and the face (0 = off)")
    level_zoom: float = option(1.0, group="terms", bounds=(1, 4, False),
                               help="zoom the severity line's faces in by a further x1..this first, as --rank-zoom "
                                    "does for severity pairs (1 = the BCE batch's real faces as they are)")
    level_floor: float = option(0.05, group="terms", bounds=(0, 1, False),
                                help="score the severity line reaches at level 6 of the benchmark's scale")
    calib_weight: float = option(0.0, group="terms", bounds=(0, None, False),
                                 help="weight of the calibration term: every real face's score is pulled up to "
                                      "--calib-target, whoever it is (0 = off)")
    calib_target: float = option(0.9, group="terms", bounds=(0, 1, False),
                                 help="score the calibration term pulls clean faces up to")


def _flag(f: dataclasses.Field, hints: dict) -> str:
    name = f.name.replace("_", "-")
    return f"--no-{name}" if hints[f.name] is bool and f.default is True else f"--{name}"


def _converter(hint: Any) -> Callable[[str], Any]:
    """``int``, ``float`` or ``str`` from a field's type (``X | None`` included)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) else [hint]
    if len(args) != 1 or args[0] not in (int, float, str):
        raise TypeError(f"no command-line conversion for {hint!r}: give the option a parse function")
    return args[0]


def cli_fields() -> list[dataclasses.Field]:
    """The fields that have an ``ifqa train`` flag, in declaration order."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata["cli"]]


def experimental_flags() -> list[str]:
    """The flags of the options marked experimental, in declaration order."""
    hints = typing.get_type_hints(TrainConfig)
    return [_flag(f, hints) for f in cli_fields() if f.metadata["experimental"]]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per :class:`TrainConfig` field to ``parser``, in argument groups, experimental ones marked."""
    hints = typing.get_type_hints(TrainConfig)
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for f in cli_fields():
        m = f.metadata
        help_text = ("(experimental) " if m["experimental"] else "") + m["help"]
        kwargs: dict[str, Any] = {"dest": f.name}
        if hints[f.name] is bool:
            kwargs["action"] = "store_false" if f.default else "store_true"
        elif f.default is MISSING and f.default_factory is MISSING:
            kwargs.update(required=True, type=_converter(hints[f.name]))
        else:
            if m["parse"] is not None:  # the flag takes text that config_from_args parses
                kwargs["default"] = m["cli_default"]
            else:
                kwargs.update(default=f.default, type=_converter(hints[f.name]))
            if kwargs["default"] not in (None, []):
                help_text += " (default: %(default)s)"
        if m["append"]:
            kwargs["action"] = "append"
        kwargs.update({k: m[k] for k in ("choices", "metavar") if m[k] is not None})
        groups[m["group"]].add_argument(_flag(f, hints), help=help_text, **kwargs)
    # wrapped here without breaking flags at their dashes; show it with argparse.RawDescriptionHelpFormatter
    parser.epilog = textwrap.fill("experimental options (no recorded recipe sets them; the recipes ran with their "
                                  "defaults and other values are untested): " + ", ".join(experimental_flags()),
                                  width=100, break_on_hyphens=False)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``ifqa train`` flags; :class:`ConfigError` for values argparse lets by."""
    if args.steps < 1 or args.batch_size < 1:
        raise ConfigError("--steps and --batch-size must be >= 1")
    values = {}
    for f in cli_fields():
        value = getattr(args, f.name)
        values[f.name] = f.metadata["parse"](value) if f.metadata["parse"] is not None else value
    return TrainConfig(**values)


def check_config(cfg: TrainConfig) -> None:
    """Raise ``ValueError`` naming the field for a value outside its declared range, or an unknown ranking kind."""
    for f in dataclasses.fields(TrainConfig):
        if f.metadata["bounds"] is None:
            continue
        lo, hi, hi_open = f.metadata["bounds"]
        v = getattr(cfg, f.name)
        ok = lo <= v and (hi is None or (v < hi if hi_open else v <= hi))  # False for NaN
        if not ok:
            span = f">= {lo}" if hi is None else f"in [{lo}, {hi}{')' if hi_open else ']'}"
            raise ValueError(f"{f.name} must be {span}, got {v}")
    for weight, kinds in (("rank_weight", "rank_kinds"), ("cross_rank_weight", "cross_kinds"),
                          ("level_weight", "cross_kinds")):
        if getattr(cfg, weight) > 0:
            try:
                check_kinds(getattr(cfg, kinds))
            except ValueError as e:
                raise ValueError(f"{kinds}: {e}") from None
    if cfg.level_weight > 0 and (no_scale := sorted(set(cfg.cross_kinds) - set(SWEEP_LEVELS))):
        raise ValueError(f"cross_kinds: the severity line needs kinds with sweep levels, {sorted(SWEEP_LEVELS)}; "
                         f"got {', '.join(no_scale)}")
    if cfg.robust_rank_weight > 0 and cfg.rank_weight <= 0:
        raise ValueError("robust_rank_weight attacks the severity pairs: it needs rank_weight > 0")
    if cfg.align_weight > 0 and cfg.level_weight <= 0:
        raise ValueError("align_weight aligns the gradients of the severity line's images: it needs level_weight > 0")
    if cfg.robust_level_weight > 0 and cfg.level_weight <= 0:
        raise ValueError("robust_level_weight attacks the severity line's images: it needs level_weight > 0")
