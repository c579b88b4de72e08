"""``ifqa score --detect`` and ``ifqa align``: rows per face, faceless and broken photos, maps painted back,
aligned crops with their landmarks file, and the error without the faces extra.

Exit status under test: 0 when every photo was read (a faceless photo gives a ``"score": null`` row and a stderr
line), 1 when a file could not be read, 2 for usage errors (the missing extra included).
"""
from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import torch

from ifqa_loss import cli
from ifqa_loss import faces as fc

needs_faces = pytest.mark.skipif(not fc.faces_available(),
                                 reason='the faces extra is not installed: pip install "ifqa-loss[faces]"')


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder: the astronaut (public domain, 1 face), a two-face collage, a blank photo and a truncated JPEG."""
    from PIL import Image

    data = pytest.importorskip("skimage.data", reason="scikit-image (the dev extra) ships the astronaut photo")
    root = tmp_path_factory.mktemp("photos")
    a = np.ascontiguousarray(data.astronaut())
    Image.fromarray(a).save(root / "astronaut.png")
    head = a[40:220, 130:310]
    Image.fromarray(np.concatenate([head, head[:, ::-1]], axis=1)).save(root / "pair.png")
    Image.fromarray(np.full((200, 300, 3), 90, np.uint8)).save(root / "wall.png")
    Image.fromarray(a).save(root / "cut.jpg", quality=90)
    raw = (root / "cut.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(raw[: len(raw) // 3])
    return root


def _run(capsys, *argv):
    code = cli.main(list(argv) + ["--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


@needs_faces
def test_score_detect_json_rows_per_face(photos, capsys):
    code, out, err = _run(capsys, "score", str(photos / "pair.png"), str(photos / "astronaut.png"),
                          str(photos / "wall.png"), "--detect", "--json", "--batch-size", "2")
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["path"].rsplit("/", 1)[1], r["face"]) for r in rows] == \
        [("pair.png", 0), ("pair.png", 1), ("astronaut.png", 0), ("wall.png", None)]
    for r in rows[:3]:
        assert 0 <= r["score"] <= 1 and len(r["box"]) == 4 and r["confidence"] > 0 and "landmarks" not in r
    assert rows[3]["score"] is None and rows[3]["reason"] == "no face found"
    assert "wall.png: no face found" in err
    # the mirrored head scores as the head (IFQA is close to mirror-symmetric), boxes are left to right
    assert rows[0]["box"][0] < rows[1]["box"][0]
    # the same path as the Python call
    assert rows[2]["score"] == pytest.approx(fc.score_faces(photos / "astronaut.png")[0].score, abs=1e-6)


@needs_faces
def test_score_detect_landmarks_and_csv(photos, capsys, tmp_path):
    code, out, err = _run(capsys, "score", str(photos / "astronaut.png"), "--detect", "--json", "--landmarks")
    assert code == 0, err
    (row,) = json.loads(out)
    lm = torch.tensor(row["landmarks"])
    assert lm.shape == (68, 2)
    assert torch.allclose(lm, fc.detect_faces(photos / "astronaut.png")[0].landmarks, atol=0.01)
    table = tmp_path / "faces.csv"
    code, _, err = _run(capsys, "score", str(photos), "--detect", "--csv", str(table), "--landmarks")
    assert code == 1 and "cut.jpg" in err  # the truncated file failed; the run went on
    lines = list(csv.DictReader(table.open()))
    assert [ln["path"].rsplit("/", 1)[1] for ln in lines] == ["astronaut.png", "pair.png", "pair.png", "wall.png"]
    assert lines[0]["x0"] and float(lines[0]["score"]) == pytest.approx(row["score"], abs=1e-6)
    assert len(json.loads(lines[0]["landmarks"])) == 68
    assert lines[3]["score"] == "" and lines[3]["reason"] == "no face found"


@needs_faces
def test_score_detect_text_output(photos, capsys):
    code, out, err = _run(capsys, "score", str(photos / "wall.png"), str(photos / "astronaut.png"), "--detect")
    assert code == 0, err
    first, second = out.strip().splitlines()
    assert first.startswith("-\t") and first.endswith("no face found")
    assert second.split("\t")[2] == "face 0" and 0 <= float(second.split("\t")[0]) <= 1


@needs_faces
def test_score_detect_save_maps_paints_every_face_back(photos, capsys, tmp_path):
    from PIL import Image

    maps = tmp_path / "maps"
    code, out, err = _run(capsys, "score", str(photos / "pair.png"), "--detect", "--json", "--save-maps", str(maps))
    assert code == 0, err
    names = sorted(p.name for p in maps.iterdir())
    assert names == ["pair_0.npy", "pair_0.png", "pair_1.npy", "pair_1.png", "pair_faces.png"]
    m = np.load(maps / "pair_0.npy")
    assert m.shape == (256, 256) and m.dtype == np.float32
    painted = np.asarray(Image.open(maps / "pair_faces.png")).astype(float)
    photo = np.asarray(Image.open(photos / "pair.png")).astype(float)
    assert painted.shape == photo.shape
    diff = np.abs(painted - photo).mean(axis=2)
    # both faces are coloured (their centres changed), the photo's corners are not
    for r in json.loads(out):
        x0, y0, x1, y1 = r["box"]
        assert diff[int((y0 + y1) / 2), int((x0 + x1) / 2)] > 5
    assert diff[:5, :5].max() == 0


@needs_faces
def test_score_detect_ignore_exif(photos, capsys, tmp_path):
    from PIL import Image

    a = Image.open(photos / "astronaut.png").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    a.save(tmp_path / "camera.jpg", exif=exif, quality=95)
    code, out, _ = _run(capsys, "score", str(tmp_path / "camera.jpg"), "--detect", "--json")
    assert code == 0 and json.loads(out)[0]["face"] == 0  # rotated upright by default: found
    code, out, err = _run(capsys, "score", str(tmp_path / "camera.jpg"), "--detect", "--json", "--ignore-exif")
    assert code == 0 and json.loads(out)[0]["score"] is None and "no face found" in err


@needs_faces
def test_align_writes_crops_and_landmarks(photos, capsys, tmp_path):
    out_dir = tmp_path / "aligned"
    code, out, err = _run(capsys, "align", str(photos / "pair.png"), str(photos / "wall.png"),
                          str(photos / "astronaut.png"), "--out", str(out_dir), "--size", "256")
    assert code == 0, err
    assert "wall.png: no face found" in err
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert pngs == ["astronaut_0.png", "pair_0.png", "pair_1.png"]
    lm = np.load(out_dir / "landmarks68.npz")
    assert sorted(lm["names"].tolist()) == pngs and lm["landmarks"].shape == (3, 68, 2)
    assert lm["landmarks"].dtype == np.int16
    # the landmarks file is in crop pixels: re-detecting the crop finds the face there
    i = lm["names"].tolist().index("astronaut_0.png")
    again = fc.detect_faces(out_dir / "astronaut_0.png")[0].landmarks
    assert (again - torch.from_numpy(lm["landmarks"][i]).float()).norm(dim=1).mean() < 2.5
    assert len(out.strip().splitlines()) == 3
    from PIL import Image

    assert Image.open(out_dir / "pair_0.png").size == (256, 256)


@needs_faces
def test_align_facexlib_recipe_and_options(photos, capsys, tmp_path):
    code, _, err = _run(capsys, "align", str(photos / "pair.png"), "--out", str(tmp_path), "--recipe", "facexlib",
                        "--largest-only")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["pair_0.png"]
    lm = np.load(tmp_path / "landmarks68.npz")["landmarks"][0].astype(np.float32)
    eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])  # on facexlib's template (~193, 240), (319, 240)
    assert np.abs(eyes - np.array(fc.FACEXLIB_TEMPLATE_512[:2])).max() < 12
    code, _, err = _run(capsys, "align", str(photos / "cut.jpg"), "--out", str(tmp_path / "x"))
    assert code == 1 and "cut.jpg" in err


def test_usage_errors(photos, capsys, tmp_path):
    code, _, err = _run(capsys, "score", str(photos / "astronaut.png"), "--detect", "--max-faces", "0")
    assert code == 2 and "--max-faces" in err
    code, _, err = _run(capsys, "align", str(photos / "astronaut.png"))
    assert code == 2  # --out is required


def test_detect_without_the_extra_says_how_to_install_it(photos, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "dlib", None)
    for argv in (["score", str(photos / "astronaut.png"), "--detect"],
                 ["align", str(photos / "astronaut.png"), "--out", str(tmp_path)]):
        code, out, err = _run(capsys, *argv)
        assert code == 2 and 'pip install "ifqa-loss[faces]"' in err and out == ""
    code, out, err = _run(capsys, "score", str(photos / "astronaut.png"))  # plain scoring needs no extra
    assert code == 0 and out.strip()


def test_detect_refuses_to_run_under_torchrun(photos, capsys, monkeypatch):
    """Face scoring is one process: under torchrun every rank would score every photo and write the output."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["score", str(photos / "astronaut.png"), "--detect", "--json"]) == 2
    assert "--detect does not split photos across torchrun processes" in capsys.readouterr().err
