"""Property tests over hostile tensors: any input gives a valid score or a clear ValueError/TypeError, never more.

Hypothesis draws shapes (ndim 0-5, 0-4 channels, sides 0-70), dtypes (float16/32/64, bfloat16, uint8, int64,
bool), value regimes (in range, at the tolerance edge, out of range, NaN, +-Inf, the dtype's largest value),
memory layouts and ``input_range`` values, and feeds them to ``IFQA``, ``IFQALoss`` and ``IFQAMetric.update``.
An oracle written from the documented contract says which inputs must be accepted and which error each
rejected input must raise, so a wrong acceptance is caught as well as a crash.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from functools import lru_cache

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import REPO, face_like_batch
from ifqa_loss import IFQA, IFQALoss, IFQAMetric
from ifqa_loss.preprocess import MIN_SIDE, RANGE_TOLERANCE

PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("IFQA_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    database=None,  # no .hypothesis folder in the repository; failures print a reproducing example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture],
)

DTYPES = [torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.uint8, torch.int64, torch.bool]
FLOAT_DTYPES = {torch.float16, torch.float32, torch.float64, torch.bfloat16}
#: How far outside ``input_range`` (in spans) the "out" regime goes. Far beyond it IFQA/IFQALoss return NaN
#: (see ``test_far_out_of_range_values_are_rejected_not_nan``), so the unbounded regime is metric-only.
MAX_SPANS = 10.0
REGIMES = ["in", "edge", "out", "nan", "inf", "-inf", "mixed", "huge"]


# ---------------------------------------------------------------- strategies


@st.composite
def shapes(draw) -> tuple[int, ...]:
    """A valid (N, 3, H, W) shape, an image-like one (any N, C, H, W), or any ndim 0-5 (0-70 px sides)."""
    side = st.integers(0, 70)
    kind = draw(st.sampled_from(["valid", "valid", "image-like", "any"]))
    if kind == "valid":
        return (draw(st.integers(1, 3)), 3, draw(st.integers(MIN_SIDE, 70)), draw(st.integers(MIN_SIDE, 70)))
    if kind == "image-like":
        return (draw(st.integers(0, 3)), draw(st.integers(1, 4)), draw(side), draw(side))
    ndim = draw(st.integers(0, 5))
    if ndim == 0:
        return ()
    if ndim == 1:
        return (draw(side),)
    return tuple(draw(st.integers(0, 4)) for _ in range(ndim - 2)) + (draw(side), draw(side))


@st.composite
def input_ranges(draw) -> tuple[float, float]:
    if draw(st.booleans()):
        return draw(st.sampled_from([(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)]))
    lo = draw(st.floats(-1000, 1000, allow_nan=False, allow_infinity=False))
    span = draw(st.floats(1e-2, 1e4, allow_nan=False, allow_infinity=False))
    return (lo, lo + span)


@st.composite
def hostile_images(draw, far: bool):
    """(x, input_range, description). ``far``: include the dtype's largest values (unbounded distance)."""
    shape = draw(shapes())
    dtype = draw(st.one_of(st.sampled_from(sorted(FLOAT_DTYPES, key=str)), st.sampled_from(DTYPES)))
    lo, hi = draw(input_ranges())
    regimes = REGIMES if far else [r for r in REGIMES if r != "huge"]
    regime = draw(st.sampled_from(["in", "edge", "out"] + regimes))  # finite regimes twice as likely
    seed = draw(st.integers(0, 2**31 - 1))
    transposed = draw(st.booleans())
    x = _make(shape, dtype, (lo, hi), regime, seed, transposed)
    return x, (lo, hi), f"shape={shape} dtype={dtype} range=({lo!r}, {hi!r}) regime={regime} transposed={transposed}"


def _make(shape, dtype, input_range, regime, seed, transposed) -> torch.Tensor:
    lo, hi = input_range
    span = hi - lo
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(shape, generator=g, dtype=torch.float64)
    if regime == "in":
        v = lo + base * span
    elif regime == "edge":  # exactly on the bounds, and half an 8-bit level beyond them (still accepted)
        v = lo + base * span
        vf = v.reshape(-1)
        vf[0::4], vf[1::4] = lo, hi
        vf[2::4], vf[3::4] = lo - 0.5 * RANGE_TOLERANCE * span, hi + 0.5 * RANGE_TOLERANCE * span
    elif regime == "out":
        v = lo + (base * (2 * MAX_SPANS + 1) - MAX_SPANS) * span
    elif regime == "huge":
        big = torch.finfo(dtype).max if dtype in FLOAT_DTYPES else 1e300
        v = (base * 2 - 1) * big
    else:
        v = lo + base * span
        vf = v.reshape(-1)
        if vf.numel():
            k = torch.randint(0, vf.numel(), (max(1, vf.numel() // 50),), generator=g)
            bad = {"nan": [math.nan], "inf": [math.inf], "-inf": [-math.inf], "mixed": [math.nan, math.inf, -math.inf]}
            for i, j in enumerate(k.tolist()):
                options = bad[regime]
                vf[j] = options[i % len(options)]
    if dtype == torch.bool:
        x = base > 0.5
    elif dtype in (torch.uint8, torch.int64):
        x = (base * 255).round().to(dtype)
    else:
        x = v.to(dtype)  # float16/bfloat16 may overflow to +-Inf here: that is part of the test
    if transposed and x.ndim >= 2:  # same values, non-contiguous strides
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    return x


# ---------------------------------------------------------------- oracle


def expected_rejection(x: torch.Tensor, input_range, range_checked: bool):
    """``None`` if the contract says ``x`` must be accepted, else ``(exception type, message fragment)``."""
    if not x.is_floating_point():
        return TypeError, "/ 255" if x.dtype == torch.uint8 else "dtype"
    if x.ndim != 4:
        return ValueError, "(N, 3, H, W)"
    n, c, h, w = x.shape
    if c != 3:
        return ValueError, "channels"
    if n == 0:
        return ValueError, "empty batch"
    if h < MIN_SIDE or w < MIN_SIDE:
        return ValueError, f"{h}x{w}"
    if not bool(torch.isfinite(x).all()):
        return ValueError, "non-finite"
    if range_checked:
        lo, hi = input_range
        tol = RANGE_TOLERANCE * (hi - lo)
        if float(x.min()) < lo - tol or float(x.max()) > hi + tol:
            return ValueError, "input_range"
    return None


@lru_cache(maxsize=None)
def _model(kind: str, weights: str, input_range: tuple[float, float]):
    if kind == "IFQA":
        return IFQA(weights=weights, input_range=input_range)
    if kind == "IFQALoss":
        return IFQALoss(weights=weights, input_range=input_range, reduction="none")
    raise AssertionError(kind)


def _scores(kind: str, weights: str, x: torch.Tensor, input_range) -> torch.Tensor:
    """Run one entry point; return per-image scores (or the metric value)."""
    if kind == "IFQAMetric.update":
        metric = IFQAMetric(weights=weights, input_range=input_range)
        metric.update(x)
        assert int(metric.count) == x.shape[0]
        return metric.compute().reshape(1)
    model = _model(kind, weights, tuple(input_range))
    with torch.no_grad():
        if kind == "IFQA":
            out = model(x)
            assert out.score.shape == (x.shape[0],) and out.map.shape == (x.shape[0], 1, 256, 256)
            assert torch.isfinite(out.map).all() and out.map.min() >= 0 and out.map.max() <= 1
            return out.score
        return 1.0 - model(x)


def check_contract(kind: str, weights: str, x: torch.Tensor, input_range, desc: str) -> None:
    expected = expected_rejection(x, input_range, range_checked=kind == "IFQAMetric.update")
    try:
        scores = _scores(kind, weights, x, input_range)
    except (ValueError, TypeError) as e:
        msg = str(e).strip()
        assert msg, f"{kind}: empty {type(e).__name__} message for {desc}"
        assert expected is not None, f"{kind} rejected a valid input ({desc}): {type(e).__name__}: {msg}"
        exc, fragment = expected
        assert isinstance(e, exc), f"{kind}: expected {exc.__name__}, got {type(e).__name__}: {msg} ({desc})"
        assert fragment in msg, f"{kind}: {fragment!r} not in {msg!r} ({desc})"
        event(f"rejected: {fragment}")
        return
    # any other exception type propagates and fails the test
    assert expected is None, f"{kind} accepted an input that must raise {expected[0].__name__} ({desc})"
    assert torch.isfinite(scores).all(), f"{kind}: non-finite score {scores.tolist()} for {desc}"
    assert bool(((scores >= 0) & (scores <= 1)).all()), f"{kind}: score outside [0, 1]: {scores.tolist()} ({desc})"
    event("accepted")


# ---------------------------------------------------------------- properties


@PROPERTY_SETTINGS
@given(case=hostile_images(far=False))
def test_ifqa_any_input_scores_or_raises_clearly(lite_weights, case):
    x, input_range, desc = case
    check_contract("IFQA", str(lite_weights), x, input_range, desc)


@PROPERTY_SETTINGS
@given(case=hostile_images(far=False))
def test_ifqaloss_any_input_scores_or_raises_clearly(lite_weights, case):
    x, input_range, desc = case
    check_contract("IFQALoss", str(lite_weights), x, input_range, desc)


@PROPERTY_SETTINGS
@given(case=hostile_images(far=True))
def test_metric_update_any_input_scores_or_raises_clearly(lite_weights, case):
    x, input_range, desc = case
    check_contract("IFQAMetric.update", str(lite_weights), x, input_range, desc)


@PROPERTY_SETTINGS
@given(obj=st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5), st.lists(st.floats(), max_size=4),
                     st.binary(max_size=8)))
def test_non_tensors_raise_type_error(lite_model, obj):
    with pytest.raises(TypeError, match="torch.Tensor"):
        lite_model(obj)


@pytest.mark.parametrize("kind", ["IFQA", "IFQALoss"])
@pytest.mark.parametrize("scale", [1e10, 1e30])
def test_far_out_of_range_values_are_rejected_not_nan(lite_weights, kind, scale):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * scale
    try:
        scores = _scores(kind, str(lite_weights), x, (0.0, 1.0))
    except ValueError as e:
        assert "overflow" in str(e) and "input_range" in str(e)
        return
    assert torch.isfinite(scores).all(), f"{kind}: NaN score for rand * {scale:g}"


@pytest.mark.parametrize("input_range", [(0.0, 1e-300), (-1.7e308, 1.7e308)])
def test_unrepresentable_input_range_is_rejected(lite_weights, input_range):
    try:
        model = IFQA(weights=lite_weights, input_range=input_range)
    except ValueError:
        return
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64) * min(input_range[1], 1.0)  # inside the range
    with torch.no_grad():
        score = model(x).score
    assert torch.isfinite(score).all(), f"input_range={input_range} accepted, score {score.tolist()}"


@pytest.mark.parametrize("make", [lambda: torch.rand(1, 3, 32, 32).to_sparse(),
                                  lambda: torch.rand(1, 3, 32, 32, device="meta")], ids=["sparse", "meta"])
def test_sparse_and_meta_tensors_raise_type_error(lite_model, make):
    with pytest.raises((TypeError, ValueError)):
        lite_model(make())


# ---------------------------------------------------------------- determinism, large inputs


def test_repeated_cpu_calls_are_bit_identical(lite_weights):
    x = face_like_batch(4, size=72, seed=3)
    model = IFQA(weights=lite_weights)
    loss = IFQALoss(weights=lite_weights, reduction="none")
    with torch.no_grad():
        first = model(x)
        for _ in range(3):
            again = model(x)
            assert torch.equal(again.score, first.score) and torch.equal(again.map, first.map)
        # a second instance from the same file gives the same bits too
        assert torch.equal(IFQA(weights=lite_weights)(x).score, first.score)
        assert torch.equal(loss(x), 1.0 - first.score)
    values = []
    for _ in range(2):
        metric = IFQAMetric(weights=lite_weights)
        metric.update(x[:3])
        metric.update(x[3:])
        values.append(metric.compute())
    assert torch.equal(values[0], values[1])
    # gradients are reproducible as well
    grads = []
    for _ in range(2):
        xg = x.clone().requires_grad_(True)
        model(xg).score.sum().backward()
        grads.append(xg.grad)
    assert torch.equal(grads[0], grads[1])


def test_large_image_is_resized_before_the_network(lite_weights):
    model = IFQA(weights=lite_weights)
    seen = []
    handle = model.net.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape)))
    try:
        x = torch.rand(1, 3, 2048, 2048, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = model(x)
    finally:
        handle.remove()
    assert seen == [(1, 3, 256, 256)]
    assert out.map.shape == (1, 1, 256, 256)
    assert torch.isfinite(out.score).all() and 0 <= out.score.item() <= 1


_RSS_SCRIPT = r"""
import json, resource, sys, torch
torch.set_num_threads(1)
from ifqa_loss import IFQA

def peak_kib():
    # VmHWM starts afresh at exec; ru_maxrss would include the forking (pytest) process's RSS
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

model = IFQA(weights=sys.argv[1])
with torch.no_grad():
    model(torch.rand(1, 3, 64, 64))
base = peak_kib()
x = torch.rand(1, 3, 4096, 4096)
with torch.no_grad():
    score = model(x).score.item()
peak = peak_kib()
print(json.dumps({"base_kib": base, "peak_kib": peak, "score": score}))
"""


def test_4096_image_peak_memory_is_bounded(lite_weights):
    """A 4096x4096 input (192 MiB as float32) is scored with a bounded peak RSS (measured: about 1 GB)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(lite_weights)], capture_output=True, text=True,
                          env=env, cwd=str(REPO), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    input_mib = 4096 * 4096 * 3 * 4 / 2**20
    growth_mib = (r["peak_kib"] - r["base_kib"]) / 1024
    print(f"4096x4096: base {r['base_kib'] / 1024:.0f} MiB, peak {r['peak_kib'] / 1024:.0f} MiB, "
          f"growth {growth_mib:.0f} MiB ({growth_mib / input_mib:.1f}x the input)")
    assert 0 <= r["score"] <= 1
    assert growth_mib < 5 * input_mib
    assert r["peak_kib"] / 1024 < 1536
