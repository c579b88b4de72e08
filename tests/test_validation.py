"""Bad inputs and bad weights give clear errors; weight files load safely; downloads are atomic."""
from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import ifqa_loss.weights as W
from conftest import face_like_batch
from ifqa_loss import IFQA, IFQALoss, IFQAMetric, WeightsError
from ifqa_loss.models import build_model

# ---------------------------------------------------------------- input tensors


@pytest.fixture(scope="module")
def entry_points(lite_weights):
    """The three public ways images enter the model."""
    model = IFQA(weights=lite_weights)
    loss = IFQALoss(weights=lite_weights)
    metric = IFQAMetric(weights=lite_weights)
    return {"IFQA": model, "IFQALoss": loss, "IFQAMetric.update": metric.update}


ENTRY_NAMES = ["IFQA", "IFQALoss", "IFQAMetric.update"]


def _nonfinite():
    x = torch.rand(2, 3, 32, 32)
    x[0, 0, 0, 0] = float("nan")
    x[1, 2, 5, 5] = float("nan")
    x[1, 1, 3, 3] = float("inf")
    return x


BAD_INPUTS = {
    "3-D tensor": (lambda: torch.rand(3, 64, 64), ValueError, [r"\(N, 3, H, W\)", r"\(3, 64, 64\)", "unsqueeze"]),
    "5-D tensor": (lambda: torch.rand(1, 1, 3, 64, 64), ValueError, [r"\(N, 3, H, W\)", r"\(1, 1, 3, 64, 64\)"]),
    "4 channels": (lambda: torch.rand(1, 4, 64, 64), ValueError, [r"3 \(RGB\) channels", r"\(1, 4, 64, 64\)"]),
    "1 channel": (lambda: torch.rand(2, 1, 64, 64), ValueError, [r"3 \(RGB\) channels"]),
    "uint8": (lambda: torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8), TypeError,
              ["dtype", "torch.uint8", r"/ 255"]),
    "int64": (lambda: torch.randint(0, 2, (1, 3, 64, 64)), TypeError, ["dtype", "torch.int64"]),
    "bool": (lambda: torch.ones(1, 3, 64, 64, dtype=torch.bool), TypeError, ["dtype"]),
    "NaN/Inf": (_nonfinite, ValueError, [r"3 non-finite values", r"2 NaN", r"1 Inf"]),
    "empty batch": (lambda: torch.rand(0, 3, 64, 64), ValueError, ["empty batch"]),
    "15 px high": (lambda: torch.rand(1, 3, 15, 64), ValueError, ["15x64", "16x16"]),
    "8 px wide": (lambda: torch.rand(1, 3, 64, 8), ValueError, ["64x8", "16x16"]),
    "numpy array": (lambda: np.random.rand(1, 3, 64, 64).astype(np.float32), TypeError, ["torch.Tensor", "ndarray"]),
    "list": (lambda: [[0.5]], TypeError, ["torch.Tensor", "list"]),
}


@pytest.mark.parametrize("entry", ENTRY_NAMES)
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_clear_error(entry_points, entry, case):
    make, exc, patterns = BAD_INPUTS[case]
    with pytest.raises(exc) as info:
        entry_points[entry](make())
    msg = str(info.value)
    for pat in patterns:
        assert re.search(pat, msg), f"{pat!r} not in {msg!r}"


def test_check_finite_false_skips_the_count(lite_weights):
    x = _nonfinite()
    out = IFQA(weights=lite_weights, check_finite=False)(x)  # documented opt-out: no error, NaN propagates
    assert out.score.shape == (2,)
    assert torch.isnan(out.score).any()


@pytest.mark.parametrize("cls", [IFQA, IFQALoss, IFQAMetric])
@pytest.mark.parametrize("input_range, pattern", [
    ((1, 0), "low < high"),
    ((0, 0), "low < high"),
    ((0, float("inf")), "finite"),
    ((float("nan"), 1), "finite"),
    ((0,), "pair"),
    ((0, 1, 2), "pair"),
    (("a", "b"), "pair"),
    (None, "pair"),
    (1.0, "pair"),
])
def test_bad_input_range_at_construction(lite_weights, cls, input_range, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(weights=lite_weights, input_range=input_range)


@pytest.mark.parametrize("reduction", ["avg", "Mean", "", None])
def test_bad_reduction_at_construction(lite_weights, reduction):
    with pytest.raises(ValueError, match="reduction must be one of") as info:
        IFQALoss(weights=lite_weights, reduction=reduction)
    assert repr(reduction) in str(info.value)


@pytest.mark.parametrize("wmap, exc, pattern", [
    (torch.ones(256, 256, dtype=torch.long), TypeError, "floating-point"),
    (np.ones((256, 256), dtype=np.float32), TypeError, "floating-point"),
    (-torch.ones(256, 256), ValueError, "non-negative"),
    (torch.full((256, 256), float("nan")), ValueError, "finite"),
    (torch.zeros(256, 256), ValueError, "positive sum"),
    (torch.ones(256), ValueError, r"\(256,\)"),
])
def test_bad_weight_map_at_construction(lite_weights, wmap, exc, pattern):
    with pytest.raises(exc, match=pattern):
        IFQALoss(weights=lite_weights, weight_map=wmap)


def test_weight_map_batch_mismatch(lite_weights):
    loss = IFQALoss(weights=lite_weights, weight_map=torch.ones(3, 256, 256))
    with pytest.raises(ValueError, match=r"N in \(1, 2\)"):
        loss(torch.rand(2, 3, 32, 32))


def test_unknown_backbone(lite_weights):
    with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
        IFQA(backbone="resnet", weights=lite_weights)


# ---------------------------------------------------------------- weight files


@pytest.fixture(scope="module")
def lite_state(lite_weights):
    state, meta = W.read_state_dict(lite_weights)
    assert meta["ifqa.backbone"] == "lite"
    return state


@pytest.fixture(scope="module")
def probe():
    return face_like_batch(2, size=48, seed=11)


@pytest.fixture(scope="module")
def reference_score(lite_model, probe):
    with torch.no_grad():
        return lite_model(probe).score


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


# ---------------------------------------------------------------- download


PAYLOAD = np.random.default_rng(42).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        server = self.server
        server.hits[self.path] = server.hits.get(self.path, 0) + 1
        name = self.path.strip("/")
        if name in server.files:
            body = server.files[name]
            self._send(body, len(body))
        elif name == "corrupt":
            body = bytes([PAYLOAD[0] ^ 0xFF]) + PAYLOAD[1:]
            self._send(body, len(body))
        elif name == "short":
            self._send(PAYLOAD[: len(PAYLOAD) // 3], len(PAYLOAD))
        elif name == "flaky":  # interrupted once, then fine
            if server.hits[self.path] == 1:
                self._send(PAYLOAD[:1000], len(PAYLOAD))
            else:
                self._send(PAYLOAD, len(PAYLOAD))
        else:
            self.send_error(404)

    def _send(self, body: bytes, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.hits = {}
    httpd.files = {"good.bin": PAYLOAD}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_download_success(server, tmp_path):
    httpd, base = server
    dest = tmp_path / "cache" / "w.bin"
    out = W.download(f"{base}/good.bin", dest, PAYLOAD_SHA.upper(), timeout=10)
    assert Path(out) == dest
    assert dest.read_bytes() == PAYLOAD
    assert [p.name for p in dest.parent.iterdir()] == ["w.bin"]
    assert httpd.hits["/good.bin"] == 1


def test_download_corrupt_bytes(server, tmp_path):
    httpd, base = server
    dest = tmp_path / "cache" / "w.bin"
    with pytest.raises(WeightsError, match="has sha256 [0-9a-f]{64}, expected"):
        W.download(f"{base}/corrupt", dest, PAYLOAD_SHA, timeout=10, retries=1)
    assert list(dest.parent.iterdir()) == []
    assert httpd.hits["/corrupt"] == 2  # retried, then gave up


def test_download_failure_keeps_existing_file(server, tmp_path):
    _, base = server
    dest = tmp_path / "w.bin"
    dest.write_bytes(b"previous good file")
    with pytest.raises(WeightsError):
        W.download(f"{base}/corrupt", dest, PAYLOAD_SHA, timeout=10, retries=0)
    assert dest.read_bytes() == b"previous good file"
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]


def test_download_connection_closed_early(server, tmp_path):
    httpd, base = server
    dest = tmp_path / "cache" / "w.bin"
    with pytest.raises(WeightsError) as info:
        W.download(f"{base}/short", dest, PAYLOAD_SHA, timeout=10, retries=2)
    assert f"{base}/short" in str(info.value)
    assert "interrupted" in str(info.value)  # the Content-Length check caught the short body
    assert list(dest.parent.iterdir()) == []
    assert httpd.hits["/short"] == 3
    # the same destination works afterwards
    W.download(f"{base}/good.bin", dest, PAYLOAD_SHA, timeout=10)
    assert dest.read_bytes() == PAYLOAD


def test_download_retry_succeeds(server, tmp_path):
    httpd, base = server
    dest = tmp_path / "cache" / "w.bin"
    W.download(f"{base}/flaky", dest, PAYLOAD_SHA, timeout=10, retries=2)
    assert dest.read_bytes() == PAYLOAD
    assert httpd.hits["/flaky"] == 2
    assert [p.name for p in dest.parent.iterdir()] == ["w.bin"]


def test_download_http_error(server, tmp_path):
    _, base = server
    dest = tmp_path / "cache" / "w.bin"
    with pytest.raises(WeightsError, match="could not download"):
        W.download(f"{base}/missing", dest, PAYLOAD_SHA, timeout=10, retries=0)
    assert list(dest.parent.iterdir()) == []


def test_registered_remote_weights_download_once(server, lite_weights, tmp_path, monkeypatch, probe,
                                                 reference_score):
    httpd, base = server
    data = Path(lite_weights).read_bytes()
    httpd.files["lite.safetensors"] = data
    sha = hashlib.sha256(data).hexdigest()
    monkeypatch.setenv("IFQA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(W, "REGISTRY", dict(W.REGISTRY))
    W.register_weights(W.RegisteredWeights(name="test-remote-lite", backbone="lite", sha256=sha,
                                           url=f"{base}/lite.safetensors"))
    with pytest.raises(ValueError, match="already registered"):
        W.register_weights(W.RegisteredWeights(name="test-remote-lite", backbone="lite", sha256=sha, url="x"))
    model = IFQA(weights="test-remote-lite")
    assert model.backbone == "lite" and "test-remote-lite" in model.weights_source
    with torch.no_grad():
        torch.testing.assert_close(model(probe).score, reference_score, atol=0, rtol=0)
    IFQA(weights="test-remote-lite")  # from the cache
    assert httpd.hits["/lite.safetensors"] == 1
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and cached[0].read_bytes() == data
    # a corrupted cache file is detected and replaced
    cached[0].write_bytes(b"garbage")
    IFQA(weights="test-remote-lite")
    assert httpd.hits["/lite.safetensors"] == 2
    assert cached[0].read_bytes() == data
