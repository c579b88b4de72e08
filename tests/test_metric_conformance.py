"""IFQAMetric against what torchmetrics checks on its own metrics, and the dtype / compile behaviour of the model.

Covered: ``update(preds, target=None)`` in a ``MetricCollection`` next to PSNR; ``forward`` vs ``update`` +
``compute``; ``clone``, pickling and ``deepcopy``; the constant class attributes; two-process sync (gloo) with
and without ``dist_sync_on_step``, ``sync_on_compute=False`` and ``compute_on_cpu=True``; half and bfloat16
inputs; parent dtype casts and ``set_dtype``; float64 models; differentiability and a float64 gradcheck of the
functional form; ``BootStrapper`` and ``MetricTracker``; per-image scores (``keep_scores``); a user's
``torch.compile(fullgraph=True)`` step.
"""
from __future__ import annotations

import copy
import json
import os
import pickle
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio
from torchmetrics.wrappers import BootStrapper, MetricTracker

from conftest import face_like_batch
from ifqa_loss import IFQA, IFQALoss, IFQAMetric
from ifqa_loss.functional import ifqa_loss, ifqa_score

TINY_CONFIG = {"widths": [2, 2, 2, 2, 2], "num_bottleneck": 0}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A ``lite`` network two channels wide with no bottleneck: fast enough for gradcheck and compiles."""
    from ifqa_loss.models import build_model
    from ifqa_loss.weights import save_weights

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tiny") / "ifqa-tiny.safetensors"
    save_weights(build_model("lite", **TINY_CONFIG), path, "lite", TINY_CONFIG)
    return path


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return face_like_batch(7, size=48, seed=3)


@pytest.fixture(scope="module")
def per_image(lite_model, images) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([lite_model(images[i:i + 1]).score for i in range(images.shape[0])])


# --- update(preds, target=None) -----------------------------------------------------------------------------


def test_update_takes_preds_ignores_target_and_keeps_the_images_alias(lite_weights, images, per_image):
    hq = torch.rand_like(images)
    calls = [lambda m: m.update(images), lambda m: m.update(images, hq), lambda m: m.update(images, target=hq),
             lambda m: m.update(preds=images, target=hq), lambda m: m.update(images=images),
             lambda m: m.update(target=hq, images=images)]
    for call in calls:
        metric = IFQAMetric(weights=lite_weights)
        call(metric)
        assert int(metric.count) == 7
        assert metric.compute().item() == pytest.approx(per_image.double().mean().item(), abs=1e-6)
    metric = IFQAMetric(weights=lite_weights)
    with pytest.raises(TypeError, match="both preds and images"):
        metric.update(images, images=images)
    with pytest.raises(TypeError, match="missing the images"):
        metric.update()
    with pytest.raises(TypeError, match="missing the images"):
        metric.update(target=hq)
    assert int(metric.count) == 0


@pytest.mark.parametrize("by_keyword", [True, False], ids=["keyword", "positional"])
def test_metric_collection_with_psnr(lite_weights, images, per_image, by_keyword):
    hq = (images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    collection = MetricCollection({"ifqa": IFQAMetric(weights=lite_weights),
                                   "psnr": PeakSignalNoiseRatio(data_range=1.0)})
    for lo, hi in [(0, 3), (3, 7)]:
        if by_keyword:
            collection.update(preds=images[lo:hi], target=hq[lo:hi])
        else:
            collection.update(images[lo:hi], hq[lo:hi])
    values = collection.compute()
    assert values["ifqa"].item() == pytest.approx(per_image.double().mean().item(), abs=1e-6)
    assert values["psnr"].item() == pytest.approx(PeakSignalNoiseRatio(data_range=1.0)(images, hq).item(), abs=1e-4)
    batch = collection(preds=images[:2], target=hq[:2]) if by_keyword else collection(images[:2], hq[:2])
    assert batch["ifqa"].item() == pytest.approx(per_image[:2].double().mean().item(), abs=1e-6)


# --- forward, copies, class attributes -------------------------------------------------------------------------


def test_forward_is_the_batch_value_and_equals_update_compute_on_a_first_batch(lite_weights, images, per_image):
    by_forward, by_update = IFQAMetric(weights=lite_weights), IFQAMetric(weights=lite_weights)
    first = by_forward(images[:3])
    by_update.update(images[:3])
    torch.testing.assert_close(first, by_update.compute(), atol=0, rtol=0)
    second = by_forward(images[3:])  # the batch value, not the running mean
    assert second.item() == pytest.approx(per_image[3:].double().mean().item(), abs=1e-6)
    assert abs(second.item() - per_image.double().mean().item()) > 1e-5  # which would differ measurably
    by_update.update(images[3:])
    torch.testing.assert_close(by_forward.compute(), by_update.compute(), atol=1e-7, rtol=0)
    assert int(by_forward.count) == 7


@pytest.mark.parametrize("how", ["clone", "deepcopy", "pickle"])
def test_copies_keep_the_states_and_accumulate_independently(lite_weights, images, how):
    metric = IFQAMetric(weights=lite_weights, keep_scores=True)
    metric.update(images[:3])
    copied = {"clone": metric.clone, "deepcopy": lambda: copy.deepcopy(metric),
              "pickle": lambda: pickle.loads(pickle.dumps(metric))}[how]()
    assert copied is not metric and copied.model is not metric.model
    torch.testing.assert_close(copied.compute(), metric.compute(), atol=0, rtol=0)
    copied.update(images[3:])
    assert int(copied.count) == 7 and int(metric.count) == 3  # the original is untouched
    metric.update(images[3:])
    torch.testing.assert_close(copied.compute(), metric.compute(), atol=0, rtol=0)
    torch.testing.assert_close(copied.scores(), metric.scores(), atol=0, rtol=0)
    assert list(copied.parameters()) == [] and set(copied.state_dict()) <= {"score_sum", "count", "image_scores"}


def test_constant_class_attributes_hold_for_instances_and_values(lite_weights, images):
    metric = IFQAMetric(weights=lite_weights)
    for name, expected in [("is_differentiable", True), ("higher_is_better", True), ("full_state_update", False)]:
        assert getattr(IFQAMetric, name) is expected and getattr(metric, name) is expected
    assert (IFQAMetric.plot_lower_bound, IFQAMetric.plot_upper_bound) == (0.0, 1.0)
    value = metric(images)
    assert IFQAMetric.plot_lower_bound <= value.item() <= IFQAMetric.plot_upper_bound
    for name in ("is_differentiable", "higher_is_better", "full_state_update", "plot_lower_bound"):
        with pytest.raises(RuntimeError, match="const"):  # torchmetrics keeps them constant on instances
            setattr(metric, name, getattr(metric, name))
    # full_state_update=False is only right if forward's batch value needs no global state: checked by
    # comparing against torchmetrics' full-state path on the same batches

    class FullState(IFQAMetric):
        full_state_update = True

    full = FullState(weights=lite_weights)
    reduced = IFQAMetric(weights=lite_weights)
    for lo, hi in [(0, 2), (2, 7)]:
        torch.testing.assert_close(full(images[lo:hi]), reduced(images[lo:hi]), atol=1e-7, rtol=0)
    torch.testing.assert_close(full.compute(), reduced.compute(), atol=1e-7, rtol=0)


# --- distributed: two processes on gloo ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sync_worker(rank: int, world: int, port: int, weights: str, shards, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        result = {}
        for name, kwargs in [("default", {}), ("on_step", {"dist_sync_on_step": True}),
                             ("local", {"sync_on_compute": False}), ("cpu", {"compute_on_cpu": True})]:
            metric = IFQAMetric(weights=weights, keep_scores=True, **kwargs)
            batch_values = [float(metric(batch)) for batch in shards[rank]]
            result[name] = {"batch": batch_values, "value": float(metric.compute()),
                            "scores": metric.scores().tolist(), "count": int(metric.count),
                            "on_cpu": all(t.device.type == "cpu" for t in metric.image_scores)}
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_two_process_sync_dist_sync_on_step_sync_on_compute_and_compute_on_cpu(lite_weights, images, per_image,
                                                                               tmp_path):
    # rank 0: two batches (2 + 1 images); rank 1: two batches (3 + 1): uneven, and the same number of steps
    # so that dist_sync_on_step's per-step collectives pair up
    shards = [[images[0:2], images[2:3]], [images[3:6], images[6:7]]]
    mp.spawn(_sync_worker, args=(2, _free_port(), str(lite_weights), shards, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    s = per_image.double()
    local = [s[0:3], s[3:7]]
    local_batches = [[s[0:2], s[2:3]], [s[3:6], s[6:7]]]
    for r, res in enumerate(ranks):
        for name in ("default", "on_step", "local", "cpu"):
            assert res[name]["count"] == local[r].numel()  # compute restores the local states afterwards
        for name in ("default", "cpu"):
            assert res[name]["batch"] == pytest.approx([b.mean().item() for b in local_batches[r]], abs=1e-6)
            assert res[name]["value"] == pytest.approx(s.mean().item(), abs=1e-6)
            assert res[name]["scores"] == pytest.approx(s.tolist(), abs=1e-6)  # rank 0's images, then rank 1's
        # dist_sync_on_step: every batch value is over both ranks' batches of that step
        steps = [torch.cat([s[0:2], s[3:6]]), torch.cat([s[2:3], s[6:7]])]
        assert res["on_step"]["batch"] == pytest.approx([b.mean().item() for b in steps], abs=1e-6)
        assert res["on_step"]["value"] == pytest.approx(s.mean().item(), abs=1e-6)
        # sync_on_compute=False: the local mean and the local scores only
        assert res["local"]["value"] == pytest.approx(local[r].mean().item(), abs=1e-6)
        assert res["local"]["scores"] == pytest.approx(local[r].tolist(), abs=1e-6)
        assert res["cpu"]["on_cpu"]


def test_compute_on_cpu_single_process(lite_weights, images):
    on_cpu = IFQAMetric(weights=lite_weights, compute_on_cpu=True, keep_scores=True)
    default = IFQAMetric(weights=lite_weights, keep_scores=True)
    for metric in (on_cpu, default):
        metric.update(images[:4])
        metric.update(images[4:])
    assert all(t.device.type == "cpu" for t in on_cpu.image_scores)
    torch.testing.assert_close(on_cpu.compute(), default.compute(), atol=0, rtol=0)
    torch.testing.assert_close(on_cpu.scores(), default.scores(), atol=0, rtol=0)


# --- dtypes -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_and_bfloat16_inputs_are_computed_in_float32(lite_weights, images, dtype):
    low = images.to(dtype)
    metric, reference = IFQAMetric(weights=lite_weights, keep_scores=True), IFQAMetric(weights=lite_weights)
    value = metric(low)
    assert value.dtype == torch.float32 and metric.scores().dtype == torch.float32
    # exactly the float32 computation on the rounded images: the input is upcast, nothing runs in low precision
    torch.testing.assert_close(value, reference(low.float()), atol=0, rtol=0)
    assert next(metric.model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("cast", ["half", "bfloat16", "double", "float", "to_float16", "to_float64", "to_float32"])
@pytest.mark.parametrize("parent", ["ModuleDict", "MetricCollection"])
def test_parent_dtype_casts_leave_the_network_and_states_alone(lite_weights, images, cast, parent):
    metric = IFQAMetric(weights=lite_weights, keep_scores=True)
    metric.update(images[:3])
    before = metric.compute()
    holder = torch.nn.ModuleDict({"ifqa": metric}) if parent == "ModuleDict" else MetricCollection({"ifqa": metric})
    if cast.startswith("to_"):
        holder.to(getattr(torch, cast[3:]))
    else:
        getattr(holder, cast)()
    assert {p.dtype for p in metric.model.parameters()} == {torch.float32}
    assert metric.score_sum.dtype == torch.float64 and metric.count.dtype == torch.long
    assert metric.image_scores[0].dtype == torch.float32
    torch.testing.assert_close(metric.compute(), before, atol=0, rtol=0)
    metric.update(images[3:])
    reference = IFQAMetric(weights=lite_weights)
    reference.update(images[:3])
    reference.update(images[3:])
    torch.testing.assert_close(metric.compute(), reference.compute(), atol=0, rtol=0)


def test_set_dtype_casts_the_network(lite_weights, images):
    metric = IFQAMetric(weights=lite_weights)
    metric.set_dtype(torch.float64)
    assert {p.dtype for p in metric.model.parameters()} == {torch.float64}
    assert metric.score_sum.dtype == torch.float64 and metric.count.dtype == torch.long
    value = metric(images.double())
    assert value.dtype == torch.float64 and metric.compute().dtype == torch.float64
    reference = IFQAMetric(weights=lite_weights)(images)
    assert value.item() == pytest.approx(reference.item(), abs=1e-5) and value.item() != reference.item()
    metric.set_dtype(torch.float16)
    assert {p.dtype for p in metric.model.parameters()} == {torch.float16}
    assert metric.score_sum.dtype == torch.float64  # the accumulator is not cast down
    metric.update(images)
    assert metric.compute().dtype == torch.float32 and 0 <= metric.compute().item() <= 1


@pytest.mark.parametrize("dtype, out_dtype", [(torch.float64, torch.float64), (torch.float32, torch.float32),
                                              (torch.bfloat16, torch.float32), (torch.float16, torch.float32)])
def test_model_output_dtype_follows_a_float64_model(lite_weights, images, dtype, out_dtype):
    model = IFQA(weights=lite_weights).to(dtype)
    with torch.no_grad():
        out = model(images[:2])
        reference = IFQA(weights=lite_weights)(images[:2])
    assert out.score.dtype == out_dtype and out.map.dtype == out_dtype
    tol = {torch.float64: 1e-5, torch.float32: 0.0}.get(dtype, 0.05)
    torch.testing.assert_close(out.score.double(), reference.score.double(), atol=tol, rtol=0)
    assert ifqa_score(images[:2].to(dtype), model).dtype == out_dtype


# --- differentiability ------------------------------------------------------------------------------------------


def test_requires_grad_of_the_output_matches_is_differentiable(lite_weights, images):
    assert IFQAMetric.is_differentiable
    metric = IFQAMetric(weights=lite_weights)
    x = images[:3].clone().requires_grad_(True)
    batch_value = metric(x)
    assert batch_value.requires_grad is IFQAMetric.is_differentiable
    # as in every torchmetrics metric, a plain update() runs without grad: the states never hold a graph
    metric.update(images[3:].clone().requires_grad_(True))
    assert not metric.compute().requires_grad and not metric.score_sum.requires_grad
    batch_value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    no_grad_metric = IFQAMetric(weights=lite_weights)
    assert not no_grad_metric(images[:3]).requires_grad  # images that need no grad give a plain value


def test_float64_gradcheck_of_the_functional_form(tiny_weights):
    model = IFQA(weights=tiny_weights).double()
    # a smooth image (a colour gradient): a nearly flat one sits next to InstanceNorm's degenerate point, where
    # finite differences at eps=1e-6 are not accurate enough
    base = face_like_batch(2, size=16, seed=4)[1:].double()
    assert ifqa_score(base, model).dtype == torch.float64

    def with_patch(patch: torch.Tensor, model: IFQA = model) -> torch.Tensor:  # the Jacobian over a 4x4 patch
        x = base.clone()
        x[:, :, 6:10, 5:9] = patch
        return ifqa_score(x, model).double()

    patch = base[:, :, 6:10, 5:9].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(with_patch, (patch,), eps=1e-6, atol=1e-6, rtol=1e-4)
    x = base.clone().requires_grad_(True)  # and random projections over the whole image, score and weighted loss
    assert torch.autograd.gradcheck(lambda t: ifqa_score(t, model), (x,), eps=1e-6, atol=1e-6, rtol=1e-4,
                                    fast_mode=True)
    weight = torch.rand(16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert torch.autograd.gradcheck(lambda t: ifqa_loss(t, model, weight, "sum"), (x,), eps=1e-6, atol=1e-6,
                                    rtol=1e-4, fast_mode=True)
    # the check can fail: a float32 model's rounding is far coarser than these tolerances
    model32 = IFQA(weights=tiny_weights)
    assert not torch.autograd.gradcheck(lambda p: with_patch(p, model32), (patch,), eps=1e-6, atol=1e-6, rtol=1e-4,
                                        raise_exception=False)


# --- wrappers ----------------------------------------------------------------------------------------------------


def test_bootstrapper(lite_weights, images, per_image):
    torch.manual_seed(0)
    boot = BootStrapper(IFQAMetric(weights=lite_weights), num_bootstraps=4, sampling_strategy="multinomial", raw=True)
    boot.update(images[:4])
    boot.update(preds=images[4:], target=images[4:])
    out = boot.compute()
    raw = out["raw"]
    assert raw.shape == (4,)
    assert all(int(m.count) == 7 for m in boot.metrics)  # multinomial: each resample has all 7 draws
    assert bool((raw >= per_image.min() - 1e-6).all()) and bool((raw <= per_image.max() + 1e-6).all())
    assert len(set(raw.tolist())) > 1  # the copies saw different resamples
    torch.testing.assert_close(out["mean"], raw.mean(), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["std"], raw.std(), atol=1e-6, rtol=0)


def test_metric_tracker_maximises_by_higher_is_better(lite_weights, images, per_image):
    tracker = MetricTracker(IFQAMetric(weights=lite_weights))  # maximize=None reads higher_is_better
    epochs = [images[:3], images[3:5], images[5:]]
    for batch in epochs:
        tracker.increment()
        tracker.update(batch)
    values = tracker.compute_all()
    expected = torch.stack([per_image[:3].double().mean(), per_image[3:5].double().mean(),
                            per_image[5:].double().mean()]).float()
    torch.testing.assert_close(values, expected, atol=1e-6, rtol=0)
    best, step = tracker.best_metric(return_step=True)
    assert step == int(expected.argmax()) and best == pytest.approx(expected.max().item(), abs=1e-6)
    assert expected.argmax() != expected.argmin()


# --- per-image scores --------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric IFQAMetric was called before")
def test_keep_scores_gives_per_image_scores_in_update_order(lite_weights, images, per_image):
    metric = IFQAMetric(weights=lite_weights, keep_scores=True)
    assert metric.scores().shape == (0,)
    metric.update(images[:2])
    metric(images[2:5])  # forward merges its batch states into the kept scores too
    metric.update(images[5:])
    scores = metric.scores()
    assert scores.shape == (7,) and not scores.requires_grad
    torch.testing.assert_close(scores, per_image, atol=1e-6, rtol=0)
    assert metric.compute().item() == pytest.approx(scores.double().mean().item(), abs=1e-6)
    metric.reset()
    assert metric.scores().shape == (0,)

    plain = IFQAMetric(weights=lite_weights)
    assert "image_scores" not in plain._defaults  # no list state unless asked
    plain.update(images)
    with pytest.raises(RuntimeError, match="keep_scores=True"):
        plain.scores()


# --- a user's compiled step ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_loss_and_scores_trace_into_a_fullgraph_compiled_step(tiny_weights):
    criterion = IFQALoss(weights=tiny_weights)
    model = criterion.ifqa

    def step(x: torch.Tensor):
        return criterion(x), ifqa_score(x, model)

    compiled = torch.compile(step, fullgraph=True)  # any graph break (e.g. a .item()) raises
    x = face_like_batch(2, size=32, seed=6)
    xe, xc = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    loss_e, score_e = step(xe)
    loss_c, score_c = compiled(xc)
    torch.testing.assert_close(loss_c, loss_e, atol=1e-5, rtol=0)
    torch.testing.assert_close(score_c, score_e, atol=1e-5, rtol=0)
    loss_e.backward()
    loss_c.backward()
    assert xe.grad.abs().sum() > 0
    assert ((xc.grad - xe.grad).norm() / xe.grad.norm()).item() < 1e-3  # inductor's fused kernels round otherwise
    # the NaN/Inf check is eager-only: under compile a NaN propagates (documented), eagerly it raises
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    loss_bad, score_bad = compiled(bad)
    assert torch.isnan(loss_bad) and torch.isnan(score_bad[0])
    with pytest.raises(ValueError, match="NaN"):
        step(bad)
