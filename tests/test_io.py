"""``ifqa_loss.io`` and ``IFQA.score_images``: the one path by which images enter the library."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import face_like_batch, write_png
from ifqa_loss import IFQA
from ifqa_loss.io import (IMAGE_SUFFIXES, ImageDecodeError, find_images, list_images, load_folder, load_image,
                          to_batch, to_float, to_uint8)
from ifqa_loss.preprocess import resize_to, resize_to_native, to_model_input


def _mixed_images(tmp_path):
    """A path, a uint8 tensor and a float tensor, all of different sizes."""
    path = write_png(tmp_path / "a.png", size=(300, 200), seed=1)
    u8 = to_uint8(face_like_batch(2, size=96, seed=3)[1])
    f32 = face_like_batch(4, size=40, seed=5)[3, :, :, :33]
    return [str(path), u8, f32]


def test_score_images_equals_forward_one_by_one(lite_model, tmp_path):
    images = _mixed_images(tmp_path)
    out = lite_model.score_images(images, batch_size=2)
    assert out.score.shape == (3,) and out.map.shape == (3, 1, 256, 256)
    singles = [to_float(load_image(images[0])), to_float(images[1]), images[2][None]]
    with torch.no_grad():
        expected = torch.cat([lite_model(x).score for x in singles])
    torch.testing.assert_close(out.score, expected, atol=1e-5, rtol=0)
    assert not out.score.requires_grad


def test_score_images_does_not_depend_on_batching(lite_model, tmp_path):
    images = _mixed_images(tmp_path)
    a = lite_model.score_images(images, batch_size=1)
    b = lite_model.score_images(images, batch_size=3)
    torch.testing.assert_close(a.score, b.score, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.map, b.map, atol=1e-4, rtol=0)


def test_score_images_maps_uint8_into_the_models_input_range(lite_weights, tmp_path):
    images = _mixed_images(tmp_path)[:2]
    unit = IFQA(weights=lite_weights).score_images(images)
    tanh = IFQA(weights=lite_weights, input_range=(-1, 1)).score_images(images)
    torch.testing.assert_close(unit.score, tanh.score, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad, error, message", [
    ([], ValueError, "no images given"),
    ([torch.zeros(3, 8, 64, dtype=torch.uint8)], ValueError, "image 0 is 8x64; images must be at least 16x16"),
    ([torch.zeros(4, 32, 32)], ValueError, r"image 0 has shape \(4, 32, 32\)"),
    ([torch.zeros(3, 32, 32, dtype=torch.int32)], TypeError, "image 0 has dtype torch.int32"),
    ([np.zeros((32, 32, 3))], TypeError, "image 0 is a ndarray"),
])
def test_to_batch_names_the_problem(bad, error, message):
    with pytest.raises(error, match=message):
        to_batch(bad, "lite")


def test_score_images_rejects_a_bad_batch_size_and_a_corrupt_file(lite_model, tmp_path):
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        lite_model.score_images([torch.rand(3, 32, 32)], batch_size=0)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageDecodeError, match="bad.png"):
        lite_model.score_images([str(bad)])


def test_resize_policy_is_the_official_one():
    """Exactly 2x down is a 2x2 box average; the batch path resizes as ``to_model_input`` does."""
    x = torch.rand(2, 3, 64, 48, dtype=torch.float64)
    sq = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    torch.testing.assert_close(resize_to(sq, 32), F.avg_pool2d(sq, 2), rtol=0, atol=1e-12)
    for backbone in ("lite", "vit"):
        native = resize_to_native(x, backbone)
        torch.testing.assert_close(to_model_input(native, backbone), to_model_input(x, backbone), rtol=0, atol=1e-9)
    assert resize_to_native(x, "vit").shape[-2:] == (224, 224)
    with pytest.raises(ValueError, match="unknown backbone 'unet'"):
        resize_to_native(x, "unet")


def test_to_float_and_to_uint8_round_trip():
    u8 = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    assert torch.equal(to_uint8(to_float(u8)), u8)
    assert to_float(u8[0]).shape == (1, 3, 5, 7)
    with pytest.raises(TypeError, match="uint8 tensor, got dtype torch.float32"):
        to_float(u8.float())


def test_folder_walking_is_sorted_and_filtered(tmp_path):
    for name in ("b.png", "a.JPG", "c.webp"):
        write_png(tmp_path / name, size=(20, 20))
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    write_png(tmp_path / "sub" / "d.png", size=(20, 20))
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.webp"]
    assert [p.name for p in list_images(tmp_path, names={"c.webp", "a.JPG"}, limit=1)] == ["a.JPG"]
    files, problems = find_images([str(tmp_path), str(tmp_path / "missing.png")], recursive=True)
    assert [f.split("/")[-1] for f in files] == ["a.JPG", "b.png", "c.webp", "d.png"]
    assert problems == [(str(tmp_path / "missing.png"), "no such file or directory")]
    assert ".png" in IMAGE_SUFFIXES and ".txt" not in IMAGE_SUFFIXES
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nope")


def test_load_folder_resizes_with_the_policy(tmp_path):
    write_png(tmp_path / "big.png", size=(64, 64), seed=1)
    write_png(tmp_path / "small.png", size=(32, 32), seed=2)
    (tmp_path / "broken.png").write_bytes(b"nope")
    with pytest.raises(ImageDecodeError, match="broken.png"):
        load_folder(tmp_path, size=32)
    names, imgs = load_folder(tmp_path, size=32, skip_bad=True)
    assert names == ["big.png", "small.png"] and imgs.dtype == torch.uint8 and imgs.shape == (2, 3, 32, 32)
    assert torch.equal(imgs[1], load_image(tmp_path / "small.png"))
    assert torch.equal(imgs[0], to_uint8(resize_to(to_float(load_image(tmp_path / "big.png")), 32))[0])
    with pytest.raises(ValueError, match="different sizes"):
        load_folder(tmp_path, skip_bad=True)


def test_old_decoding_names_still_import_from_preprocess_with_a_warning():
    import ifqa_loss.io as io
    import ifqa_loss.preprocess as preprocess

    for old, new in [("load_image", io.load_image), ("ImageDecodeError", io.ImageDecodeError),
                     ("image_to_float", io.to_float)]:
        with pytest.warns(DeprecationWarning, match=f"preprocess.{old} moved to ifqa_loss.io"):
            assert getattr(preprocess, old) is new
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        preprocess.nope  # noqa: B018
