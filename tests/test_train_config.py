"""`ifqa train`'s flags generated from TrainConfig: the same flags, defaults, configs and errors as the hand-written
parser they replaced, and the model cards' recorded commands still parse to the configs they ran with."""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from ifqa_loss import cli
from ifqa_loss.train import trainer
from ifqa_loss.train.config import GROUPS, TrainConfig, add_train_arguments, config_from_args, experimental_flags

REPO = Path(__file__).resolve().parents[1]
CARD = json.loads((REPO / "ifqa_loss" / "bundled" / "ifqa-lite.json").read_text())
EVALUATOR_CARD = json.loads((REPO / "examples" / "weights" / "ifqa-lite-evaluator.json").read_text())

# the hand-written parser's flags, in its order
OLD_FLAGS = ["--data", "--landmarks", "--val-list", "--train-list", "--arch", "--out", "--steps", "--batch-size",
             "--lr-d", "--lr-g", "--adv-weight", "--primary-weight", "--fprs-prob", "--cutmix-prob", "--no-augment",
             "--max-zoom", "--raw-fake-frac", "--init", "--degradation", "--rank-weight", "--rank-margin",
             "--rank-kinds", "--region-rank-weight", "--region-rank-margin", "--rank-pairs", "--rank-zoom",
             "--rank-soften", "--flip-weight", "--flip-pairs", "--ema-decay", "--val-every", "--val-images",
             "--ckpt-every", "--seed", "--device", "--limit", "--no-resume", "--export-official", "--no-progress"]
# flags added since (robust and cross-content training, issues 29 and 30), all off by default
NEW_FLAGS = ["--robust-weight", "--robust-eps", "--robust-steps", "--robust-faces", "--robust-rank-weight",
             "--robust-level-weight", "--align-weight", "--align-faces", "--cross-rank-weight", "--cross-rank-margin",
             "--cross-kinds", "--level-weight", "--level-zoom", "--level-floor", "--calib-weight", "--calib-target"]
NEW_DEFAULTS = {"robust_weight": 0.0, "robust_eps": 4.0, "robust_steps": 1, "robust_faces": 4,
                "robust_rank_weight": 0.0, "robust_level_weight": 0.0, "align_weight": 0.0, "align_faces": 4,
                "cross_rank_weight": 0.0, "cross_rank_margin": 0.15,
                "cross_kinds": ["blur", "noise", "jpeg", "downup"], "level_weight": 0.0, "level_zoom": 1.0,
                "level_floor": 0.05, "calib_weight": 0.0, "calib_target": 0.9}

# TrainConfig of `ifqa train --data d --out o` as the hand-written train_command built it
OLD_DEFAULTS = {
    "data": "d", "out": "o", "landmarks": None, "val_list": None, "train_list": None, "arch": "lite", "steps": 2000,
    "batch_size": 8, "lr_d": 2e-4, "lr_g": 2e-4, "adv_weight": 0.02, "primary_weight": 2.0, "fprs_prob": 0.5,
    "cutmix_prob": 0.25, "augment": True, "max_zoom": 1.2, "raw_fake_frac": 0.5, "val_every": 250, "val_images": 64,
    "ckpt_every": 100, "seed": 0, "device": "cpu", "limit": None, "resume": True, "export_official": False,
    "generator_width": 16, "widths": None, "num_bottleneck": None, "degradation": {}, "init": None,
    "rank_weight": 0.0, "rank_margin": 0.15, "rank_kinds": ["jpeg", "jpeg", "jpeg", "blur", "noise", "downup"],
    "region_rank_weight": 0.0, "region_rank_margin": 0.03, "rank_pairs": 8, "rank_zoom": 1.0, "rank_soften": 0.0,
    "flip_weight": 0.0, "flip_pairs": 4, "ema_decay": 0.0, **NEW_DEFAULTS,
}

_RECIPE_DATA = {"data": "../shared/data/faces256/images", "landmarks": "../shared/data/faces256/landmarks68.npz",
                "val_list": "../shared/data/faces256/val.txt", "train_list": "ifqa_loss/bundled/ifqa-lite.train.txt",
                "degradation": {"p_jpeg": 0.7, "p_noise": 0.6, "jpeg_backend": "pil"}}
_STAGE2 = {**_RECIPE_DATA, "out": "runs/stage2", "init": "runs/stage1/ifqa-lite.safetensors", "raw_fake_frac": 1.0,
           "steps": 1800, "cutmix_prob": 0.0, "rank_weight": 20.0, "region_rank_weight": 10.0, "rank_zoom": 1.6,
           "rank_soften": 0.5, "val_every": 150, "ckpt_every": 50}
# what the hand-written train_command made of each stage's recorded command (differences from OLD_DEFAULTS)
OLD_STAGE_CONFIGS = [
    {**_RECIPE_DATA, "out": "runs/stage1", "steps": 1000, "lr_d": 4e-4, "raw_fake_frac": 0.7},
    _STAGE2,
    {**_STAGE2, "steps": 2100, "flip_weight": 30.0, "flip_pairs": 4, "ema_decay": 0.99, "rank_margin": 0.25},
]


def _argv(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[:2] == ["ifqa", "train"], command
    return words[1:]


def _card_commands() -> list[str]:
    commands = [s["command"] for s in CARD["stages"]]
    commands += [c.strip() for c in CARD["command"].split("&&")]
    return commands


def _config(argv: list[str], monkeypatch) -> TrainConfig:
    """The TrainConfig that ``ifqa <argv>`` hands to the trainer (training itself replaced)."""
    seen = []
    monkeypatch.setattr(trainer, "train", lambda cfg, progress=True: seen.append((cfg, progress)) or {})
    monkeypatch.setattr(cli, "reuse_freed_memory", lambda: False)
    assert cli.main(argv) == 0
    assert len(seen) == 1
    return seen[0][0]


def _train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_flags_are_exactly_the_old_ones():
    flags = [s for a in _train_parser()._actions for s in a.option_strings if s not in ("-h", "--help")]
    assert sorted(flags) == sorted(OLD_FLAGS + NEW_FLAGS)


def test_defaults_are_the_old_ones(monkeypatch):
    assert dataclasses.asdict(_config(["train", "--data", "d", "--out", "o"], monkeypatch)) == OLD_DEFAULTS


def test_every_field_has_help_and_every_flag_shows_it(capsys):
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["help"].strip(), f"{f.name} has no help text"
        assert f.metadata["group"] in GROUPS
    assert cli.main(["train", "--help"]) == 0
    text = "".join(capsys.readouterr().out.split())  # argparse re-wraps the help, also at hyphens
    for f in dataclasses.fields(TrainConfig):
        if f.metadata["cli"]:
            assert "".join(f.metadata["help"].split()) in text, f.name
    assert {f.name for f in dataclasses.fields(TrainConfig) if not f.metadata["cli"]} == {
        "generator_width", "widths", "num_bottleneck"}


def test_experimental_options_are_marked_and_no_recipe_sets_them(capsys):
    marked = experimental_flags()
    assert marked and set(marked) <= set(OLD_FLAGS + NEW_FLAGS)
    used = {w for c in _card_commands() for w in shlex.split(c) if w.startswith("--")}
    assert not used & set(marked), "a recipe sets an option marked experimental"
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    epilog = out[out.index("experimental options"):]
    assert all(flag in epilog for flag in marked)  # listed in one place, flags unbroken by the wrapping
    assert out.count("(experimental)") == len(marked)


@pytest.mark.parametrize("stage", range(len(OLD_STAGE_CONFIGS)))
def test_bundled_stage_commands_give_the_old_configs(stage, monkeypatch):
    cfg = _config(_argv(CARD["stages"][stage]["command"]), monkeypatch)
    assert dataclasses.asdict(cfg) == {**OLD_DEFAULTS, **OLD_STAGE_CONFIGS[stage]}


def test_bundled_chain_command_is_the_stage_commands(monkeypatch):
    chained = [dataclasses.asdict(_config(_argv(c.strip()), monkeypatch)) for c in CARD["command"].split("&&")]
    assert chained == [{**OLD_DEFAULTS, **s} for s in OLD_STAGE_CONFIGS]


def test_bundled_card_records_the_last_stage_config(monkeypatch):
    """The card's ``training`` is the last stage's config, but for what the run filled in from --init."""
    cfg = dataclasses.asdict(_config(_argv(CARD["stages"][-1]["command"]), monkeypatch))
    recorded = CARD["training"]
    filled_in = {"init", "widths", "num_bottleneck"}
    # a card written before an option existed lacks it; the option's default is what that run did
    recorded = {**{k: v for k, v in NEW_DEFAULTS.items() if k not in recorded}, **recorded}
    assert set(recorded) == set(cfg) - {"data", "out"}
    assert {k: recorded[k] for k in set(recorded) - filled_in} == {k: cfg[k] for k in set(recorded) - filled_in}


def test_evaluator_card_config_is_expressible_by_the_flags(monkeypatch):
    """The evaluator card records a config, not a command: flags built from it must parse back to it."""
    recorded = EVALUATOR_CARD["training"]
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(recorded) <= names
    argv = ["train", "--data", "faces", "--out", "run"]
    for key, value in recorded.items():
        if key in ("widths", "num_bottleneck", "generator_width"):
            assert value == OLD_DEFAULTS[key]  # fields with no flag: the card used the defaults
        elif key == "degradation":
            argv += [w for k, v in value.items() for w in ("--degradation", f"{k}={v}")]
        elif isinstance(value, bool):
            if value != OLD_DEFAULTS[key]:
                argv.append(f"--{key.replace('_', '-')}" if value else f"--no-{key.replace('_', '-')}")
        elif value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    cfg = dataclasses.asdict(_config(argv, monkeypatch))
    assert {k: cfg[k] for k in recorded} == recorded


def test_flags_of_every_kind_convert_as_before(monkeypatch):
    cfg = _config(["train", "--data", "d", "--out", "o", "--no-augment", "--no-resume", "--export-official",
                   "--arch", "cnn", "--limit", "3", "--rank-kinds", " jpeg, ,blur ", "--degradation", "scale=1.5,3",
                   "--degradation", "p_jpeg=0.7", "--device", "cuda:1", "--init", "w", "--no-progress"], monkeypatch)
    assert dataclasses.asdict(cfg) == {**OLD_DEFAULTS, "arch": "cnn", "augment": False, "device": "cuda:1",
                                       "limit": 3, "resume": False, "export_official": True, "init": "w",
                                       "degradation": {"scale": (1.5, 3.0), "p_jpeg": 0.7},
                                       "rank_kinds": ["jpeg", "blur"]}


def test_progress_flag_reaches_the_trainer(monkeypatch):
    seen = []
    monkeypatch.setattr(trainer, "train", lambda cfg, progress=True: seen.append(progress) or {})
    monkeypatch.setattr(cli, "reuse_freed_memory", lambda: False)
    assert cli.main(["train", "--data", "d", "--out", "o"]) == 0
    assert cli.main(["train", "--data", "d", "--out", "o", "--no-progress"]) == 0
    assert seen == [True, False]


_DEGRADATION_KEYS = ("p_blur, p_motion, gauss_sigma, motion_kernel, p_down, scale, p_noise, p_poisson, noise_sigma, "
                     "poisson_scale, p_jpeg, jpeg_quality, jpeg_backend, jpeg_grid, p_single, p_jpeg_only, p_sharpen, "
                     "sharpen_sigma, sharpen_amount")


# the last stderr line the hand-written parser gave for each (data and output paths that do not exist)
@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "ifqa: error: --steps and --batch-size must be >= 1"),
    (["--batch-size", "0"], "ifqa: error: --steps and --batch-size must be >= 1"),
    (["--steps", "x"], "ifqa train: error: argument --steps: invalid int value: 'x'"),
    (["--arch", "vit"], "ifqa train: error: argument --arch: invalid choice: 'vit' (choose from 'lite', 'cnn')"),
    (["--lr-d", "fast"], "ifqa train: error: argument --lr-d: invalid float value: 'fast'"),
    (["--limit", "1.5"], "ifqa train: error: argument --limit: invalid int value: '1.5'"),
    (["--degradation", "p_jpeg"],
     f"ifqa: error: --degradation 'p_jpeg': expected KEY=VALUE with KEY one of {_DEGRADATION_KEYS}"),
    (["--degradation", "nope=1"],
     f"ifqa: error: --degradation 'nope=1': expected KEY=VALUE with KEY one of {_DEGRADATION_KEYS}"),
    (["--degradation", "p_jpeg=high"], "ifqa: error: --degradation 'p_jpeg=high': bad value for p_jpeg (default 0.5)"),
    (["--degradation", "jpeg_grid=diagonal"],
     "ifqa: error: --degradation 'jpeg_grid=diagonal': jpeg_grid must be one of fixed, random"),
    (["--degradation", "jpeg_backend=turbo"],
     "ifqa: error: --degradation 'jpeg_backend=turbo': jpeg_backend must be one of auto, pil, kornia"),
    (["--degradation", "jpeg_quality=95,30"],
     "ifqa: error: --degradation 'jpeg_quality=95,30': bad value for jpeg_quality (default (30, 95))"),
    (["--rank-weight", "1", "--rank-kinds", "jpeg,sharp"], "ifqa: error: rank_kinds: unknown degradation kind "
     "'sharp'; expected one of ['blur', 'downup', 'jpeg', 'mixed', 'noise', 'sharpen']"),
    (["--rank-weight", "1", "--rank-kinds", ","], "ifqa: error: rank_kinds: no degradation kinds given; expected "
     "some of ['blur', 'downup', 'jpeg', 'mixed', 'noise', 'sharpen']"),
    (["--rank-pairs", "0"], "ifqa: error: rank_pairs must be >= 1, got 0"),
    (["--ema-decay", "1"], "ifqa: error: ema_decay must be in [0, 1), got 1.0"),
    (["--max-zoom", "nan"], "ifqa: error: max_zoom must be in [1, 4], got nan"),
    (["--rank-weight", "nan"], "ifqa: error: rank_weight must be >= 0, got nan"),
    (["--rank-soften", "1.5"], "ifqa: error: rank_soften must be in [0, 1], got 1.5"),
    (["--bogus"], "ifqa: error: unrecognized arguments: --bogus"),
])
def test_bad_values_give_the_old_usage_errors(flags, message, tmp_path, capsys):
    rc = cli.main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--no-progress", *flags])
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
    assert not (tmp_path / "o").exists(), "checked before anything is written"


def test_missing_required_flag_is_a_usage_error(capsys):
    assert cli.main(["train", "--out", "o"]) == 2
    assert capsys.readouterr().err.strip().endswith("the following arguments are required: --data")


def test_generated_parser_works_on_its_own():
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--data", "d", "--out", "o", "--flip-weight", "2"]))
    assert cfg == TrainConfig(data="d", out="o", flip_weight=2.0)
