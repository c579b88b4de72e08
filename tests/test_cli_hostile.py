"""``ifqa score`` against a hostile file system: broken files, links, permissions, interrupts, big folders.

Exit codes (ifqa_loss/cli.py): 0 all scored, 1 any file failed, 2 usage error, 130 interrupted.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ifqa_loss.cli as cli
from conftest import REPO, write_png
from ifqa_loss.cli import main

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
#: Found by fuzz/fuzz_decode.py: an 80-byte GIF that declares 50629 x 2757 pixels (139.6 Mpx), between PIL's
#: warning (89.5 Mpx) and error (179 Mpx) limits, so PIL decodes it: 419 MB of RGB from 80 bytes.
PIXEL_BOMB_GIF = base64.b64decode("R0lGODdhxcXFCgALCwsLCwsLOgsACwsLCwsLCwsMAIEAAP///wAAAAAAAAAAACwAAAAACgAMAAAIFAAB"
                                  "CBxIsKDBgwgTKlzIsKHDh0EBADs=")


def run(argv, capsys):
    capsys.readouterr()
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _write_jpeg(path: Path, size=(64, 64), seed: int = 0) -> Path:
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(arr, "RGB").save(path, quality=90)
    return path


def _truncate(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def _snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every regular file under ``folder`` (links not followed)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _no_leftovers(folder: Path) -> None:
    """No temporary files; every output present is complete (loads)."""
    from PIL import Image

    names = [p.name for p in folder.iterdir()]
    assert not [n for n in names if n.endswith(".part") or n.startswith(".")], names
    for p in folder.iterdir():
        if p.suffix == ".npy":
            m = np.load(p)
            assert m.shape == (256, 256) and m.dtype == np.float32
        elif p.suffix == ".png":
            with Image.open(p) as im:
                im.load()


# ---------------------------------------------------------------- broken files


def test_broken_files_are_named_with_a_reason_and_the_rest_is_scored(lite_weights, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    good_png = write_png(d / "good.png", seed=1)
    good_jpg = _write_jpeg(d / "good.jpg", seed=2)
    bad = {  # name -> accepted reasons
        "zero.png": ("not a recognised image format",),
        "trunc.png": ("truncated",),
        "trunc.jpg": ("truncated",),
        "text.png": ("not a recognised image format",),
        "header_only.png": ("not a recognised image format", "truncated"),  # PIL cannot identify it without IDAT
    }
    (d / "zero.png").write_bytes(b"")
    _truncate(good_png, d / "trunc.png", 0.5)
    _truncate(good_jpg, d / "trunc.jpg", 0.5)
    (d / "text.png").write_text("this is not a PNG, just text with a .png name\n")
    (d / "header_only.png").write_bytes(good_png.read_bytes()[:33])  # signature + IHDR, no pixel data
    rc, out, err = run(["score", str(d), "--weights", str(lite_weights), "--json", "--no-progress"], capsys)
    assert rc == 1
    assert "Traceback" not in err
    assert [r["path"] for r in json.loads(out)] == [str(good_jpg), str(good_png)]
    lines = err.strip().splitlines()
    for name, reasons in bad.items():
        line = [ln for ln in lines if str(d / name) in ln]
        assert len(line) == 1, f"{name} not reported exactly once:\n{err}"
        assert any(r in line[0] for r in reasons), line[0]


def test_all_files_broken_exits_1_with_empty_result(lite_weights, tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # signature only
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0")  # JPEG SOI + APP0 marker, nothing else
    rc, out, err = run(["score", str(tmp_path), "--weights", str(lite_weights), "--json"], capsys)
    assert rc == 1 and json.loads(out) == [] and "Traceback" not in err
    assert str(tmp_path / "a.png") in err and str(tmp_path / "b.jpg") in err


@pytest.mark.skipif(IS_ROOT, reason="root can read a chmod 000 file")
def test_unreadable_file(lite_weights, tmp_path, capsys):
    good = write_png(tmp_path / "good.png", seed=1)
    locked = write_png(tmp_path / "locked.png", seed=2)
    locked.chmod(0)
    try:
        rc, out, err = run(["score", str(good), str(locked), "--weights", str(lite_weights), "--json"], capsys)
    finally:
        locked.chmod(0o644)
    assert rc == 1
    assert [r["path"] for r in json.loads(out)] == [str(good)]
    assert f"{locked}: permission denied" in err


def test_permission_denied_is_reported(lite_weights, tmp_path, capsys, monkeypatch):
    """The same as a chmod 000 file, but it also runs as root: the decoder's open fails with EACCES."""
    from PIL import Image

    good = write_png(tmp_path / "good.png", seed=1)
    locked = write_png(tmp_path / "locked.png", seed=2)
    real_open = Image.open

    def guarded_open(fp, *args, **kwargs):
        if os.fspath(fp) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", guarded_open)
    rc, out, err = run(["score", str(good), str(locked), "--weights", str(lite_weights), "--json"], capsys)
    assert rc == 1
    assert [r["path"] for r in json.loads(out)] == [str(good)]
    assert f"{locked}: permission denied" in err


def test_decoder_crash_is_a_per_file_failure(lite_weights, tmp_path, capsys, monkeypatch):
    """An unexpected exception inside the decoder fails that file only; no traceback."""
    import ifqa_loss.io as P

    good = write_png(tmp_path / "good.png", seed=1)
    boom = write_png(tmp_path / "boom.png", seed=2)
    real = P.load_image

    def flaky(path, apply_exif=False):
        if str(path) == str(boom):
            raise IndexError("decoder bug")
        return real(path, apply_exif=apply_exif)

    monkeypatch.setattr(P, "load_image", flaky)
    rc, out, err = run(["score", str(boom), str(good), "--weights", str(lite_weights), "--json"], capsys)
    assert rc == 1 and [r["path"] for r in json.loads(out)] == [str(good)]
    assert f"{boom}: cannot decode (IndexError: decoder bug)" in err and "Traceback" not in err


def test_pixel_bomb_is_refused_without_decoding(lite_weights, tmp_path):
    """The CLI refuses an image over PIL's pixel limit as a per-file failure, before allocating its pixels."""
    bomb = tmp_path / "bomb.gif"
    bomb.write_bytes(PIXEL_BOMB_GIF)
    good = write_png(tmp_path / "good.png", seed=1)
    rc, rss_kib, _ = _measured_run(["score", str(bomb), str(good), "--weights", str(lite_weights), "--json",
                                    "--no-progress"], tmp_path / "out.json")
    err = (tmp_path / "out.err").read_text()
    assert rc == 1, err[-3000:]
    assert [r["path"] for r in json.loads((tmp_path / "out.json").read_text())] == [str(good)]
    assert f"{bomb}: refused, too many pixels" in err and "Traceback" not in err
    assert rss_kib < 1024 * 1024, f"peak RSS {rss_kib / 1024:.0f} MiB: the bomb was decoded"  # 419 MB RGB + float


_LOAD_BOMB = r"""
import resource, sys
from ifqa_loss.io import ImageDecodeError, load_image
try:
    t = load_image(sys.argv[1])
    print("decoded", tuple(t.shape), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "MiB")
except ImageDecodeError as e:
    print("refused:", e)
"""


def test_load_image_refuses_a_pixel_bomb(tmp_path):
    bomb = tmp_path / "bomb.gif"
    bomb.write_bytes(PIXEL_BOMB_GIF)
    proc = subprocess.run([sys.executable, "-c", _LOAD_BOMB, str(bomb)], capture_output=True, text=True, env=_env(),
                          cwd=str(REPO), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("refused:"), proc.stdout


# ---------------------------------------------------------------- folders and links


def test_directory_named_like_an_image_is_not_a_file(lite_weights, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    good = write_png(d / "good.png", seed=1)
    (d / "x.png").mkdir()  # a folder with an image suffix
    inner = write_png(d / "x.png" / "inner.png", seed=2)
    os.symlink(d / "x.png", d / "link.jpg")  # a link to a folder, with an image suffix
    for extra in ([], ["--recursive"]):
        rc, out, err = run(["score", str(d), "--weights", str(lite_weights), "--json", *extra], capsys)
        assert rc == 0, err
        paths = [r["path"] for r in json.loads(out)]
        assert paths == ([str(good)] if not extra else [str(good), str(inner)]), extra
    # named explicitly, the folder x.png is a folder to expand
    rc, out, err = run(["score", str(d / "x.png"), "--weights", str(lite_weights), "--json"], capsys)
    assert rc == 0, err
    assert [r["path"] for r in json.loads(out)] == [str(inner)]


def _link_farm(root: Path) -> list[str]:
    """Good images plus folder links that loop (to itself, to its parent, to the root) and a link chain."""
    (root / "sub" / "deeper").mkdir(parents=True)
    good = [write_png(root / "a.png", seed=1), write_png(root / "sub" / "b.png", seed=2),
            write_png(root / "sub" / "deeper" / "c.png", seed=3)]
    os.symlink(".", root / "self_loop")
    os.symlink("..", root / "sub" / "up")
    os.symlink(root, root / "sub" / "deeper" / "to_root")
    os.symlink("sub", root / "sub_alias")
    return sorted(str(p) for p in good)


def test_symlink_loops_with_recursive_terminate(lite_weights, tmp_path):
    """Folder links that form cycles are not followed: the scan ends, each image is scored once, exit 0."""
    root = tmp_path / "farm"
    root.mkdir()
    good = _link_farm(root)
    proc = subprocess.run([sys.executable, "-m", "ifqa_loss", "score", str(root), "--recursive", "--weights",
                           str(lite_weights), "--json", "--no-progress"], capture_output=True, text=True, env=_env(),
                          cwd=str(REPO), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["path"] for r in json.loads(proc.stdout)) == good
    assert "Traceback" not in proc.stderr


def test_file_link_loops_and_dangling_links_are_failures(lite_weights, tmp_path, capsys):
    """Links to image names that cannot be opened are real failures (exit 1), named with a reason."""
    root = tmp_path / "farm"
    root.mkdir()
    good = _link_farm(root)
    os.symlink("self.png", root / "self.png")
    os.symlink("b_loop.png", root / "a_loop.png")
    os.symlink("a_loop.png", root / "b_loop.png")
    os.symlink("nowhere.png", root / "sub" / "dangling.png")
    rc, out, err = run(["score", str(root), "--recursive", "--weights", str(lite_weights), "--json"], capsys)
    assert rc == 1
    assert sorted(r["path"] for r in json.loads(out)) == good
    lines = err.strip().splitlines()
    for name in ("self.png", "a_loop.png", "b_loop.png"):
        line = [ln for ln in lines if str(root / name) in ln]
        assert len(line) == 1 and "symbolic links" in line[0], err
    assert any(str(root / "sub" / "dangling.png") in ln and "no such file" in ln for ln in lines), err
    assert "Traceback" not in err
    # given directly, a dangling link is reported too, and does not hide the good file's score
    rc, out, err = run(["score", str(root / "sub" / "dangling.png"), good[0], "--weights", str(lite_weights),
                        "--json"], capsys)
    assert rc == 1 and [r["path"] for r in json.loads(out)] == [good[0]]


# ---------------------------------------------------------------- outputs


def test_save_maps_into_the_input_folder_never_overwrites_an_input(lite_weights, tmp_path, capsys):
    d = tmp_path / "faces"
    d.mkdir()
    write_png(d / "a.png", seed=1)
    _write_jpeg(d / "a.jpg", seed=2)
    write_png(d / "a_2.png", seed=3)  # the name a second "a" map would take
    write_png(d / "b.png", seed=4)
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.symlink(d / "b.png", other / "b_link.png")  # an input reached through a link
    before = _snapshot(d)
    argv = ["score", str(d), str(other / "b_link.png"), "--weights", str(lite_weights), "--json",
            "--save-maps", str(d)]
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    results = json.loads(out)
    assert len(results) == 5
    after = _snapshot(d)
    assert {k: after[k] for k in before} == before, "an input file was modified"
    new = sorted(set(after) - set(before))
    assert len(new) == 10 and all(n.endswith((".npy", ".png")) for n in new), new
    _no_leftovers(d)
    # a second run scans the first run's heat-map PNGs as inputs, and still overwrites no input
    before = _snapshot(d)
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    after = _snapshot(d)
    assert {k: after[k] for k in before if not k.endswith(".npy")} == {k: v for k, v in before.items()
                                                                          if not k.endswith(".npy")}


@pytest.mark.parametrize("target", ["missing_dir", "file_as_dir", "is_a_dir", "proc"])
def test_csv_into_a_bad_place_is_a_usage_error_before_scoring(lite_weights, tmp_path, capsys, monkeypatch, target):
    good = write_png(tmp_path / "good.png", seed=1)
    if target == "proc" and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc")
    csv_path = {
        "missing_dir": tmp_path / "no" / "such" / "dir" / "scores.csv",
        "file_as_dir": good / "scores.csv",
        "is_a_dir": tmp_path,
        "proc": Path("/proc/scores.csv"),  # a folder where no file can be created, even by root
    }[target]

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr("ifqa_loss.core.IFQA.__init__", must_not_load)
    rc, out, err = run(["score", str(good), "--weights", str(lite_weights), "--csv", str(csv_path)], capsys)
    assert rc == 2
    assert out == "" and "Traceback" not in err
    assert err.startswith("ifqa: error: --csv")
    assert str(csv_path.parent if target != "is_a_dir" else csv_path) in err or "/proc" in err
    assert not csv_path.exists() or csv_path.is_dir()


@pytest.mark.skipif(IS_ROOT, reason="root can write into a read-only folder")
def test_csv_into_a_read_only_folder(lite_weights, tmp_path, capsys):
    good = write_png(tmp_path / "good.png", seed=1)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, out, err = run(["score", str(good), "--weights", str(lite_weights), "--csv", str(ro / "s.csv")], capsys)
    finally:
        ro.chmod(0o755)
    assert rc == 2 and "cannot write in" in err and "Traceback" not in err


@pytest.mark.parametrize("target", ["existing_file", "under_a_file"])
def test_save_maps_into_a_bad_place_is_a_usage_error(lite_weights, tmp_path, capsys, target):
    good = write_png(tmp_path / "good.png", seed=1)
    maps = good if target == "existing_file" else good / "maps"
    rc, out, err = run(["score", str(good), "--weights", str(lite_weights), "--save-maps", str(maps)], capsys)
    assert rc == 2 and out == "" and "Traceback" not in err
    assert "--save-maps" in err and str(maps) in err
    assert good.is_file()


def test_disk_full_while_writing_maps_fails_those_files_only(lite_weights, tmp_path, capsys, monkeypatch):
    imgs = [str(write_png(tmp_path / f"{i}.png", seed=i)) for i in range(3)]
    maps = tmp_path / "maps"
    real = cli._atomic_write

    def full_disk(path, data):
        if path.stem == "1":
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(cli, "_atomic_write", full_disk)
    rc, out, err = run(["score", *imgs, "--weights", str(lite_weights), "--json", "--save-maps", str(maps)], capsys)
    assert rc == 1 and "Traceback" not in err
    assert len(json.loads(out)) == 3
    assert "1.png: cannot write its map" in err and "No space left" in err
    assert sorted(p.name for p in maps.iterdir()) == ["0.npy", "0.png", "2.npy", "2.png"]


def test_results_file_write_failure_exits_1(lite_weights, tmp_path, capsys, monkeypatch):
    good = write_png(tmp_path / "good.png", seed=1)

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "_atomic_write", full_disk)
    rc, out, err = run(["score", str(good), "--weights", str(lite_weights), "--csv", str(tmp_path / "s.csv")], capsys)
    assert rc == 1 and "cannot write the results" in err and "Traceback" not in err
    assert not (tmp_path / "s.csv").exists()


# ---------------------------------------------------------------- Ctrl-C


@pytest.fixture
def many_images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(6):
        write_png(d / f"{i:02d}.png", size=(32, 32), seed=i)
    return d


def _check_interrupted(rc, out, err, maps: Path | None, csv_path: Path | None):
    assert rc == 130
    assert "interrupted" in err and "Traceback" not in err
    assert out == ""  # no partial JSON/text results
    if maps is not None:
        _no_leftovers(maps)
    if csv_path is not None:
        assert not csv_path.exists()
        assert not [p.name for p in csv_path.parent.iterdir() if p.name.endswith(".part")]


def test_ctrl_c_between_maps(lite_weights, many_images, tmp_path, capsys, monkeypatch):
    maps, csv_path = tmp_path / "maps", tmp_path / "out" / "scores.csv"
    csv_path.parent.mkdir()
    real, calls = cli._save_map, []

    def interrupt_on_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, "_save_map", interrupt_on_second)
    rc, out, err = run(["score", str(many_images), "--weights", str(lite_weights), "--batch-size", "2",
                        "--save-maps", str(maps), "--csv", str(csv_path)], capsys)
    _check_interrupted(rc, out, err, maps, csv_path)
    assert sorted(p.name for p in maps.iterdir()) == ["00.npy", "00.png"]


def test_ctrl_c_in_the_middle_of_writing_a_file(lite_weights, many_images, tmp_path, capsys, monkeypatch):
    """Interrupted after the temporary file is written but before it is renamed: the .part file is removed."""
    maps = tmp_path / "maps"
    real, calls = os.replace, []

    def interrupt_on_third(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == 3:
            assert str(src).endswith(".part") and Path(src).exists()  # a temp file is on disk right now
            raise KeyboardInterrupt
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", interrupt_on_third)
    rc, out, err = run(["score", str(many_images), "--weights", str(lite_weights), "--json",
                        "--save-maps", str(maps)], capsys)
    monkeypatch.undo()
    _check_interrupted(rc, out, err, maps, None)
    assert len(calls) == 3
    assert sorted(p.name for p in maps.iterdir()) == ["00.npy", "00.png"]


def test_ctrl_c_inside_the_network(lite_weights, many_images, tmp_path, capsys, monkeypatch):
    from ifqa_loss.models.unet import UNetDiscriminator

    csv_path = tmp_path / "scores.csv"
    real, calls = UNetDiscriminator.forward, []

    def interrupt_on_second(self, x):
        calls.append(x.shape[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr(UNetDiscriminator, "forward", interrupt_on_second)
    rc, out, err = run(["score", str(many_images), "--weights", str(lite_weights), "--batch-size", "2",
                        "--csv", str(csv_path)], capsys)
    _check_interrupted(rc, out, err, None, csv_path)
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == []


def test_real_sigint_exits_130_and_leaves_no_partial_files(lite_weights, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(400):
        write_png(d / f"{i:03d}.png", size=(32, 32), seed=i)
    maps, csv_path = tmp_path / "maps", tmp_path / "scores.csv"
    proc = subprocess.Popen([sys.executable, "-m", "ifqa_loss", "score", str(d), "--weights", str(lite_weights),
                             "--batch-size", "1", "--no-progress", "--save-maps", str(maps), "--csv", str(csv_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=str(REPO),
                            # a CI job started in the background inherits SIGINT=ignored; give the child the default
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if maps.is_dir() and len(list(maps.glob("*.npy"))) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err and "Traceback" not in err
    assert out == ""
    assert not csv_path.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
    _no_leftovers(maps)
    assert len(list(maps.glob("*.npy"))) < 400


# ---------------------------------------------------------------- big folders


_PEAK_WRAPPER = r"""
import atexit, runpy, sys
def _report(path=sys.argv[1]):
    try:  # VmHWM: this process's own peak; ru_maxrss also counts the forking (pytest) process's RSS
        with open("/proc/self/status") as f, open(path, "w") as out:
            out.write(next(ln.split()[1] for ln in f if ln.startswith("VmHWM:")))
    except (OSError, StopIteration):
        pass
atexit.register(_report)
sys.argv = ["ifqa"] + sys.argv[2:]
runpy.run_module("ifqa_loss", run_name="__main__")
"""


def _measured_run(argv: list[str], stdout_path: Path) -> tuple[int, int, float]:
    """Run ``python -m ifqa_loss ARGV``; return (exit code, its peak RSS in KiB, seconds)."""
    t0 = time.monotonic()
    peak_file = stdout_path.with_suffix(".peak")
    with open(stdout_path, "wb") as out, open(stdout_path.with_suffix(".err"), "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", _PEAK_WRAPPER, str(peak_file), *argv], stdout=out, stderr=err,
                                env=_env(), cwd=str(REPO))
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = int(peak_file.read_text()) if peak_file.exists() else usage.ru_maxrss  # fallback: an upper bound
    return proc.returncode, peak, time.monotonic() - t0


@pytest.mark.slow
def test_5000_images_stream_with_bounded_memory(lite_weights, tmp_path):
    """5,000 images are scored with the memory of 10: decoding is streamed, not collected first."""
    from PIL import Image

    big, small = tmp_path / "big", tmp_path / "small"
    big.mkdir()
    small.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5000):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB").save(big / f"{i:05d}.png")
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB").save(small / f"{i:05d}.png")
    common = ["--weights", str(lite_weights), "--json", "--no-progress", "--batch-size", "8"]
    rc_s, rss_small, t_small = _measured_run(["score", str(small), *common], tmp_path / "small.json")
    assert rc_s == 0, (tmp_path / "small.err").read_text()[-3000:]
    rc, rss_big, t_big = _measured_run(["score", str(big), *common], tmp_path / "big.json")
    assert rc == 0, (tmp_path / "big.err").read_text()[-3000:]
    result = json.loads((tmp_path / "big.json").read_text())
    assert len(result) == 5000
    assert all(0.0 <= r["score"] <= 1.0 for r in result)
    print(f"peak RSS: 10 images {rss_small / 1024:.0f} MiB ({t_small:.0f} s), "
          f"5000 images {rss_big / 1024:.0f} MiB ({t_big:.0f} s)")
    assert rss_big < 1.5 * 1024 * 1024  # KiB: under 1.5 GiB
    assert rss_big - rss_small < 256 * 1024  # the folder's size barely matters
