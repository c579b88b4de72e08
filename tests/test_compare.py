"""``ifqa compare``: matching by stem, the results.json ``pairs`` contract, the paired statistics, the face metrics,
and the HTML report in headless Chromium (console clean, every image decodes, sorting reorders the rows)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ifqa_loss import compare as cmp
from ifqa_loss.cli import main
from ifqa_loss.io import load_image, to_float, to_uint8
from ifqa_loss.train.degradations import degrade


def _faces(folder: Path, n: int, seed: int = 0, size: int = 48) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        base = np.stack([np.sin(xx / (3 + i % 4) + c) + np.cos(yy / (4 + i % 3) - c) for c in range(3)], -1)
        img = ((base + 2) * 55 + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)
        p = folder / f"face_{i:02d}.png"
        Image.fromarray(img).save(p)
        out.append(p)
    return out


@pytest.fixture(scope="module")
def methods(tmp_path_factory):
    """HQ faces, a lightly and a heavily blurred version of them, with names that do not all match."""
    root = tmp_path_factory.mktemp("compare")
    hq = _faces(root / "hq", 20)
    for name, sigma in (("light", 0.6), ("heavy", 2.5)):
        (root / name).mkdir()
        for p in hq:
            y = to_uint8(degrade(to_float(load_image(p)), "blur", sigma))[0]
            ext = ".jpg" if name == "heavy" else ".png"  # matched by stem: the format may differ
            Image.fromarray(y.permute(1, 2, 0).numpy()).save((root / name / p.stem).with_suffix(ext), quality=95)
    (root / "light" / "face_00.png").rename(root / "light" / "only_light.png")  # unmatched in both
    return root


def _run(argv, capsys):
    capsys.readouterr()
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def report(methods, lite_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    rc = main(["compare", str(methods / "light"), str(methods / "heavy"), "--names", "light", "heavy",
               "--reference", str(methods / "hq"), "--weights", str(lite_weights), "--report", str(out),
               "--no-progress", "--no-face-metrics"])
    return rc, out


def test_results_contract_and_unmatched_names(report, methods):
    rc, out = report
    assert rc == 1  # a name was unmatched: listed, and the exit status says so
    res = json.loads((out / "results.json").read_text())
    assert res["n_faces"] == 19
    assert res["unmatched"]["light"] == ["only_light"] and res["unmatched"]["heavy"] == ["face_00"]
    (pair,) = res["pairs"]
    assert set(pair) >= {"a", "b", "mean_diff", "p_permutation", "p_wilcoxon", "win_rate_a"}
    assert (pair["a"], pair["b"]) == ("light", "heavy")
    faces = res["faces"]
    a = np.array([f["ifqa"]["light"] for f in faces])
    b = np.array([f["ifqa"]["heavy"] for f in faces])
    assert pair["mean_diff"] == pytest.approx(float((a - b).mean()), abs=1e-12)
    assert pair["win_rate_a"] == pytest.approx(float(((a > b) + 0.5 * (a == b)).mean()))
    scipy_stats = pytest.importorskip("scipy.stats")
    assert pair["p_wilcoxon"] == pytest.approx(scipy_stats.wilcoxon(a, b).pvalue, rel=1e-9)
    # blur lowers PSNR and SSIM against the reference: the heavier blur is worse, every face
    psnr = res["pairs_by_metric"]["psnr"][0]
    assert psnr["mean_diff"] > 0 and psnr["win_rate_a"] == 1.0 and psnr["p_permutation"] < 0.01
    assert res["methods"]["light"]["ssim"]["value"] > res["methods"]["heavy"]["ssim"]["value"]


def test_psnr_ssim_are_torchmetrics(methods):
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    x = load_image(methods / "light" / "face_03.png")
    t = load_image(methods / "hq" / "face_03.png")
    got = cmp._reference_metrics(x, t)
    assert got["psnr"] == pytest.approx(float(peak_signal_noise_ratio(to_float(x), to_float(t), data_range=1.0)))
    assert got["ssim"] == pytest.approx(float(structural_similarity_index_measure(to_float(x), to_float(t),
                                                                                  data_range=1.0)))
    assert cmp._reference_metrics(t, t)["ssim"] == pytest.approx(1.0)


def test_report_is_self_contained(report):
    _, out = report
    text = (out / "report.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", text), "the report must work offline"
    srcs = re.findall(r"<img src='([^']+)'", text)
    assert len(srcs) == 19 * 2 * 2  # faces x methods x (thumbnail, heatmap)
    for s in srcs:
        Image.open(out / s).verify()
    assert "<svg" in text and "id='summary'" in text and "id='pairs'" in text


def test_usage_errors(methods, tmp_path, capsys):
    rc, _, err = _run(["compare", str(methods / "light"), "--report", str(tmp_path / "r")], capsys)
    assert rc == 2 and "two folders" in err
    rc, _, err = _run(["compare", str(methods / "light"), str(methods / "heavy"), "--names", "x",
                       "--report", str(tmp_path / "r")], capsys)
    assert rc == 2 and "--names" in err
    rc, _, err = _run(["compare", str(methods / "light"), str(tmp_path / "nope"), "--report", str(tmp_path / "r")],
                      capsys)
    assert rc == 2 and "nope" in err


def test_a_duplicated_stem_and_an_unreadable_face_are_reported(tmp_path, lite_weights, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _faces(a, 5, 1)
    _faces(b, 5, 2)
    shutil.copy(a / "face_01.png", a / "face_01.jpg")  # two files, one stem: which is the face?
    (b / "face_02.png").write_bytes(b"not an image")
    rc, stdout, err = _run(["compare", str(a), str(b), "--weights", str(lite_weights), "--report",
                            str(tmp_path / "r"), "--no-progress"], capsys)
    assert rc == 1
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["n_faces"] == 3 and "face_01" in res["problems"][0] and "face_02" in res["failed"][0]
    assert "face_01" in err and "face_02" in err


@pytest.mark.slow  # dlib's models load in about 10 s
def test_face_metrics_with_the_faces_extra(tmp_path):
    from ifqa_loss.faces import faces_available

    if not faces_available():
        pytest.skip('the faces extra is not installed: pip install "ifqa-loss[faces]"')
    skimage_data = pytest.importorskip("skimage.data")
    photo = skimage_data.astronaut()[20:260, 120:360]  # her face, about 240 px
    ref = tmp_path / "ref"
    ref.mkdir()
    Image.fromarray(photo).save(ref / "f.png")
    same, blur = tmp_path / "same", tmp_path / "blur"
    same.mkdir()
    blur.mkdir()
    Image.fromarray(photo).save(same / "f.png")
    y = to_uint8(degrade(to_float(torch.from_numpy(photo.copy()).permute(2, 0, 1)), "blur", 4.0))[0]
    Image.fromarray(y.permute(1, 2, 0).numpy()).save(blur / "f.png")
    c = cmp.compare([same, blur], ["same", "blur"], tmp_path / "out", ref)
    assert c.values["identity"]["same"][0] == pytest.approx(1.0, abs=1e-6)
    assert c.values["landmark_distance"]["same"][0] == 0.0
    assert c.values["identity"]["blur"][0] < 1.0 and c.values["landmark_distance"]["blur"][0] > 0.0


# ---------------------------------------------------------------- the report in headless Chromium


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: it reads commands on
    fd 3 and writes replies and events on fd 4, as NUL-terminated JSON), so no websocket client is needed."""

    def __init__(self, exe: str) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._evt_r, evt_w = os.pipe()
        self.profile = tempfile.mkdtemp(prefix="ifqa-chromium-")

        def wire() -> None:  # in the child: our pipe ends become its fds 3 and 4 (dup first: they may be 3 or 4)
            a, b = os.dup(cmd_r), os.dup(evt_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             f"--user-data-dir={self.profile}", "about:blank"],
            preexec_fn=wire, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(evt_w)
        self._buf, self._id, self.events = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable", session=self.session)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._evt_r, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def js(self, expression: str, wait: bool = False):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": wait},
                      session=self.session)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"{d.get('text')}: {d.get('exception', {}).get('description', '')}"[:300])
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
                out.append(json.dumps(p.get("args"))[:300])
            elif e.get("method") == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
                out.append(p["entry"].get("text", "")[:300])
        return out

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._evt_r)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser():
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium: install Debian's chromium package (apt-get install -y chromium; make test does "
                    "when it can) to test the HTML report in a browser")
    b = DevTools(exe)
    yield b
    b.close()


def _rows(b: DevTools) -> list[str]:
    return b.js("Array.from(document.querySelectorAll('#faces tbody tr')).map(r => r.dataset.name)")


def test_report_in_headless_chromium(report, browser):
    _, out = report
    browser.send("Page.navigate", {"url": (out / "report.html").resolve().as_uri()}, session=browser.session)
    deadline = time.time() + 60
    while browser.js("document.readyState") != "complete":
        assert time.time() < deadline, "the report did not finish loading"
        time.sleep(0.1)
    widths = browser.js("Promise.all(Array.from(document.images).map(i => i.decode().then(() => i.naturalWidth)))",
                        wait=True)
    assert len(widths) == 19 * 4 and min(widths) > 0  # every thumbnail and heatmap decoded
    res = json.loads((out / "results.json").read_text())
    worst = {f["name"]: min(f["ifqa"].values()) for f in res["faces"]}
    first = _rows(browser)
    assert first == sorted(worst, key=lambda n: (worst[n], n))  # worst face first by default
    browser.js("document.querySelector(\"#faces th[data-sort='name']\").click()")
    by_name = _rows(browser)
    assert by_name == sorted(worst) and by_name != first
    browser.js("document.querySelector(\"#faces th[data-sort='name']\").click()")
    assert _rows(browser) == sorted(worst, reverse=True)  # a second click reverses
    browser.js("document.querySelector(\"#faces th[data-sort='s1']\").click()")
    heavy = {f["name"]: f["ifqa"]["heavy"] for f in res["faces"]}
    assert _rows(browser) == sorted(heavy, key=lambda n: (heavy[n], n))
    browser.js("1")  # flush the events of the clicks
    assert browser.errors() == [], browser.errors()


def test_the_chromium_check_sees_errors(tmp_path, browser):
    """The check above would catch a broken page: a script error and a missing image are reported."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><img src='missing.png'><script>undefinedFunction()</script>"
                    "</body></html>")
    browser.send("Page.navigate", {"url": page.as_uri()}, session=browser.session)
    deadline = time.time() + 30
    while browser.js("document.readyState") != "complete" and time.time() < deadline:
        time.sleep(0.1)
    browser.js("1")
    errors = browser.errors()
    assert any("undefinedFunction" in e for e in errors) and any("missing.png" in e or "ERR_FILE" in e
                                                                 for e in errors), errors


@pytest.mark.slow  # about a minute: 12 faces, two degradations, the face metrics
def test_compare_degradations_benchmark_subset(tmp_path):
    from conftest import SHARED, run_benchmark

    if not (SHARED / "data" / "hq_eval").is_dir():
        pytest.skip(f"hq_eval not found under {SHARED / 'data'}")
    stdout, res = run_benchmark("compare_degradations.py", tmp_path / "r.json", "--subset", "12")
    assert res["passed"] and res["n_faces"] == 12 and "expected direction: yes" in stdout
    (pair,) = res["pairs"]
    assert (pair["a"], pair["b"]) == ("jpeg_q30", "blur_s2") and pair["mean_diff"] > 0
