"""Shared helpers for the benchmarks: data paths, reference modules, table printing, JSON output."""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RESULTS = REPO / "benchmarks" / "results"

sys.path.insert(0, str(REPO))


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise SystemExit(f"{what} not found at {path}; the benchmark needs ../shared (see README)")
    return path


def synth_ckpt(folder: str):
    """``../shared/<folder>/synth_ckpt.py`` (``ifqa-reference`` or ``dsl-reference``), imported under a name of its
    own (the tests' names): both folders ship a file of that name, so ``import synth_ckpt`` would return whichever
    was imported first."""
    import importlib.util

    name = folder.replace("-", "_") + "_synth_ckpt"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, require(SHARED / folder / "synth_ckpt.py", folder))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
    print(f"\nwrote {path}")
