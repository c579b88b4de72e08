"""``ifqa score``: output contract, failures, exit codes."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, write_png
from ifqa_loss.cli import main
from ifqa_loss.io import load_image, to_float


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Three good images of different sizes and modes, plus a non-image file."""
    d = tmp_path_factory.mktemp("cli_images")
    write_png(d / "b_face.png", size=(64, 64), seed=1)
    write_png(d / "a_face.jpg", size=(80, 72), seed=2)
    write_png(d / "c_face.png", size=(48, 64), seed=3, mode="L")
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.fixture(scope="module")
def api_scores(lite_model, image_dir):
    out = {}
    with torch.no_grad():
        for p in sorted(image_dir.glob("*_face.*")):
            out[str(p)] = lite_model(to_float(load_image(p))).score.item()
    return out


def run(argv, capsys):
    capsys.readouterr()
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_json_contract_and_input_order(lite_weights, image_dir, api_scores, capsys):
    order = [image_dir / "c_face.png", image_dir / "a_face.jpg", image_dir / "b_face.png"]  # not sorted
    rc, out, err = run(["score", *map(str, order), "--weights", str(lite_weights), "--json"], capsys)
    assert rc == 0, err
    result = json.loads(out)
    assert isinstance(result, list) and len(result) == 3
    assert all(isinstance(r, dict) and set(r) == {"path", "score"} for r in result)
    assert [r["path"] for r in result] == [str(p) for p in order]
    for r in result:
        assert isinstance(r["score"], float) and 0.0 <= r["score"] <= 1.0
        assert r["score"] == pytest.approx(api_scores[r["path"]], abs=1e-6)
    # unrounded: full float precision, not a 4- or 6-digit rounding
    assert any(r["score"] != round(r["score"], 6) for r in result)


def test_directory_expands_to_sorted_image_files(lite_weights, image_dir, api_scores, capsys):
    rc, out, err = run(["score", str(image_dir), "--weights", str(lite_weights), "--json"], capsys)
    assert rc == 0, err
    result = json.loads(out)
    expected = sorted(str(image_dir / n) for n in ("a_face.jpg", "b_face.png", "c_face.png"))
    assert [r["path"] for r in result] == expected  # notes.txt skipped, sorted
    for r in result:
        assert r["score"] == pytest.approx(api_scores[r["path"]], abs=1e-6)


def test_batch_size_does_not_change_scores(lite_weights, image_dir, capsys):
    runs = []
    for bs in ("1", "2", "8"):
        rc, out, err = run(["score", str(image_dir), "--weights", str(lite_weights), "--json", "--batch-size", bs],
                           capsys)
        assert rc == 0, err
        runs.append(json.loads(out))
    for other in runs[1:]:
        assert [r["path"] for r in other] == [r["path"] for r in runs[0]]
        np.testing.assert_allclose([r["score"] for r in other], [r["score"] for r in runs[0]], atol=1e-6, rtol=0)


def test_bad_files_exit_1_and_good_files_still_scored(lite_weights, image_dir, tmp_path, api_scores, capsys):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    good1, good2 = image_dir / "a_face.jpg", image_dir / "b_face.png"
    argv = ["score", str(good1), str(corrupt), str(empty), str(missing), str(good2), "--weights", str(lite_weights),
            "--json", "--batch-size", "2"]
    rc, out, err = run(argv, capsys)
    assert rc == 1
    result = json.loads(out)
    assert [r["path"] for r in result] == [str(good1), str(good2)]
    for r in result:
        assert r["score"] == pytest.approx(api_scores[r["path"]], abs=1e-6)
    lines = err.strip().splitlines()
    for bad in (corrupt, empty, missing):
        line = next((ln for ln in lines if str(bad) in ln), None)
        assert line is not None, f"{bad} not named on stderr:\n{err}"
        reason = line.split(str(bad), 1)[1].strip(" :")
        assert len(reason) >= 5, line  # a reason follows the path
    assert any(str(missing) in ln and "no such file" in ln for ln in lines)
    assert any(str(corrupt) in ln and ("not a recognised image" in ln or "corrupt" in ln) for ln in lines)


def test_all_good_exit_0(lite_weights, image_dir, capsys):
    rc, out, err = run(["score", str(image_dir / "b_face.png"), "--weights", str(lite_weights)], capsys)
    assert rc == 0, err
    score, path = out.strip().split("\t")
    assert path == str(image_dir / "b_face.png") and 0.0 <= float(score) <= 1.0


@pytest.mark.parametrize("extra, needs_weights", [
    (["--bogus-flag"], True),
    (["--batch-size", "0"], True),
    (["--batch-size", "-3"], True),
    (["--weights", "/nonexistent/dir/IFQA_Metric.pth"], False),
    (["--backbone", "resnet"], True),
    (["--json", "--csv", "x.csv"], True),
])
def test_usage_errors_exit_2(lite_weights, image_dir, capsys, extra, needs_weights):
    argv = ["score", str(image_dir / "b_face.png"), *extra]
    if needs_weights:
        argv += ["--weights", str(lite_weights)]
    rc, out, err = run(argv, capsys)
    assert rc == 2
    assert out == ""
    assert err.strip()
    if "--weights" in extra:
        assert "/nonexistent/dir/IFQA_Metric.pth" in err
    if "0" in extra:
        assert "--batch-size" in err


def test_no_arguments_is_a_usage_error(capsys):
    rc, _, err = run([], capsys)
    assert rc == 2 and "usage" in err.lower()


def test_csv_output(lite_weights, image_dir, tmp_path, capsys):
    rc, out, err = run(["score", str(image_dir), "--weights", str(lite_weights), "--json"], capsys)
    assert rc == 0, err
    expected = json.loads(out)
    csv_path = tmp_path / "scores.csv"
    rc, out, err = run(["score", str(image_dir), "--weights", str(lite_weights), "--csv", str(csv_path)], capsys)
    assert rc == 0, err
    assert out == ""  # results go to the file
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "score"]
    assert [r[0] for r in rows[1:]] == [e["path"] for e in expected]
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], [e["score"] for e in expected], atol=1e-7, rtol=0)
    assert all(len(r[1]) > 8 for r in rows[1:])  # unrounded
    assert not [p.name for p in tmp_path.iterdir() if p.name != "scores.csv"]  # no temporary files left


def test_save_maps_with_clashing_stems(lite_weights, tmp_path, capsys):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    a = write_png(tmp_path / "one" / "face.png", seed=4)
    b = write_png(tmp_path / "two" / "face.jpg", size=(40, 56), seed=5)
    maps = tmp_path / "maps"
    rc, out, err = run(["score", str(a), str(b), "--weights", str(lite_weights), "--json", "--save-maps", str(maps)],
                       capsys)
    assert rc == 0, err
    result = json.loads(out)
    assert sorted(p.name for p in maps.iterdir()) == ["face.npy", "face.png", "face_2.npy", "face_2.png"]
    for stem, r in zip(("face", "face_2"), result):
        m = np.load(maps / f"{stem}.npy")
        assert m.dtype == np.float32 and m.shape == (256, 256)
        assert float(m.mean()) == pytest.approx(r["score"], abs=1e-6)


def test_python_m_entry_point(lite_weights, image_dir, api_scores):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    img = image_dir / "b_face.png"
    proc = subprocess.run([sys.executable, "-m", "ifqa_loss", "score", str(img), "--weights", str(lite_weights),
                           "--json"], capture_output=True, text=True, env=env, cwd=str(REPO), timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [r["path"] for r in result] == [str(img)]
    assert result[0]["score"] == pytest.approx(api_scores[str(img)], abs=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_a_usage_error(lite_weights, image_dir, capsys):
    rc, out, err = run(["score", str(image_dir / "b_face.png"), "--weights", str(lite_weights), "--device", "cuda"],
                       capsys)
    assert rc == 2 and out == "" and "CUDA is not available" in err


def test_save_maps_never_overwrites_an_input(lite_weights, tmp_path, capsys):
    img = write_png(tmp_path / "x.png", seed=6)
    original = img.read_bytes()
    rc, out, err = run(["score", str(img), "--weights", str(lite_weights), "--json", "--save-maps", str(tmp_path)],
                       capsys)
    assert rc == 0, err
    assert img.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png", "x_2.npy", "x_2.png"]


def test_decoding_modes(tmp_path):
    from PIL import Image

    rgba = np.zeros((20, 24, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: alpha is dropped, not composited
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    t = load_image(tmp_path / "rgba.png")
    assert t.shape == (3, 20, 24) and t.dtype == torch.uint8
    assert t[:, 0, 0].tolist() == [200, 0, 0]

    gray = (np.arange(20 * 24).reshape(20, 24) % 256).astype(np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    t = load_image(tmp_path / "gray.png")
    assert t.shape == (3, 20, 24) and (t[0] == t[1]).all() and (t[1] == t[2]).all()
    assert np.array_equal(t[0].numpy(), gray)

    g16 = np.full((20, 24), 65535, np.uint16)
    g16[0, 0] = 0
    Image.fromarray(g16).save(tmp_path / "g16.png")
    t = load_image(tmp_path / "g16.png")
    assert t.shape == (3, 20, 24) and int(t.max()) == 255 and int(t[0, 0, 0]) == 0


def test_cpu_scoring_reuses_freed_memory(lite_weights, image_dir, capsys, monkeypatch):
    """`ifqa score` on the CPU switches on the allocator setting (cpu_memory.py) before it scores."""
    import ifqa_loss.cli as cli

    calls = []
    monkeypatch.setattr(cli, "reuse_freed_memory", lambda: calls.append(1) or True)
    rc, out, err = run(["score", str(image_dir / "b_face.png"), "--weights", str(lite_weights), "--json"], capsys)
    assert rc == 0, err
    assert calls == [1] and len(json.loads(out)) == 1
