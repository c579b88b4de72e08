"""DSL-FIQA without running the network: crop offsets, landmark vectors, input checks, state-dict layout, CLI usage.

Expected values come from ../shared/dsl-reference (read off the official code at commit 902112988a7b).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import SHARED
from ifqa_loss import cli
from ifqa_loss.dsl import (check_landmarks, crop_offsets, fixed_offsets, landmark_vectors, official_offsets,
                           official_run_offsets)
from ifqa_loss.models.dsl import DSLFIQANet
from ifqa_loss.models.dsl.landmarks import encode
from ifqa_loss.models.dsl.swin import relative_position_index, shifted_window_mask

DSL_REF = SHARED / "dsl-reference"


@pytest.fixture(scope="module")
def ref():
    if not (DSL_REF / "expected.json").is_file():
        pytest.skip(f"DSL-FIQA reference material not found at {DSL_REF}")
    return (json.loads((DSL_REF / "expected.json").read_text()), dict(np.load(DSL_REF / "expected_landmarks.npz")),
            dict(np.load(DSL_REF / "spec_buffers.npz")))


def test_official_offsets_follow_the_official_stream(ref):
    expected, _, _ = ref
    images = expected["images"]
    run = official_run_offsets([tuple(im["size_hw"]) for im in images])
    for im, drawn in zip(images, run):
        assert drawn == [(c["top"], c["left"]) for c in im["random_protocol"]["crops"]], im["file"]
    # crops="official" gives every image the first image's share, whatever the order
    assert official_offsets(512, 512) == run[0]
    assert crop_offsets("official", 512, 512) == run[0]
    assert all(0 <= t <= 127 and 0 <= s <= 127 for t, s in run[0])  # randint's upper bound is exclusive


def test_fixed_and_center_offsets(ref):
    expected, _, _ = ref
    assert fixed_offsets(512, 512) == [tuple(o) for o in expected["explicit_offsets_top_left"]]
    assert fixed_offsets(384, 384) == [(0, 0)]
    assert fixed_offsets(400, 384) == [(0, 0), (16, 0), (8, 0)]
    assert crop_offsets("center", 512, 600) == [(64, 108)]
    assert crop_offsets([(1, 2), [3, 4]], 400, 400) == [(1, 2), (3, 4)]


@pytest.mark.parametrize("h,w,crops,match", [
    (384, 512, "official", "at least 385x385.*randint"),
    (383, 600, "fixed", "at least 384x384.*never resizes"),
    (200, 200, "center", "at least 384x384"),
    (512, 512, [(0, 129)], "outside the 512x512 image"),
    (512, 512, [], "empty"),
    (512, 512, "random", "one of official, fixed, center"),
])
def test_bad_crops_are_refused(h, w, crops, match):
    with pytest.raises(ValueError, match=match):
        crop_offsets(crops, h, w)


def test_landmark_vectors_of_every_listed_crop(ref):
    expected, marks, _ = ref
    n = 0
    for im in expected["images"]:
        lm = check_landmarks(marks[im["landmarks_68_npz_key"]], 1, *im["size_hw"])
        assert np.array_equal(lm[0].numpy().astype(np.float32), np.asarray(im["landmarks_68"], np.float32))
        crops = im["explicit_crops"] + im["random_protocol"]["crops"]
        vectors = landmark_vectors(lm, [(c["top"], c["left"]) for c in crops])[0]
        for c, v in zip(crops, vectors):
            index_key, scaled_key = c["landmark_npz_keys"]
            assert v.dtype == torch.float32
            assert np.array_equal(v.numpy(), marks[scaled_key]), scaled_key  # bit for bit
            inside = marks[index_key][marks[index_key] != 69]
            assert inside.tolist() == c["landmarks_inside"]
            n += 1
    assert n == 75


def test_landmark_edge_cases(ref):
    expected, marks, _ = ref
    for name, case in expected["landmark_edge_cases"].items():
        lm_key, index_key, scaled_key = case["landmark_npz_keys"]
        v = landmark_vectors(check_landmarks(marks[lm_key], 1, 512, 512), [(case["top"], case["left"])])[0, 0]
        assert np.array_equal(v.numpy(), marks[scaled_key]), name
        inside = marks[index_key][marks[index_key] != 69]
        assert inside.tolist() == case["landmarks_inside"], name  # inclusive bounds: (384, 384) is inside


def test_the_69_padding_codes_depend_on_the_smallest_index_inside(ref):
    lm = torch.tensor(ref[0]["images"][1]["landmarks_68"])[None]
    lm_far = lm.clone()
    lm_far[0, :2] = 500.0  # landmarks 0 and 1 leave crop (0, 0): min index 2
    v0 = landmark_vectors(lm, [(0, 0)])[0, 0]
    v2 = landmark_vectors(lm_far, [(0, 0)])[0, 0]
    assert v0[-1].item() == 1.0 and v2[-1].item() == np.float32(0.99999994)


def test_landmark_encoding_layout():
    v = torch.linspace(-1, 1, 500)[None]
    e = encode(v)
    assert e.shape == (1, 10500)
    assert torch.equal(e[:, :500], v)
    assert torch.equal(e[:, 500:1000], torch.sin(v)) and torch.equal(e[:, 1000:1500], torch.cos(v))
    assert torch.equal(e[:, -500:], torch.cos(v * 512.0))


@pytest.mark.parametrize("landmarks,match", [
    (None, "needs the 68 facial landmarks.*detect_landmarks"),
    (torch.zeros(1, 5, 2), "68-point iBUG 300-W layout; 5 points"),
    (torch.zeros(1, 2, 68), "transpose"),
    (torch.full((1, 68, 2), float("nan")), "NaN or Inf"),
    (torch.rand(1, 68, 2), "look normalised"),
    (torch.full((1, 68, 2), 900.0), "not in its pixel frame.*x first"),
    (torch.full((1, 68, 2), -10.0), "0 of 68 lie inside"),
])
def test_bad_landmarks_are_refused(landmarks, match):
    with pytest.raises(ValueError, match=match):
        check_landmarks(landmarks, 1, 512, 512)


def test_landmarks_shapes_and_types():
    lm = np.full((68, 2), 200.0, np.float32)
    assert check_landmarks(lm, 1, 512, 512).shape == (1, 68, 2)  # (68, 2) for one image
    with pytest.raises(ValueError, match=r"shape \(2, 68, 2\) for 2 image"):
        check_landmarks(lm, 2, 512, 512)
    with pytest.raises(TypeError, match="tensor or NumPy array"):
        check_landmarks([[0, 0]] * 68, 1, 512, 512)
    near_border = torch.full((1, 68, 2), 200.0)
    near_border[0, 0] = torch.tensor([-100.0, 520.0])  # a face cut by the border: within a quarter side
    assert check_landmarks(near_border, 1, 512, 512).dtype == torch.float64


def test_state_dict_matches_the_official_spec(ref):
    """Every key, shape and dtype of DE.pt and IQA.pt; the deterministic buffers equal the official values."""
    _, _, buffers = ref
    with torch.device("meta"):
        net = DSLFIQANet()
    for part, spec in (("de", "spec_de.json"), ("iqa", "spec_iqa.json")):
        entries = json.loads((DSL_REF / spec).read_text())
        state = getattr(net, part).state_dict()
        assert sorted(state) == sorted(e[0] for e in entries)
        for key, shape, dtype, _ in entries:
            assert tuple(state[key].shape) == tuple(shape) and str(state[key].dtype) == f"torch.{dtype}", key
    assert torch.equal(relative_position_index(4), torch.from_numpy(buffers["relative_position_index"]))
    assert torch.equal(shifted_window_mask(24, 4, 2), torch.from_numpy(buffers["attn_mask"]))


def test_cli_dsl_usage_errors(tmp_path, capsys):
    img = tmp_path / "a.png"
    img.write_bytes(b"")
    assert cli.main(["score", str(img), "--backbone", "dsl", "--weights", str(tmp_path)]) == cli.EXIT_USAGE
    assert "--landmarks FILE" in capsys.readouterr().err
    bad = tmp_path / "lm.npz"
    np.savez(bad, names=np.array(["a.png"]), landmarks=np.zeros((1, 5, 2)))
    assert cli.main(["score", str(img), "--backbone", "dsl", "--landmarks", str(bad)]) == cli.EXIT_USAGE
    assert "(N, 68, 2)" in capsys.readouterr().err
    np.savez(bad, names=np.array(["a.png"]), landmarks=np.zeros((1, 68, 2)))
    assert cli.main(["score", str(img), "--backbone", "dsl", "--landmarks", str(bad)]) == cli.EXIT_USAGE
    assert "DSL-FIQA needs weights" in capsys.readouterr().err
    assert cli.main(["score", str(img), "--backbone", "dsl", "--landmarks", str(bad), "--weights", str(tmp_path)]) \
        == cli.EXIT_USAGE
    assert "has no DE.pt" in capsys.readouterr().err
    # a landmarks FILE is for dsl only; the IFQA --detect flag keeps its meaning
    assert cli.main(["score", str(img), "--landmarks", str(bad)]) == cli.EXIT_USAGE
    assert "for --backbone dsl" in capsys.readouterr().err
    args = cli._parser().parse_args(["score", str(img), "--detect", "--json", "--landmarks"])
    assert args.landmarks is True
