"""Shared fixtures: reference material, synthetic official checkpoints, a small ``lite`` weights file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the package may not be installed (editable) in the venv
    sys.path.insert(0, str(REPO))

# On a CPU shared with other jobs, fewer threads can be much faster: set IFQA_TEST_THREADS (e.g. 1).
if os.environ.get("IFQA_TEST_THREADS"):
    torch.set_num_threads(int(os.environ["IFQA_TEST_THREADS"]))

SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "ifqa-reference"

LITE_CONFIG = {"widths": [8, 16, 32, 64, 128], "num_bottleneck": 2}


def require_reference() -> Path:
    """Return the reference folder, or skip the test when it is not there."""
    needed = [REFERENCE / n for n in ("synth_ckpt.py", "expected.json", "spec_cnn.json", "spec_vit.json", "images")]
    missing = [p.name for p in needed if not p.exists()]
    if missing:
        pytest.skip(f"IFQA reference material not found at {REFERENCE} (missing: {', '.join(missing)}); "
                    "it lives in ../shared/ifqa-reference next to the repository")
    return REFERENCE


def load_reference_module(path: Path, name: str):
    """Import ``path`` under ``name``: both reference folders ship a ``synth_ckpt.py``, so a plain
    ``import synth_ckpt`` would return whichever one a test imported first."""
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _synth_ckpt():
    return load_reference_module(require_reference() / "synth_ckpt.py", "ifqa_reference_synth_ckpt")


@pytest.fixture(scope="session")
def shared() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def reference() -> Path:
    return require_reference()


@pytest.fixture(scope="session")
def cnn_ckpt(tmp_path_factory) -> Path:
    """Synthetic ``IFQA_Metric.pth`` ({'D': state_dict}, 105M parameters)."""
    synth = _synth_ckpt()
    path = tmp_path_factory.mktemp("official_cnn") / "IFQA_Metric.pth"
    synth.write("spec_cnn.json", path)
    return path


@pytest.fixture(scope="session")
def vit_ckpt(tmp_path_factory) -> Path:
    """Synthetic ``IFQA++_Metric.pth`` (ViT-H/14, 657M parameters, 2.6 GB)."""
    synth = _synth_ckpt()
    path = tmp_path_factory.mktemp("official_vit") / "IFQA++_Metric.pth"
    synth.write("spec_vit.json", path)
    return path


@pytest.fixture(scope="session")
def lite_weights(tmp_path_factory) -> Path:
    """A small randomly initialised ``lite`` model as .safetensors (with backbone metadata)."""
    from ifqa_loss.models import build_model
    from ifqa_loss.weights import save_weights

    torch.manual_seed(0)
    model = build_model("lite")
    path = tmp_path_factory.mktemp("lite") / "ifqa-lite-test.safetensors"
    save_weights(model, path, "lite", LITE_CONFIG)
    return path


@pytest.fixture(scope="session")
def lite_model(lite_weights):
    """A shared IFQA(lite) instance (frozen, so safe to share between tests)."""
    from ifqa_loss import IFQA

    return IFQA(weights=lite_weights)


@pytest.fixture(scope="session")
def probe():
    """Two small test images, and the shared ``lite_model``'s scores of them (what every weights format must give)."""
    return face_like_batch(2, size=48, seed=11)


@pytest.fixture(scope="session")
def reference_score(lite_model, probe):
    with torch.no_grad():
        return lite_model(probe).score


def face_like_batch(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """``n`` varied test images in [0, 1] (flat, gradients, checkers, noise) so scores differ between images."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, size)[:, None].expand(size, size)
    xs = torch.linspace(0, 1, size)[None, :].expand(size, size)
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            # nearly flat (an exactly constant image is a degenerate point for InstanceNorm: huge gradients)
            img = float(torch.rand(1, generator=g)) * 0.9 + 0.1 * torch.rand(3, size, size, generator=g)
        elif kind == 1:
            img = torch.stack([xs, ys, 1 - xs])
        elif kind == 2:
            k = 2 + i
            img = (((torch.arange(size)[:, None] // k + torch.arange(size)[None] // k) % 2).float()).expand(3, -1, -1)
        elif kind == 3:
            img = torch.rand(3, size, size, generator=g)
        else:
            wave = (0.5 + 0.5 * torch.sin(6.28 * (xs * (i + 1) + ys))).expand(3, -1, -1)
            img = wave * torch.rand(3, 1, 1, generator=g)
        out.append(img.clamp(0, 1))
    return torch.stack(out).contiguous()


def write_png(path: Path, size=(64, 64), seed: int = 0, mode: str = "RGB") -> Path:
    """Write a random-noise/gradient test image with PIL."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = size
    grad = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    arr = (0.5 * grad + 0.5 * rng.integers(0, 256, (h, w, 3))).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


def run_benchmark(script: str, out: Path, *args: str, timeout: int = 900) -> tuple[str, dict]:
    """Run ``benchmarks/<script>`` with ``--out out`` in a subprocess; return its stdout and the JSON it wrote."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())
