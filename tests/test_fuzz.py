"""Runs fuzz/fuzz_decode.py for a bounded time: decoding and tensor checks raise only ValueError/TypeError.

``IFQA_FUZZ_SECONDS`` (default 60) is the atheris run's duration; the plain mutation loop gets a quarter of it.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import REPO

TARGET = REPO / "fuzz" / "fuzz_decode.py"
SECONDS = float(os.environ.get("IFQA_FUZZ_SECONDS", "60"))
HAS_ATHERIS = importlib.util.find_spec("atheris") is not None


def _fuzz(tmp_path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    # Linux carries a process's peak RSS (getrusage's ru_maxrss, which libFuzzer's -rss_limit_mb checks) across
    # fork + exec, so a child of this pytest process would start at the suite's peak (8 GB once the ViT
    # checkpoint is loaded) and be stopped as out of memory at once. A shell that forks the fuzzer (no exec of
    # the last command: "; exit") gives it a fresh count.
    cmd = [sys.executable, str(TARGET), "--artifacts", str(tmp_path / "artifacts"), *args]
    return subprocess.run(["sh", "-c", '"$@"; exit $?', "sh", *cmd],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=timeout)


def _tail(proc) -> str:
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if not ln.startswith("INFO: Instrumenting")]
    return "\n".join(lines[-60:])


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ATHERIS, reason="atheris is not installed (pip install atheris)")
def test_fuzz_decode_atheris(tmp_path):
    proc = _fuzz(tmp_path, "--seconds", str(SECONDS), timeout=SECONDS + 600)
    assert proc.returncode == 0, _tail(proc)
    assert "Done" in proc.stderr and "runs in" in proc.stderr, _tail(proc)
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())


@pytest.mark.slow
def test_fuzz_decode_plain_loop(tmp_path):
    seconds = max(5.0, SECONDS / 4)
    proc = _fuzz(tmp_path, "--plain", "--seconds", str(seconds), "--seed", "1", timeout=seconds + 300)
    assert proc.returncode == 0, _tail(proc)
    assert "no crash" in proc.stderr
    n_inputs = int(proc.stderr.split("fuzz_decode: ")[-1].split()[0])
    assert n_inputs > 100, proc.stderr[-500:]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["plain", "atheris"])
def test_fuzz_harness_detects_a_disallowed_exception(tmp_path, mode):
    """Self-test: with check_images made to raise IndexError the run fails and saves the input."""
    if mode == "atheris" and not HAS_ATHERIS:
        pytest.skip("atheris is not installed")
    args = ["--inject-crash", "--seconds", "120"] + (["--plain"] if mode == "plain" else [])
    proc = _fuzz(tmp_path, *args, timeout=600)
    assert proc.returncode != 0, _tail(proc)
    assert "IndexError: injected crash" in proc.stdout + proc.stderr, _tail(proc)  # atheris prints to stdout
    saved = list((tmp_path / "artifacts").iterdir())
    assert len(saved) == 1
    # the saved input replays cleanly against the real library
    replay = _fuzz(tmp_path, "--reproduce", str(saved[0]), timeout=300)
    assert replay.returncode == 0, _tail(replay)
