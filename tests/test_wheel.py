"""The wheel: built from a clean copy of the source, installed into a fresh venv beside torch 2.13.0, run offline.

Outside the source tree (cwd a temporary folder), with every HTTP(S) request sent to a closed port, the installed
``ifqa`` scores a generated image with the bundled weights and ``IFQALoss()`` runs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": "", "HF_HUB_OFFLINE": "1"}


def _run(cmd: list, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=env)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def _clean_copy(dest: Path) -> Path:
    """The files a clean checkout has: tracked and untracked-but-not-ignored (no build/, no egg-info, no venv)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def test_wheel_installs_beside_torch_2_13_and_runs_offline(tmp_path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout to know which files a clean source tree has")
    src = _clean_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    # the running venv's setuptools builds it (no build isolation: nothing to fetch)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src], tmp_path)
    wheels = list(dist.glob("ifqa_loss-*.whl"))
    assert len(wheels) == 1
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    for needed in ("ifqa_loss/bundled/ifqa-lite.safetensors", "ifqa_loss/bundled/ifqa-lite.json", "ifqa_loss/py.typed",
                   "ifqa_loss/cli.py", "ifqa_loss/integrations/basicsr.py", "ifqa_loss/models/unet.py"):
        assert needed in names, f"the wheel lacks {needed}"
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/")) for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path)
    py, bin_dir = venv / "bin" / "python", venv / "bin"
    _run([py, "-m", "pip", "install", "-q", "torch==2.13.0"], tmp_path)  # this machine's CPU wheel
    _run([py, "-m", "pip", "install", "-q", wheels[0]], tmp_path)

    work = tmp_path / "work"  # outside the source tree; nothing from the repository on the path
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OFFLINE, PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", IFQA_CACHE=str(tmp_path / "cache"))
    version = _run([bin_dir / "ifqa", "--version"], work, env).stdout.strip()
    where = _run([py, "-c", "import importlib.metadata as m, ifqa_loss; "
                  "print(ifqa_loss.__file__); print(m.version('ifqa-loss'))"], work, env).stdout.split()
    assert Path(where[0]).is_relative_to(venv), f"ifqa_loss imported from {where[0]}, not the installed wheel"
    assert version == f"ifqa {where[1]}"

    _run([py, "-c", "import numpy as np; from PIL import Image; rng = np.random.default_rng(0); "
          "Image.fromarray(rng.integers(0, 256, (200, 180, 3), dtype=np.uint8)).save('face.png')"], work, env)
    scores = json.loads(_run([bin_dir / "ifqa", "score", "face.png", "--json"], work, env).stdout)
    assert len(scores) == 1 and 0 <= scores[0]["score"] <= 1 and scores[0]["path"] == "face.png"
    loss = _run([py, "-c", "import torch; from ifqa_loss import IFQALoss; x = torch.rand(2, 3, 64, 64, "
                 "requires_grad=True); v = IFQALoss()(x); v.backward(); "
                 "print(float(v), bool(x.grad.abs().sum() > 0))"], work, env).stdout.split()
    assert 0 <= float(loss[0]) <= 1 and loss[1] == "True"
    assert not (tmp_path / "cache").exists(), "the installed package fetched or cached something"
