"""Downloading registered weights: checksums, retries, failures that keep the existing file (a server on 127.0.0.1)."""
from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import ifqa_loss.weights as W
from ifqa_loss import IFQA, WeightsError

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
