"""DSL-FIQA weight files: the official formats load strictly; mismatched, swapped, corrupt or code-running files are
refused with an itemised message. Uses the small degradation encoder (DE.pt, 5 MB) wherever a real file is
needed; the 1 GB IQA.pt is loaded in tests/test_dsl.py."""
from __future__ import annotations


import pytest
import torch

from conftest import SHARED, load_reference_module
from ifqa_loss import WeightsError
from ifqa_loss.dsl import load_dsl, load_part, weight_files
from ifqa_loss.models.dsl import DegradationEncoder
from ifqa_loss.weights import sha256_of

DSL_REF = SHARED / "dsl-reference"


@pytest.fixture(scope="module")
def de_state():
    if not (DSL_REF / "synth_ckpt.py").is_file():
        pytest.skip(f"DSL-FIQA reference material not found at {DSL_REF}")
    synth_ckpt = load_reference_module(DSL_REF / "synth_ckpt.py", "dsl_reference_synth_ckpt")

    return synth_ckpt.build(str(DSL_REF / "spec_de.json"))


def _load_de(path):
    with torch.device("meta"):
        de = DegradationEncoder()
    load_part(de, path, "DE")
    return de


def test_official_bare_state_dict_loads_exactly(de_state, tmp_path):
    torch.save(de_state, tmp_path / "DE.pt")
    de = _load_de(tmp_path / "DE.pt")
    got = de.state_dict()
    assert list(got) == list(de_state)  # the official module order
    assert all(torch.equal(got[k], de_state[k]) for k in de_state)


def test_dataparallel_prefix_wrapped_dicts_and_safetensors_load_the_same(de_state, tmp_path):
    from safetensors.torch import save_file

    torch.save({f"module.{k}": v for k, v in de_state.items()}, tmp_path / "prefixed.pt")
    torch.save({"state_dict": de_state}, tmp_path / "wrapped.pth")
    save_file({k: v.contiguous() for k, v in de_state.items()}, tmp_path / "DE.safetensors")
    for name in ("prefixed.pt", "wrapped.pth", "DE.safetensors"):
        got = _load_de(tmp_path / name).state_dict()
        assert all(torch.equal(got[k], de_state[k]) for k in de_state), name


def test_missing_unexpected_and_misshaped_keys_are_itemised(de_state, tmp_path):
    bad = dict(de_state)
    del bad["E.3.weight"], bad["E.16.running_var"]
    bad["E.99.weight"] = torch.zeros(1)
    bad["E.0.bias"] = torch.zeros(32)
    torch.save(bad, tmp_path / "DE.pt")
    with pytest.raises(WeightsError) as info:
        _load_de(tmp_path / "DE.pt")
    msg = str(info.value)
    assert str(tmp_path / "DE.pt") in msg
    assert "2 missing keys: E.3.weight, E.16.running_var" in msg
    assert "1 unexpected keys: E.99.weight" in msg
    assert "1 mis-shaped keys: E.0.bias: file (32,) vs model (64,)" in msg


def test_swapped_files_and_ifqa_checkpoints_are_named(de_state, tmp_path):
    torch.save(de_state, tmp_path / "DE.pt")
    torch.save(de_state, tmp_path / "IQA.pt")  # the DE file in IQA.pt's place
    with pytest.raises(WeightsError, match=r"(?s)377 missing keys.*46 unexpected keys.*are DE.pt and IQA.pt swapped"):
        load_dsl(tmp_path)
    torch.save({"D": {"encoder128.conv1.weight": torch.zeros(3)}}, tmp_path / "DE.pt")
    with pytest.raises(WeightsError, match="looks like an IFQA checkpoint"):
        load_dsl(tmp_path)


def test_folder_and_pair_resolution(de_state, tmp_path):
    with pytest.raises(WeightsError, match="needs weights.*DSL-FIQA/DSL-FIQA.*no licence"):
        weight_files(None)
    with pytest.raises(WeightsError, match="does not exist"):
        weight_files(tmp_path / "nope")
    torch.save(de_state, tmp_path / "DE.pt")
    with pytest.raises(WeightsError, match=r"has no IQA.pt .*it holds: DE.pt"):
        weight_files(tmp_path)
    (tmp_path / "IQA.safetensors").write_bytes(b"x")
    assert weight_files(tmp_path) == (tmp_path / "DE.pt", tmp_path / "IQA.safetensors")
    assert weight_files([tmp_path / "DE.pt", tmp_path / "IQA.safetensors"]) == weight_files(tmp_path)
    with pytest.raises(WeightsError, match="pair"):
        weight_files([tmp_path / "DE.pt"])
    with pytest.raises(WeightsError, match="is a file"):
        weight_files(tmp_path / "DE.pt")


def test_checksums_truncation_and_pickled_code_are_refused(de_state, tmp_path):
    path = tmp_path / "DE.pt"
    torch.save(de_state, path)
    with torch.device("meta"):
        de = DegradationEncoder()
    load_part(de, path, "DE", sha256=sha256_of(path))  # the right checksum passes
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        load_part(de, path, "DE", sha256="0" * 64)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        _load_de(cut)
    evil = tmp_path / "evil.pt"
    torch.save({"E.0.weight": torch.zeros(1), "payload": WeightsError("x")}, evil)
    with pytest.raises(WeightsError, match="refused to load|weights_only"):  # never unpickled
        _load_de(evil)
