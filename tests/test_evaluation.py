"""``ifqa_loss.evaluation`` and ``ifqa evaluate-mos``: the statistics against scipy, the four layouts on miniature
datasets generated here, bad rows reported and skipped, the results.json contract, and resumption from the cache."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ifqa_loss import evaluation as ev
from ifqa_loss.cli import main

scipy_stats = pytest.importorskip("scipy.stats")


# ---------------------------------------------------------------- statistics against scipy


def _samples():
    rng = np.random.default_rng(7)
    out = []
    for n in (4, 9, 33, 250, 1201):
        x = rng.normal(size=n)
        y = 0.6 * x + rng.normal(size=n)
        out += [(x, y), (np.round(x, 1), np.round(y * 2) / 2), (np.round(x), y), (x, -y)]
    return out


@pytest.mark.parametrize("k", range(20))
def test_correlations_equal_scipys(k):
    x, y = _samples()[k]
    assert ev.srcc(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-9)
    assert ev.krcc(x, y) == pytest.approx(scipy_stats.kendalltau(x, y).statistic, abs=1e-9)
    assert ev.plcc(x, y) == pytest.approx(scipy_stats.pearsonr(x, y).statistic, abs=1e-9)
    np.testing.assert_allclose(ev.rankdata(x), scipy_stats.rankdata(x), atol=0)


def test_constant_side_gives_nan_not_an_error():
    x = np.arange(10.0)
    assert math.isnan(ev.srcc(x, np.ones(10))) and math.isnan(ev.krcc(np.ones(10), x))
    assert math.isnan(ev.plcc(x, np.full(10, 3.0)))


def _logistic(x, b1, b2, b3, b4):
    return (b1 - b2) / (1 + np.exp(-(x - b3) / np.abs(b4))) + b2


@pytest.mark.parametrize("seed,falling", [(0, False), (1, False), (2, True)])
def test_logistic_fit_matches_scipy_curve_fit(seed, falling):
    from scipy.optimize import curve_fit

    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, 400)
    y = _logistic(x, 4.6, 1.2, 0.45 + 0.1 * seed, 0.08 + 0.03 * seed) + rng.normal(0, 0.35, x.size)
    if falling:
        y = -y
    ours = ev.fit_logistic(x, y)
    p0 = [y.min(), y.max()] if falling else [y.max(), y.min()]
    theirs, _ = curve_fit(_logistic, x, y, p0=p0 + [np.median(x), x.std()], maxfev=50000)
    sse_theirs = float(((_logistic(x, *theirs) - y) ** 2).sum())
    assert ours.sse <= sse_theirs * (1 + 1e-8)  # as good a least-squares fit
    r_ours = scipy_stats.pearsonr(ours(x), y).statistic
    r_theirs = scipy_stats.pearsonr(_logistic(x, *theirs), y).statistic
    assert r_ours == pytest.approx(r_theirs, abs=1e-7)
    stats = ev.agreement(x, y)
    assert stats["plcc_fitted"] == pytest.approx(r_theirs, abs=1e-7)
    assert stats["rmse_fitted"] == pytest.approx(math.sqrt(sse_theirs / x.size), rel=1e-7)
    fitted = ev.logistic4(np.sort(x), ours.params)
    assert (np.diff(fitted) <= 0).all() if falling else (np.diff(fitted) >= 0).all()  # monotonic


@pytest.mark.parametrize("n,rounding", [(12, None), (40, None), (40, 1), (80, None), (300, 2)])
def test_wilcoxon_equals_scipys(n, rounding):
    rng = np.random.default_rng(n)
    a = rng.normal(size=n)
    b = a + rng.normal(0.3, 1.0, n)
    if rounding is not None:  # ties and zeros
        a, b = np.round(a, rounding), np.round(b, rounding)
        b[:3] = a[:3]
    ours = ev.wilcoxon_signed_rank(a, b)
    method = "exact" if ours["method"] == "exact" else "asymptotic"
    theirs = scipy_stats.wilcoxon(a, b, method=method)
    assert ours["statistic"] == theirs.statistic
    assert ours["p"] == pytest.approx(theirs.pvalue, rel=1e-9, abs=1e-12)
    assert (ours["method"] == "exact") == (n <= 50 and rounding is None)


def test_sign_flip_test_exact_and_sampled():
    rng = np.random.default_rng(3)
    d = rng.normal(0.4, 1.0, 12)
    exact = ev.sign_flip_test(d)
    theirs = scipy_stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf)
    assert exact["method"] == "exact" and exact["p"] == pytest.approx(theirs.pvalue, abs=1e-12)
    big = rng.normal(0.5, 1.0, 60)
    sampled = ev.sign_flip_test(big, resamples=4000, seed=1)
    assert sampled["method"] == "monte carlo" and 0 < sampled["p"] < 0.01
    null = ev.sign_flip_test(rng.normal(0.0, 1.0, 60), resamples=4000, seed=1)
    assert null["p"] > 0.01
    assert ev.sign_flip_test(np.zeros(30))["p"] == 1.0


def test_bootstrap_interval_brackets_the_value():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    y = x + rng.normal(size=300)
    res = ev.agreement_with_ci(x, y, resamples=60, seed=0)
    assert set(res) == set(ev.STATISTICS)
    for k, v in res.items():
        lo, hi = v["ci95"]
        assert lo <= v["value"] <= hi, k
    assert res == ev.agreement_with_ci(x, y, resamples=60, seed=0)  # seeded: repeatable


# ---------------------------------------------------------------- miniature datasets


def _face(path, level: float, seed: int, size: int = 24) -> None:
    """A tiny image whose smoothness follows ``level`` (the synthetic MOS rises with detail)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (size, size, 3))
    k = max(1, int(round(6 * (1 - level))))  # box blur of width k: less detail for a lower level
    smooth = np.cumsum(np.cumsum(np.pad(noise, ((k, 0), (k, 0), (0, 0))), 0), 1)
    smooth = (smooth[k:, k:] - smooth[:-k, k:] - smooth[k:, :-k] + smooth[:-k, :-k]) / (k * k)
    img = np.clip(128 + 60 * smooth[:size, :size], 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)


def _levels(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, n), rng


def _make_problems(folder, names, mos):
    """Append the four bad rows every layout must survive: a missing image, a duplicated name (its second row),
    a NaN MOS and an unreadable file."""
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    _face(folder / "unrated.png", 0.5, 999)
    names += ["absent.png", names[0], "unrated.png", "broken.png"]
    mos += [3.0, 1.0, float("nan"), 2.0]
    return names, mos


@pytest.fixture(scope="module")
def cgfiqa_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cgfiqa")
    names, mos = [], []
    for split, n in (("train", 3), ("test", 30)):
        img = root / split / "img"
        img.mkdir(parents=True)
        (root / split / "landmark").mkdir()
        levels, rng = _levels(n, seed=len(split))
        names, mos = [], []
        for i, lv in enumerate(levels):
            name = f"{split}_{i:03d}.png"
            _face(img / name, lv, i)
            np.save(root / split / "landmark" / f"{split}_{i:03d}.npy", np.zeros((68, 2), np.float32))
            names.append(name)
            mos.append(float(1 + 4 * lv + rng.normal(0, 0.3)))
        if split == "test":
            names, mos = _make_problems(img, names, mos)
        (root / split / "label.json").write_text(json.dumps({"Image": names, "MOS": mos}))
    return root


def _run(argv, capsys):
    capsys.readouterr()
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _cached_scores(cache_path):
    """The exact scores the run used: the cache, key -> {ident: score}."""
    out = {}
    for line in cache_path.read_text().splitlines():
        e = json.loads(line)
        out.setdefault(e["key"], {}).update(e["scores"])
    return out


def _check_contract(results: dict, n_scored: int, n_skipped: int, names) -> None:
    assert set(results) == set(names)
    for r in results.values():
        assert r["n_scored"] == n_scored and r["n_skipped"] == n_skipped
        for s in ("srcc", "krcc", "plcc", "plcc_fitted", "rmse_fitted"):
            v = r[s]
            assert set(v) >= {"value", "ci95"} and isinstance(v["value"], float) and len(v["ci95"]) == 2
            assert all(isinstance(c, float) for c in v["ci95"])


def test_cgfiqa_layout_contract_and_scipy_agreement(cgfiqa_root, lite_weights, tmp_path, capsys):
    out = tmp_path / "results.json"
    rc, stdout, err = _run(["evaluate-mos", str(cgfiqa_root), "--layout", "cgfiqa", "--split", "test",
                            "--weights", str(lite_weights), "--out", str(out), "--bootstrap", "10",
                            "--no-progress"], capsys)
    assert rc == 1, err  # images were skipped: reported, counted, not a crash
    results = json.loads(out.read_text())
    name = lite_weights.stem
    _check_contract(results, 30, 4, [name, "laplacian_var", "tenengrad"])
    assert results[name]["skipped"] == {"missing": 1, "duplicated": 1, "nan_mos": 1, "unreadable": 1}
    for what in ("absent.png", "duplicated", "not a number", "broken.png"):
        assert what in err
    assert "SRCC" in stdout and name in stdout and (tmp_path / "results.png").is_file()
    # the correlations are scipy's, on the scores the run used (its cache) and the MOS of the label file
    label = json.loads((cgfiqa_root / "test" / "label.json").read_text())
    mos = dict(zip(label["Image"][:30], label["MOS"][:30]))
    cached = _cached_scores(tmp_path / "results.json.cache.jsonl")
    keys = sorted(mos)
    for scorer in (name, "laplacian_var", "tenengrad"):
        ident = next(i for i in cached[keys[0]] if (scorer in ("laplacian_var", "tenengrad") and scorer in i)
                     or (scorer == name and i.startswith("ifqa:")))
        x = np.array([cached[k][ident] for k in keys])
        y = np.array([mos[k] for k in keys])
        r = results[scorer]
        assert r["srcc"]["value"] == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-9)
        assert r["krcc"]["value"] == pytest.approx(scipy_stats.kendalltau(x, y).statistic, abs=1e-9)
        assert r["plcc"]["value"] == pytest.approx(scipy_stats.pearsonr(x, y).statistic, abs=1e-9)
    # and the cached IFQA scores are what the API gives for those files
    from ifqa_loss import IFQA

    api = IFQA(weights=lite_weights).score_images([str(cgfiqa_root / "test" / "img" / k) for k in keys]).score
    ident = next(i for i in cached[keys[0]] if i.startswith("ifqa:"))
    np.testing.assert_allclose([cached[k][ident] for k in keys], api.double().numpy(), atol=1e-6)
    # the baselines rise with detail, as the synthetic MOS does
    assert results["laplacian_var"]["srcc"]["value"] > 0.5


def test_gfiqa_layout(lite_weights, tmp_path, capsys):
    root = tmp_path / "gfiqa"
    (root / "image").mkdir(parents=True)
    levels, rng = _levels(24, seed=5)
    names, mos = [], []
    for i, lv in enumerate(levels):
        _face(root / "image" / f"{i:05d}.png", lv, 100 + i)
        names.append(f"{i:05d}.png")
        mos.append(float(lv + rng.normal(0, 0.05)))
    names, mos = _make_problems(root / "image", names, mos)
    with open(root / "mos.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img_name", "mos_z"])
        w.writerows(zip(names, ["nan" if math.isnan(m) else m for m in mos]))
    out = tmp_path / "g.json"
    rc, _, err = _run(["evaluate-mos", str(root), "--layout", "gfiqa", "--weights", str(lite_weights), "--out",
                       str(out), "--bootstrap", "10", "--no-progress", "--no-baselines"], capsys)
    assert rc == 1
    results = json.loads(out.read_text())
    _check_contract(results, 24, 4, [lite_weights.stem])
    assert results[lite_weights.stem]["skipped"] == {"missing": 1, "duplicated": 1, "nan_mos": 1, "unreadable": 1}


def _piq23(root, n_scenes=3, per_scene=10):
    """PIQ23 as distributed: Scores/Scores_Overall.csv with Windows paths, Test split/Device Split.csv by name."""
    (root / "Overall").mkdir(parents=True)
    rows, split_rows = [], []
    for s in range(n_scenes):
        levels, rng = _levels(per_scene, seed=20 + s)
        for i, lv in enumerate(levels):
            name = f"{s * per_scene + i}_Indoor_Scene_{s}.jpg"
            _face(root / "Overall" / "tmp.png", lv, 300 + 10 * s + i)
            (root / "Overall" / "tmp.png").rename(root / "Overall" / name)  # a PNG named .jpg: decoders sniff
            # scene 0 leaves the IMAGE column empty: the name then comes from IMAGE PATH
            rows.append([f"Overall\\{name}", f"{10 * lv + 3 * s + rng.normal(0, 0.5):.4f}", name if s else "",
                         f"Indoor_Scene_{s}", "Indoor"])
            split_rows.append([name, "Test" if i >= 2 else "Train"])
    (root / "Scores").mkdir()
    with open(root / "Scores" / "Scores_Overall.csv", "w", newline="") as f:
        csv.writer(f).writerows([["IMAGE PATH", "JOD", "IMAGE", "SCENE", "CONDITION"], *rows])
    (root / "Test split").mkdir()
    with open(root / "Test split" / "Device Split.csv", "w", newline="") as f:
        csv.writer(f).writerows([["IMAGE", "SPLIT"], *split_rows])
    return rows, split_rows


def test_piq23_layout_reports_the_median_over_scenes(lite_weights, tmp_path, capsys):
    root = tmp_path / "piq23"
    rows, split_rows = _piq23(root)
    out = tmp_path / "p.json"
    rc, _, err = _run(["evaluate-mos", str(root), "--layout", "piq23", "--weights", str(lite_weights), "--out",
                       str(out), "--bootstrap", "10", "--no-progress"], capsys)
    assert rc == 0, err
    results = json.loads(out.read_text())
    _check_contract(results, 24, 0, [lite_weights.stem, "laplacian_var", "tenengrad"])
    r = results["laplacian_var"]
    assert set(r["groups"]) == {f"Indoor_Scene_{s}" for s in range(3)}
    assert all(g["n"] == 8 for g in r["groups"].values())
    # the headline is the median of the per-scene SRCCs, each scipy's
    cached = _cached_scores(tmp_path / "p.json.cache.jsonl")
    per_scene = []
    for s in range(3):
        keys = [row[0].replace("\\", "/") for row, sp in zip(rows, split_rows) if row[3] == f"Indoor_Scene_{s}"
                and sp[1] == "Test"]
        x = [next(v for i, v in cached[k].items() if "laplacian" in i) for k in keys]
        y = [float(row[1]) for row, sp in zip(rows, split_rows) if row[3] == f"Indoor_Scene_{s}" and sp[1] == "Test"]
        per_scene.append(scipy_stats.spearmanr(x, y).statistic)
        assert r["groups"][f"Indoor_Scene_{s}"]["srcc"] == pytest.approx(per_scene[-1], abs=1e-9)
    assert r["srcc"]["value"] == pytest.approx(float(np.median(per_scene)), abs=1e-9)
    assert r["run"]["headline"] == "median over groups" and "pooled" in r


def test_csv_layout_with_groups_and_problems(lite_weights, tmp_path, capsys):
    root = tmp_path / "any"
    (root / "pics").mkdir(parents=True)
    levels, rng = _levels(20, seed=9)
    lines = [["file", "rating", "who"]]
    for i, lv in enumerate(levels):
        _face(root / "pics" / f"{i}.png", lv, 500 + i)
        lines.append([f"pics/{i}.png", f"{lv * 100:.3f}", "ab"[i % 2]])
    _face(root / "pics" / "unrated.png", 0.5, 999)
    lines += [["pics/missing.png", "5", "a"], ["pics/0.png", "7", "b"], ["pics/unrated.png", "", "a"]]
    (root / "pics" / "bad.png").write_bytes(b"GIF89a garbage")
    lines.append(["pics/bad.png", "3", "b"])
    with open(root / "ratings.csv", "w", newline="") as f:
        csv.writer(f).writerows(lines)
    out = tmp_path / "c.json"
    rc, _, err = _run(["evaluate-mos", str(root / "ratings.csv"), "--layout", "csv", "--image-col", "file",
                       "--score-col", "rating", "--group-col", "who", "--weights", str(lite_weights),
                       "--out", str(out), "--bootstrap", "10", "--no-progress"], capsys)
    assert rc == 1
    results = json.loads(out.read_text())
    _check_contract(results, 20, 4, [lite_weights.stem, "laplacian_var", "tenengrad"])
    r = results["tenengrad"]
    assert set(r["groups"]) == {"a", "b"} and "group_median" in r
    assert r["skipped"] == {"missing": 1, "duplicated": 1, "nan_mos": 1, "unreadable": 1}


def test_usage_errors_name_the_problem(tmp_path, capsys):
    (tmp_path / "test").mkdir()
    rc, _, err = _run(["evaluate-mos", str(tmp_path), "--layout", "cgfiqa", "--out", str(tmp_path / "r.json")],
                      capsys)
    assert rc == 2 and "label.json" in err
    (tmp_path / "test" / "label.json").write_text('{"Image": ["a.png"], "MOS": [1, 2]}')
    rc, _, err = _run(["evaluate-mos", str(tmp_path), "--layout", "cgfiqa", "--out", str(tmp_path / "r.json")],
                      capsys)
    assert rc == 2 and "one length" in err
    (tmp_path / "s.csv").write_text("a,b\nx.png,1\n")
    rc, _, err = _run(["evaluate-mos", str(tmp_path / "s.csv"), "--layout", "csv", "--out", str(tmp_path / "r.json")],
                      capsys)
    assert rc == 2 and "--image-col" in err
    rc, _, err = _run(["evaluate-mos", str(tmp_path / "nowhere"), "--layout", "csv", "--out", "r.json"], capsys)
    assert rc == 2 and "no such file" in err


# ---------------------------------------------------------------- resumption


class _Interrupt(Exception):
    pass


def _counting_scorer(calls: list, fail_after: int | None = None) -> ev.Scorer:
    def fn(images):
        if fail_after is not None and len(calls) >= fail_after:
            raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a run
        calls.append(len(images))
        return ev.laplacian_variance(torch.stack([i.float() / 255 for i in images])).double().numpy()

    return ev.Scorer("lap", "test:lap", fn)


def test_an_interrupted_run_resumes_from_its_cache(cgfiqa_root, tmp_path):
    data = ev.read_cgfiqa(cgfiqa_root, "test")
    cache = tmp_path / "scores.jsonl"
    calls: list = []
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(data, [_counting_scorer(calls, fail_after=3)], batch_size=4, cache_path=cache, resamples=0)
    assert sum(calls) == 12 and len(cache.read_text().splitlines()) == 12  # three complete batches kept
    with open(cache, "a") as f:
        f.write('{"key": "test_0')  # a line cut short by the interruption
    calls2: list = []
    resumed, data2 = ev.evaluate(data, [_counting_scorer(calls2)], batch_size=4, cache_path=cache, resamples=0)
    assert sum(calls2) == 30 - 12  # the rest (the unreadable file is tried again, and fails again)
    assert data2["cache_bad_lines"] == 1
    calls3: list = []
    fresh, _ = ev.evaluate(data, [_counting_scorer(calls3)], batch_size=4, cache_path=None, resamples=0)
    assert resumed["lap"]["srcc"] == fresh["lap"]["srcc"] and resumed["lap"]["plcc"] == fresh["lap"]["plcc"]
    calls4: list = []
    again, _ = ev.evaluate(data, [_counting_scorer(calls4)], batch_size=4, cache_path=cache, resamples=0)
    assert calls4 == [] and again["lap"]["n_scored"] == 30  # everything cached: nothing scored


def test_a_changed_file_is_scored_again(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    items = []
    for i in range(6):
        _face(img / f"{i}.png", i / 6, i)
        items.append(ev.Item(f"{i}.png", img / f"{i}.png", float(i)))
    cache = tmp_path / "c.jsonl"
    ev.evaluate(ev.Dataset(items), [_counting_scorer([])], batch_size=2, cache_path=cache, resamples=0)
    _face(img / "3.png", 0.9, 99)  # replaced: new size or modification time
    import os

    os.utime(img / "3.png", ns=(1, 1))
    calls: list = []
    ev.evaluate(ev.Dataset(items), [_counting_scorer(calls)], batch_size=2, cache_path=cache, resamples=0)
    assert sum(calls) == 1
