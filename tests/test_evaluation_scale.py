"""``ifqa evaluate-mos`` on a generated 5,000-image CGFIQA-layout set: memory stays bounded (peak RSS measured, and
compared with a 1,000-image run of the same set-up) and a rerun resumes from the score cache without scoring."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

# the child reports its own high-water mark: VmHWM starts afresh at exec, unlike ru_maxrss, which Linux carries
# over from the forking (pytest) process
CHILD = ("import sys, json; from ifqa_loss.cli import main; rc = main(sys.argv[1:]); "
         "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
         "print(json.dumps({'rc': rc, 'peak_rss_kb': int(hwm)}), file=sys.stderr); sys.exit(0)")


def _make_split(root, split: str, n: int, size: int = 128) -> None:
    img = root / split / "img"
    img.mkdir(parents=True)
    rng = np.random.default_rng(n)
    yy, xx = np.mgrid[0:size, 0:size]
    names, mos = [], []
    for i in range(n):
        f = 2 + (i % 17)
        base = np.sin(xx / f + i) + np.cos(yy / (f + 1) - i)
        arr = ((base[..., None] + 2) * np.array([50, 55, 60]) + rng.normal(0, 4 + i % 9, (size, size, 3)))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(img / f"{i:05d}.png", compress_level=1)
        names.append(f"{i:05d}.png")
        mos.append(float(5 - (i % 9) / 3 + rng.normal(0, 0.3)))
    (root / split / "label.json").write_text(json.dumps({"Image": names, "MOS": mos}))


def _run(root, split, weights, out):
    t = time.time()
    proc = subprocess.run([sys.executable, "-c", CHILD, "evaluate-mos", str(root), "--layout", "cgfiqa", "--split",
                           split, "--weights", str(weights), "--out", str(out), "--bootstrap", "100",
                           "--batch-size", "16", "--no-progress"],
                          capture_output=True, text=True, cwd=REPO, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stderr.strip().splitlines()[-1])
    assert info["rc"] == 0, proc.stderr[-3000:]
    return info["peak_rss_kb"] / 1024, time.time() - t, json.loads(out.read_text())


@pytest.mark.slow  # about 3 minutes on 2 shared CPU cores
def test_5000_images_at_bounded_memory_and_resumed(tmp_path, lite_weights):
    root = tmp_path / "cgfiqa"
    _make_split(root, "small", 1000)
    _make_split(root, "test", 5000)
    small_mb, small_s, _ = _run(root, "small", lite_weights, tmp_path / "small.json")
    peak_mb, seconds, res = _run(root, "test", lite_weights, tmp_path / "test.json")
    r = res[lite_weights.stem]
    assert r["n_scored"] == 5000 and r["n_skipped"] == 0
    resumed_mb, resumed_s, again = _run(root, "test", lite_weights, tmp_path / "test.json")
    assert again == res  # every score from the cache, and the same seeded bootstrap
    print(f"\npeak RSS: 1,000 images {small_mb:.0f} MB ({small_s:.0f} s); 5,000 images {peak_mb:.0f} MB "
          f"({seconds:.0f} s); resumed from the cache {resumed_mb:.0f} MB ({resumed_s:.0f} s)")
    # 5x the images: the scores and the item list grow (about 1 kB an image), the images in memory do not
    assert peak_mb - small_mb < 50, (small_mb, peak_mb)
    assert resumed_s < seconds
