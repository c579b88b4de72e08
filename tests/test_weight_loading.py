"""Weight files: every format loads to the same model; bad, corrupt, mismatched or code-running files are
refused with an itemised message."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import ifqa_loss.weights as W
from ifqa_loss import IFQA, IFQALoss, IFQAMetric, WeightsError


@pytest.fixture(scope="module")
def lite_state(lite_weights):
    state, meta = W.read_state_dict(lite_weights)
    assert meta["ifqa.backbone"] == "lite"
    return state


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_nonexistent_path(tmp_path):
    path = tmp_path / "nope" / "IFQA_Metric.pth"
    with pytest.raises(WeightsError) as info:
        IFQA(weights=path)
    msg = str(info.value)
    assert str(path) in msg and "neither an existing file nor a registered name" in msg
    assert "AIM-SKKU" in msg


def test_directory_and_empty_file(tmp_path):
    with pytest.raises(WeightsError, match="is not a file"):
        IFQA(weights=tmp_path)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match=r"empty \(0 bytes\)"):
        IFQA(weights=empty)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("fraction", [0.5, 0.02])
def test_truncated_weights_file(lite_weights, lite_state, tmp_path, fmt, fraction):
    full = lite_weights if fmt == "safetensors" else _save({"D": lite_state}, tmp_path / "full.pth")
    data = Path(full).read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(WeightsError) as info:
        IFQA(weights=cut)
    msg = str(info.value)
    assert str(cut) in msg
    assert "truncated or corrupt" in msg


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".bin"])
def test_random_bytes_file(tmp_path, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    with pytest.raises(WeightsError) as info:
        IFQA(weights=path)
    assert str(path) in str(info.value)


def test_random_bytes_pth_is_reported_as_corrupt_not_as_code(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    with pytest.raises(WeightsError) as info:
        IFQA(weights=path)
    msg = str(info.value)
    assert "run code" not in msg and "weights_only set to `False`" not in msg
    assert "corrupt" in msg or "not a readable" in msg


def _lite_file_variants(lite_state, tmp_path):
    return {
        "official {'D': ...}": _save({"D": lite_state}, tmp_path / "official.pth"),
        "bare state dict": _save(dict(lite_state), tmp_path / "bare.pth"),
        "{'state_dict': ...}": _save({"state_dict": lite_state, "epoch": 3}, tmp_path / "wrapped.pt"),
        "module. prefix": _save({f"module.{k}": v for k, v in lite_state.items()}, tmp_path / "ddp.pth"),
        "{'D': module. ...}": _save({"D": {f"module.{k}": v for k, v in lite_state.items()}}, tmp_path / "ddp2.pth"),
    }


def test_all_file_formats_give_identical_scores(lite_weights, lite_state, tmp_path, probe, reference_score):
    variants = _lite_file_variants(lite_state, tmp_path)
    for name, path in variants.items():
        model = IFQA(weights=path)
        assert model.backbone == "lite", name
        assert model.net.widths == (8, 16, 32, 64, 128) and model.net.num_bottleneck == 2, name
        with torch.no_grad():
            torch.testing.assert_close(model(probe).score, reference_score, atol=0, rtol=0, msg=name)
    # the safetensors file itself, and a copy of it without the .safetensors suffix (detected by content)
    plain = tmp_path / "lite_weights.bin"
    plain.write_bytes(Path(lite_weights).read_bytes())
    with torch.no_grad():
        torch.testing.assert_close(IFQA(weights=plain)(probe).score, reference_score, atol=0, rtol=0)


def test_save_official_round_trip(lite_model, tmp_path, probe, reference_score):
    path = tmp_path / "official.pth"
    sha = W.save_official(lite_model.net, path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"D"}
    with torch.no_grad():
        torch.testing.assert_close(IFQA(weights=path)(probe).score, reference_score, atol=0, rtol=0)


def test_missing_keys_are_listed(lite_state, tmp_path):
    state = dict(lite_state)
    del state["decoder64.conv1.weight"]
    del state["btn.1.norm2.bias"]
    with pytest.raises(WeightsError) as info:
        IFQA(weights=_save({"D": state}, tmp_path / "missing.pth"))
    msg = str(info.value)
    assert "does not match backbone 'lite'" in msg and "resemble backbone 'lite'" in msg
    assert "2 missing keys" in msg
    assert "decoder64.conv1.weight" in msg and "btn.1.norm2.bias" in msg


def test_extra_keys_are_listed(lite_state, tmp_path):
    state = dict(lite_state)
    state["head.fc.weight"] = torch.zeros(2, 2)
    with pytest.raises(WeightsError) as info:
        IFQA(weights=_save(state, tmp_path / "extra.pth"))
    msg = str(info.value)
    assert "1 unexpected keys" in msg and "head.fc.weight" in msg
    assert "resemble backbone 'lite'" in msg


def test_misshaped_tensor_is_listed(lite_state, tmp_path):
    state = dict(lite_state)
    state["decoder64.conv1.weight"] = torch.zeros(32, 32, 5, 5)
    with pytest.raises(WeightsError) as info:
        IFQA(weights=_save(state, tmp_path / "shape.pth"))
    msg = str(info.value)
    assert "1 mis-shaped keys" in msg
    assert "decoder64.conv1.weight: file (32, 32, 5, 5) vs model (32, 32, 3, 3)" in msg


def test_many_problems_are_summarised(lite_state, tmp_path):
    state = {k: v for k, v in lite_state.items() if not k.startswith("decoder")}
    n_missing = len(lite_state) - len(state)
    assert n_missing > 8
    with pytest.raises(WeightsError, match=rf"{n_missing} missing keys: .* and {n_missing - 8} more"):
        IFQA(weights=_save(state, tmp_path / "many.pth"))


def test_cnn_file_as_lite_names_the_backbone_it_resembles(cnn_ckpt):
    with pytest.raises(WeightsError) as info:
        IFQA(backbone="lite", weights=cnn_ckpt)
    msg = str(info.value)
    assert "resemble backbone 'cnn'" in msg and "mis-shaped" in msg


def test_unrecognisable_keys(tmp_path):
    path = _save({"D": {"fc.weight": torch.zeros(3, 3)}}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="cannot tell the backbone"):
        IFQA(weights=path)


def test_non_tensor_entries(tmp_path):
    path = _save({"D": {"encoder128.conv1.weight": torch.zeros(1), "step": 5}}, tmp_path / "mixed.pth")
    with pytest.raises(WeightsError, match="not tensors"):
        IFQA(weights=path)


class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zipfile_format", [True, False])
def test_pickle_that_runs_code_is_refused(lite_state, tmp_path, zipfile_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"D": dict(lite_state), "payload": _RunsCommand(marker)}, path,
               _use_new_zipfile_serialization=zipfile_format)
    assert not marker.exists()  # saving does not run it
    with pytest.raises(WeightsError) as info:
        IFQA(weights=path)
    assert str(path) in str(info.value) and "refused" in str(info.value)
    assert not marker.exists()
    with pytest.raises(WeightsError):
        IFQALoss(weights=path)
    assert not marker.exists()


def test_backbone_mismatch(cnn_ckpt, lite_weights):
    with pytest.raises(WeightsError, match=r"holds 'cnn' weights, but backbone='vit'"):
        IFQA(backbone="vit", weights=cnn_ckpt)
    with pytest.raises(WeightsError, match=r"holds 'lite' weights.*not the official 'cnn'"):
        IFQA(backbone="cnn", weights=lite_weights)
    with pytest.raises(WeightsError, match=r"holds 'lite' weights, but backbone='vit'"):
        IFQA(backbone="vit", weights=lite_weights)


def test_explicit_matching_backbone_loads(cnn_ckpt, lite_weights):
    assert IFQA(backbone="cnn", weights=cnn_ckpt).backbone == "cnn"
    assert IFQA(backbone="lite", weights=lite_weights).backbone == "lite"


def test_no_weights_and_no_bundled_default(monkeypatch):
    monkeypatch.delitem(W.REGISTRY, W.DEFAULT_WEIGHTS, raising=False)
    for kwargs in ({}, {"backbone": "lite"}):
        with pytest.raises(WeightsError) as info:
            IFQA(**kwargs)
        msg = str(info.value)
        assert "no bundled default weights" in msg
        assert "Google Drive" in msg and "AIM-SKKU" in msg
    for backbone in ("cnn", "vit"):
        with pytest.raises(WeightsError, match=rf"backbone '{backbone}' needs weights.*Google Drive"):
            IFQA(backbone=backbone)
    with pytest.raises(WeightsError, match="AIM-SKKU"):
        IFQAMetric()


def test_weights_of_wrong_type():
    with pytest.raises(TypeError, match="file path or a registered name"):
        IFQA(weights=123)


