"""The bundled default model: registered with its sha256, used when no weights are given, and sensible."""
from __future__ import annotations

import json

import pytest
import torch

from ifqa_loss import IFQA, IFQALoss, IFQAMetric
from ifqa_loss.cli import main
from ifqa_loss.weights import DEFAULT_WEIGHTS, PACKAGE_WEIGHTS_DIR, REGISTRY, WeightsError, registered_path, sha256_of


def test_bundled_weights_registered_with_checksum():
    entry = REGISTRY[DEFAULT_WEIGHTS]
    path = PACKAGE_WEIGHTS_DIR / entry.filename
    assert path.suffix == ".safetensors"
    assert path.stat().st_size <= 20 * 2 ** 20
    assert sha256_of(path) == entry.sha256
    card = json.loads((PACKAGE_WEIGHTS_DIR / f"{DEFAULT_WEIGHTS}.json").read_text())
    assert "NON-COMMERCIAL" in card["licence"] and card["backbone"] == "lite"


def test_defaults_use_bundled_model():
    assert IFQA().backbone == "lite"
    assert IFQALoss().ifqa.backbone == "lite"
    assert IFQAMetric().model.backbone == "lite"


def test_tampered_bundled_file_is_rejected(monkeypatch, tmp_path):
    entry = REGISTRY[DEFAULT_WEIGHTS]
    bad = tmp_path / entry.filename
    bad.write_bytes((PACKAGE_WEIGHTS_DIR / entry.filename).read_bytes()[:-1] + b"\0")
    monkeypatch.setattr("ifqa_loss.weights.PACKAGE_WEIGHTS_DIR", tmp_path)
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        registered_path(DEFAULT_WEIGHTS)


def test_cli_scores_without_weights_argument(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    p = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(p)
    assert main(["score", str(p), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["path"] == str(p) and 0 <= out[0]["score"] <= 1


def test_trained_model_prefers_clean_faces():
    skimage_data = pytest.importorskip("skimage.data")
    import kornia
    import torch.nn.functional as F

    face = torch.from_numpy(skimage_data.astronaut()[0:224, 110:334].copy()).permute(2, 0, 1)[None].float() / 255
    face = F.interpolate(face, size=(256, 256), mode="bicubic", antialias=True).clamp(0, 1)
    blurred = [kornia.filters.gaussian_blur2d(face, (15, 15), (s, s)) for s in (1.0, 2.0)]
    noisy = (face + 0.08 * torch.randn(face.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    scores = IFQA()(torch.cat([face, *blurred, noisy])).score
    assert scores[0] > scores[1] > scores[2], scores
    assert scores[0] > scores[3], scores
