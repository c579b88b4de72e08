"""The lite backbone's optional full-resolution stem: added to trained weights it changes nothing until trained,
its files load by metadata or by keys alone, and it never passes for the official model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ifqa_loss import IFQA
from ifqa_loss.cli import main
from ifqa_loss.models import build_model
from ifqa_loss.train.config import TrainConfig, check_config
from ifqa_loss.train.trainer import grown_state
from ifqa_loss.weights import WeightsError, detect_backbone, load_model, registered_path, save_weights

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces256"
SMALL = {"widths": (4, 8, 8, 16, 16), "num_bottleneck": 1}


def _probe(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_grown_stem_keeps_the_scores_until_trained():
    torch.manual_seed(0)
    plain = build_model("lite", **SMALL).eval()
    grown = build_model("lite", **SMALL, stem=6).eval()
    grown.load_state_dict(grown_state(grown, plain))
    x = _probe()
    with torch.no_grad():
        assert torch.allclose(grown(x), plain(x), atol=1e-6)
    # the zero projection still gets a gradient: one step makes the stem count
    grown.forward_logits(x).mean().backward()
    assert grown.stem.project.weight.grad.abs().sum() > 0
    with torch.no_grad():
        grown.stem.project.weight -= 10 * grown.stem.project.weight.grad
        assert (grown(x) - plain(x)).abs().max() > 1e-4


def test_stem_of_another_width_is_not_grown_over():
    small, wide = build_model("lite", **SMALL, stem=4), build_model("lite", **SMALL, stem=6)
    with pytest.raises(RuntimeError, match="stem"):
        wide.load_state_dict(grown_state(wide, small))


def test_stem_weights_load_from_metadata_and_from_keys(tmp_path):
    torch.manual_seed(1)
    model = build_model("lite", **SMALL, stem=5).eval()
    torch.nn.init.normal_(model.stem.project.weight, std=0.1)
    path = tmp_path / "stem.safetensors"
    save_weights(model, path, "lite", {**SMALL, "stem": 5})
    bare = tmp_path / "bare.safetensors"  # keys only: the backbone and the stem are read from the shapes
    save_file(load_file(path), str(bare))
    x = _probe()
    with torch.no_grad():
        expected = model(x)
        for f in (path, bare):
            loaded = load_model(weights=f)
            assert loaded.backbone == "lite" and loaded.config.get("stem") == 5
            assert torch.allclose(loaded.model(x), expected, atol=1e-6)
    assert detect_backbone(load_file(bare)) == ("lite", {"widths": [4, 8, 8, 16, 16], "num_bottleneck": 1,
                                                         "stem": 5})


def test_official_widths_with_a_stem_are_not_the_official_model():
    state = {k: torch.zeros(1) for k in ("encoder128.conv1.weight", "btn.0.conv1.weight", "btn.1.conv1.weight",
                                         "btn.2.conv1.weight", "btn.3.conv1.weight")}
    state.update({f"encoder{r}.conv2.weight": torch.zeros(w, 1) for r, w in
                  zip((128, 64, 32, 16, 8), (64, 128, 256, 512, 1024))})
    assert detect_backbone(state) == ("cnn", {})
    state["stem.conv_full.weight"] = torch.zeros(12, 3, 3, 3)
    backbone, config = detect_backbone(state)
    assert backbone == "lite" and config["stem"] == 12
    assert not build_model("lite", widths=(64, 128, 256, 512, 1024), num_bottleneck=4, stem=2).is_official_cnn


def test_stem_weights_refuse_the_cnn_backbone(tmp_path):
    path = tmp_path / "stem.safetensors"
    save_weights(build_model("lite", **SMALL, stem=3), path, "lite", {**SMALL, "stem": 3})
    with pytest.raises(WeightsError, match="cnn"):
        IFQA(backbone="cnn", weights=path)


@pytest.mark.parametrize("stem, arch", [(-1, "lite"), (8, "cnn")])
def test_bad_stem_settings_are_refused(stem, arch):
    with pytest.raises(ValueError, match="stem"):
        check_config(TrainConfig(data="d", out="o", arch=arch, stem=stem))
    if stem < 0:
        with pytest.raises(ValueError, match="stem"):
            build_model("lite", stem=stem)


@pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data/faces256 is absent (training data)")
def test_training_grows_a_stem_on_init_weights(tmp_path):
    """--stem on stem-less --init weights: at lr 0 the exported model scores as the init; the card names the stem;
    a later stage started from those weights keeps the stem without being told."""
    base = ["train", "--data", str(FACES / "images"), "--val-list", str(FACES / "val.txt"), "--steps", "1",
            "--batch-size", "2", "--limit", "4", "--val-every", "1", "--val-images", "2", "--raw-fake-frac", "1",
            "--no-progress"]
    assert main(base + ["--init", "ifqa-lite", "--stem", "4", "--lr-d", "0", "--out", str(tmp_path / "g")]) == 0
    card = json.loads((tmp_path / "g" / "ifqa-lite.json").read_text())
    assert card["config"]["stem"] == 4
    grown, init = load_model(weights=tmp_path / "g" / "ifqa-lite.safetensors"), load_model(
        weights=registered_path("ifqa-lite"))
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(grown.model(x), init.model(x), atol=1e-5)
    assert main(base + ["--init", str(tmp_path / "g" / "ifqa-lite.safetensors"), "--out", str(tmp_path / "h")]) == 0
    assert load_model(weights=tmp_path / "h" / "ifqa-lite.safetensors").config["stem"] == 4
