"""Agreement with human opinion scores: the statistics, the datasets' layouts, and a streaming, resumable scorer.

``ifqa evaluate-mos`` is built from this module; ``ifqa compare`` (:mod:`ifqa_loss.compare`) uses its paired tests.
Everything here is numpy and torch: scipy is only a test dependency (the tests check these functions against it).

Statistics (all float64):

- :func:`srcc` (Spearman, average ranks for ties), :func:`krcc` (Kendall's tau-b, O(n log^2 n)), :func:`plcc`
  (Pearson): what ``scipy.stats.spearmanr``, ``kendalltau`` and ``pearsonr`` give.
- :func:`fit_logistic`: the 4-parameter monotonic logistic of VQEG (FR-TV Phase II),
  ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``, fitted by Levenberg-Marquardt from several starts; the
  PLCC and RMSE "after the fit" are those of ``f(score)`` against the MOS. The 4-parameter form is monotonic by
  construction (the 5-parameter form of Sheikh et al. adds a linear term that can make it non-monotonic).
- :func:`bootstrap_ci`: percentile bootstrap over images (seeded, so a run is repeatable).
- :func:`wilcoxon_signed_rank`: zeros dropped (Wilcoxon's method), average ranks for ties; the exact null
  distribution when n <= 50 and there are no ties, else the normal approximation with the tie-corrected variance,
  no continuity correction: ``scipy.stats.wilcoxon``'s defaults.
- :func:`sign_flip_test`: the paired permutation test of the mean difference (every sign pattern when n <= 16,
  else random flips).
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

LOGISTIC_FORM = "4-parameter VQEG logistic: f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2"
LAYOUTS = ("cgfiqa", "gfiqa", "piq23", "csv")
STATISTICS = ("srcc", "krcc", "plcc", "plcc_fitted", "rmse_fitted")
BOOTSTRAP_FIT_ITERATIONS = 40  # per resample, warm-started from the full fit (see fit_logistic)


# ---------------------------------------------------------------- correlations


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length ({x.size} vs {y.size})")
    return x, y


def rankdata(x) -> np.ndarray:
    """Ranks 1..n, ties given the mean of the ranks they span (``scipy.stats.rankdata``'s ``"average"``)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # first and last position of each run of equal values
    starts = np.r_[True, xs[1:] != xs[:-1]]
    run = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], xs.size] - 1
    ranks = np.empty(x.size)
    ranks[order] = (first[run] + last[run]) / 2.0 + 1.0
    return ranks


def plcc(x, y) -> float:
    """Pearson's linear correlation; NaN when either side is constant (fewer than 2 points included)."""
    x, y = _pair(x, y)
    if x.size < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    nx, ny = np.sqrt(np.dot(dx, dx)), np.sqrt(np.dot(dy, dy))
    if nx == 0 or ny == 0:
        return float("nan")
    # normalise first (as scipy does) so the dot product cannot overflow for huge values
    return float(np.clip(np.dot(dx / nx, dy / ny), -1.0, 1.0))


def srcc(x, y) -> float:
    """Spearman's rank correlation: Pearson's of the average ranks."""
    x, y = _pair(x, y)
    return plcc(rankdata(x), rankdata(y))


def _dense_ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    vs = v[order]
    out = np.empty(v.size, dtype=np.int64)
    out[order] = np.cumsum(np.r_[False, vs[1:] != vs[:-1]])
    return out


def _inversions(v: np.ndarray) -> int:
    """Pairs i < j with v[i] > v[j] (v: integers in [0, n)): a bottom-up merge sort, each level one numpy sort.

    At width w, each sorted left block is compared with the sorted right block beside it: for every right value,
    the left values of its pair greater than it are counted with ``searchsorted`` on keys ``pair * n + value``
    (keys of different pairs never interleave), then the pair is merged by sorting those keys.
    """
    n = v.size
    a = v.astype(np.int64).copy()
    idx = np.arange(n)
    total, w = 0, 1
    while w < n:
        pair = idx // (2 * w)
        right = (idx // w) % 2 == 1
        keys = pair * n + a
        left_keys = keys[~right]  # sorted: blocks are sorted and pairs increase
        rk, rp = keys[right], pair[right]
        hi = np.searchsorted(left_keys, rp * n + n, side="left")
        gt = np.searchsorted(left_keys, rk, side="right")
        total += int((hi - gt).sum())
        a = np.sort(keys) - pair * n  # merge every pair (pair ids are already in order)
        w *= 2
    return total


def _run_pairs(starts: np.ndarray) -> int:
    """Pairs within runs of equal values, the runs of a sorted array given by where they start."""
    counts = np.diff(np.r_[np.flatnonzero(starts), starts.size])
    return int((counts * (counts - 1) // 2).sum())


def krcc(x, y) -> float:
    """Kendall's tau-b (ties in x, y or both corrected for, as ``scipy.stats.kendalltau``); NaN for a constant side."""
    x, y = _pair(x, y)
    n = x.size
    if n < 2:
        return float("nan")
    order = np.lexsort((y, x))  # by x, then y: within ties of x, y ascends, so those pairs add no inversion
    xs, ys = x[order], y[order]
    dis = _inversions(_dense_ranks(ys))
    tot = n * (n - 1) // 2
    new_x = np.r_[True, xs[1:] != xs[:-1]]
    xtie = _run_pairs(new_x)
    ytie = _run_pairs(np.r_[True, np.diff(np.sort(ys)) != 0])
    ntie = _run_pairs(new_x | np.r_[True, ys[1:] != ys[:-1]])  # sorted by (x, y): equal pairs are adjacent
    if xtie == tot or ytie == tot:
        return float("nan")
    con_minus_dis = tot - xtie - ytie + ntie - 2 * dis
    return float(np.clip(con_minus_dis / np.sqrt(tot - xtie) / np.sqrt(tot - ytie), -1.0, 1.0))


# ---------------------------------------------------------------- the monotonic logistic


def logistic4(x, params) -> np.ndarray:
    """The VQEG 4-parameter logistic (see :data:`LOGISTIC_FORM`) at ``x``."""
    b1, b2, b3, b4 = params
    z = -(np.asarray(x, dtype=np.float64) - b3) / max(abs(b4), 1e-300)
    return (b1 - b2) / (1.0 + np.exp(np.clip(z, -700, 700))) + b2


def _residual_jacobian(x, y, p):
    b1, b2, b3, b4 = p
    s = max(abs(b4), 1e-300)
    z = np.clip(-(x - b3) / s, -700, 700)
    g = 1.0 / (1.0 + np.exp(z))  # sigmoid((x - b3) / s)
    r = (b1 - b2) * g + b2 - y
    dg = g * (1.0 - g)  # d g / d((x - b3) / s)
    jac = np.stack([g, 1.0 - g, (b1 - b2) * dg * (-1.0 / s), (b1 - b2) * dg * (-(x - b3) / s ** 2) * np.sign(b4 or 1)],
                   axis=1)
    return r, jac


def _levenberg_marquardt(x, y, p0, iterations: int = 200) -> tuple[np.ndarray, float]:
    p = np.asarray(p0, dtype=np.float64).copy()
    r, jac = _residual_jacobian(x, y, p)
    cost = float(r @ r)
    lam = 1e-3
    for _ in range(iterations):
        jtj, jtr = jac.T @ jac, jac.T @ r
        # Marquardt's scaling: damping proportional to the diagonal, so parameters of any scale move alike
        diag = np.diag(jtj).copy()
        diag[diag <= 0] = 1.0
        improved = False
        for _ in range(12):  # damping up to 1e12 times larger: beyond that no step helps
            try:
                step = np.linalg.solve(jtj + lam * np.diag(diag), -jtr)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            cand = p + step
            if abs(cand[3]) < 1e-12:
                lam *= 10
                continue
            r2, jac2 = _residual_jacobian(x, y, cand)
            c2 = float(r2 @ r2)
            if np.isfinite(c2) and c2 < cost:
                # converged when the cost stops falling (relative 1e-10) or the step vanishes
                converged = cost - c2 <= 1e-10 * max(cost, 1e-300) or np.abs(step).max() <= 1e-10 * (
                    np.abs(p).max() + 1e-10)
                p, r, jac, cost = cand, r2, jac2, c2
                lam = max(lam / 10, 1e-12)
                improved = True
                break
            lam *= 10
        if not improved or converged:
            break
    return p, cost


@dataclass
class LogisticFit:
    """A fitted :func:`logistic4`: ``params`` (b1, b2, b3, b4) and the sum of squared residuals."""

    params: np.ndarray
    sse: float

    def __call__(self, x) -> np.ndarray:
        return logistic4(x, self.params)


def fit_logistic(score, mos, starts: Sequence[np.ndarray] | None = None, iterations: int = 200) -> LogisticFit:
    """Least-squares fit of ``mos ~ logistic4(score)`` (Levenberg-Marquardt, analytic Jacobian).

    Started from several points (plateaus at the MOS extremes, centre at the median score, slopes from 1/10 to 3
    times the score spread; rising and falling) and the best kept: the logistic's sum of squares has flat
    regions where a single start can stall. ``starts`` replaces them (the bootstrap warm-starts from the full
    fit, with fewer ``iterations``: near-linear data drive the fit toward an ever flatter logistic, a valley
    whose last iterations change the PLCC by less than 1e-6).
    """
    x, y = _pair(score, mos)
    if x.size < 4:
        raise ValueError(f"a 4-parameter fit needs at least 4 points, got {x.size}")
    if starts is None:
        spread = float(np.std(x)) or 1.0
        lo, hi, mid = float(y.min()), float(y.max()), float(np.median(x))
        rising = plcc(x, y) >= 0 if np.ptp(x) > 0 else True
        b1, b2 = (hi, lo) if rising else (lo, hi)
        starts = [np.array([b1, b2, mid, spread * k]) for k in (0.1, 0.3, 1.0, 3.0)]
        starts.append(np.array([b2, b1, mid, spread]))  # the other direction, should the data say so
    best: LogisticFit | None = None
    for p0 in starts:
        p, sse = _levenberg_marquardt(x, y, p0, iterations)
        if best is None or sse < best.sse:
            best = LogisticFit(p, sse)
    best.params[3] = abs(best.params[3])  # only |b4| enters the curve: report it positive
    return best


# ---------------------------------------------------------------- the statistics and their intervals


def agreement(score, mos, fit_starts=None, iterations: int = 200) -> dict[str, float]:
    """SRCC, KRCC, PLCC of the raw scores, and PLCC and RMSE of the fitted logistic, for one set of images."""
    x, y = _pair(score, mos)
    out = {"srcc": srcc(x, y), "krcc": krcc(x, y), "plcc": plcc(x, y)}
    if x.size >= 4 and np.ptp(x) > 0:
        fit = fit_logistic(x, y, fit_starts, iterations)
        pred = fit(x)
        out["plcc_fitted"] = plcc(pred, y)
        out["rmse_fitted"] = float(np.sqrt(np.mean((pred - y) ** 2)))
        out["_params"] = fit.params
    else:
        out["plcc_fitted"] = out["rmse_fitted"] = float("nan")
    return out


def bootstrap_ci(stat: Callable[[np.ndarray], dict[str, float]], n: int, resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of each value ``stat(indices)`` returns, over ``resamples`` draws of ``n``
    indices with replacement. Resamples where a value is NaN (e.g. a constant side) are left out of its interval."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        for k, v in stat(idx).items():
            if not k.startswith("_"):
                draws.setdefault(k, []).append(v)
    alpha = (1 - level) / 2
    out = {}
    for k, vals in draws.items():
        a = np.asarray(vals, dtype=np.float64)
        a = a[np.isfinite(a)]
        out[k] = [float(np.quantile(a, alpha)), float(np.quantile(a, 1 - alpha))] if a.size else [math.nan] * 2
    return out


def agreement_with_ci(score, mos, resamples: int = 1000, seed: int = 0) -> dict[str, dict]:
    """:func:`agreement` with a bootstrap 95 % interval for each statistic: ``{name: {"value", "ci95"}}``."""
    x, y = _pair(score, mos)
    point = agreement(x, y)
    starts = [point["_params"]] if "_params" in point else None

    def stat(idx):
        return agreement(x[idx], y[idx], starts, BOOTSTRAP_FIT_ITERATIONS)

    ci = bootstrap_ci(stat, x.size, resamples, seed) if resamples > 0 and x.size >= 2 else {}
    return {k: {"value": _num(point[k]), "ci95": [_num(v) for v in ci.get(k, [math.nan, math.nan])]}
            for k in STATISTICS}


def grouped_agreement_with_ci(score, mos, groups, resamples: int = 1000, seed: int = 0) -> dict:
    """Per-group :func:`agreement` and their median over groups (PIQ23's protocol: the median over scenes of the
    per-scene correlations). The median's interval resamples images within each group (a stratified bootstrap).

    Returns ``{"median": {stat: {"value", "ci95"}}, "groups": {group: {"n", stat: value}}}``; groups with fewer
    than 4 images are listed but left out of the median (too few for the fit)."""
    x, y = _pair(score, mos)
    g = np.asarray(groups, dtype=object)
    names = sorted(set(g.tolist()), key=str)
    members = {k: np.flatnonzero(g == k) for k in names}
    usable = [k for k in names if members[k].size >= 4]
    per = {k: agreement(x[members[k]], y[members[k]]) for k in names}
    starts = {k: ([per[k]["_params"]] if "_params" in per[k] else None) for k in usable}

    def medians(values: dict[str, dict]) -> dict[str, float]:
        return {s: float(np.nanmedian([values[k][s] for k in usable])) if usable else math.nan for s in STATISTICS}

    point = medians(per)
    rng = np.random.default_rng(seed)
    draws = {s: [] for s in STATISTICS}
    for _ in range(resamples if usable else 0):
        res = {}
        for k in usable:
            m = members[k]
            idx = m[rng.integers(0, m.size, m.size)]
            res[k] = agreement(x[idx], y[idx], starts[k], BOOTSTRAP_FIT_ITERATIONS)
        for s, v in medians(res).items():
            draws[s].append(v)
    out = {}
    for s in STATISTICS:
        a = np.asarray(draws[s], dtype=np.float64)
        a = a[np.isfinite(a)]
        ci = [float(np.quantile(a, 0.025)), float(np.quantile(a, 0.975))] if a.size else [math.nan, math.nan]
        out[s] = {"value": _num(point[s]), "ci95": [_num(c) for c in ci]}
    return {"median": out,
            "groups": {str(k): {"n": int(members[k].size), **{s: _num(per[k][s]) for s in STATISTICS}}
                       for k in names}}


def _num(v) -> float | None:
    """JSON has no NaN: an undefined statistic is written as null."""
    v = float(v)
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------- paired tests


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _signed_rank_exact_cdf(n: int) -> np.ndarray:
    """P(W+ <= w) for w = 0..n(n+1)/2 under the null, without ties: the counts of subsets of 1..n by their sum."""
    m = n * (n + 1) // 2
    counts = np.zeros(m + 1, dtype=np.float64)  # float: 2**50 subsets still count exactly below 2**53
    counts[0] = 1
    for k in range(1, n + 1):
        counts[k:] = counts[k:] + counts[:-k].copy()
    return np.cumsum(counts) / 2.0 ** n


def wilcoxon_signed_rank(a, b=None) -> dict:
    """Two-sided Wilcoxon signed-rank test of the paired differences ``a - b`` (or of ``a`` alone).

    Zero differences are dropped (Wilcoxon's method); tied absolute differences get average ranks. The p-value
    is exact (the null distribution of W+ counted) when 1 <= n <= 50 and no ranks tie, otherwise the normal
    approximation with the tie-corrected variance and no continuity correction.

    Returns:
        ``{"statistic": min(W+, W-), "p": p-value, "n": non-zero pairs, "method": "exact" | "normal"}``
        (p = 1 when every difference is zero).
    """
    d = np.asarray(a, dtype=np.float64).ravel()
    if b is not None:
        d = d - np.asarray(b, dtype=np.float64).ravel()
    d = d[d != 0]
    n = d.size
    if n == 0:
        return {"statistic": 0.0, "p": 1.0, "n": 0, "method": "exact"}
    r = rankdata(np.abs(d))
    r_plus, r_minus = float(r[d > 0].sum()), float(r[d < 0].sum())
    t = min(r_plus, r_minus)
    ties = np.unique(np.abs(d), return_counts=True)[1]
    if n <= 50 and (ties == 1).all():
        cdf = _signed_rank_exact_cdf(n)
        k = int(round(t))
        p_low = cdf[k]  # P(W <= t); W's null distribution is symmetric, so P(W >= m - t) is the same
        return {"statistic": t, "p": float(min(1.0, 2.0 * p_low)), "n": n, "method": "exact"}
    mean = n * (n + 1) / 4.0
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float((ties ** 3 - ties).sum()) / 48.0
    if var <= 0:
        return {"statistic": t, "p": 1.0, "n": n, "method": "normal"}
    z = (t - mean) / math.sqrt(var)
    return {"statistic": t, "p": float(min(1.0, 2.0 * _normal_sf(abs(z)))), "n": n, "method": "normal"}


def sign_flip_test(a, b=None, resamples: int = 10000, seed: int = 0, exact_max_n: int = 16) -> dict:
    """Paired permutation test of the mean difference: under the null each difference is as likely negated.

    Every one of the 2**n sign patterns when n <= ``exact_max_n``; otherwise ``resamples`` random patterns, with
    the observed one counted among them (p = (1 + hits) / (1 + resamples), never 0). Two-sided: a pattern counts
    when its |mean| reaches the observed |mean| (less a relative 1e-12, so float rounding does not split ties).

    Returns ``{"mean_diff", "p", "n", "method": "exact" | "monte carlo", "resamples"}``.
    """
    d = np.asarray(a, dtype=np.float64).ravel()
    if b is not None:
        d = d - np.asarray(b, dtype=np.float64).ravel()
    n = d.size
    if n == 0:
        return {"mean_diff": math.nan, "p": 1.0, "n": 0, "method": "exact", "resamples": 0}
    obs = abs(d.mean())
    tol = obs - 1e-12 * max(obs, np.abs(d).max())
    if n <= exact_max_n:
        signs = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1) * 2.0 - 1.0
        means = np.abs(signs @ d) / n
        return {"mean_diff": float(d.mean()), "p": float((means >= tol).mean()), "n": n, "method": "exact",
                "resamples": 2 ** n}
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    while done < resamples:  # in chunks: a (resamples, n) sign matrix of 40,000 faces would not fit
        k = min(1000, resamples - done)
        signs = rng.integers(0, 2, (k, n)) * 2.0 - 1.0
        hits += int((np.abs(signs @ d) / n >= tol).sum())
        done += k
    return {"mean_diff": float(d.mean()), "p": (1 + hits) / (1 + resamples), "n": n, "method": "monte carlo",
            "resamples": resamples}


def mean_ci(values, resamples: int = 2000, seed: int = 0) -> dict:
    """The mean and its percentile-bootstrap 95 % interval: ``{"value", "ci95"}``."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"value": None, "ci95": [None, None]}
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, 500):
        k = min(500, resamples - start)
        means.append(v[rng.integers(0, v.size, (k, v.size))].mean(axis=1))
    m = np.concatenate(means) if means else np.array([v.mean()])
    return {"value": float(v.mean()), "ci95": [float(np.quantile(m, 0.025)), float(np.quantile(m, 0.975))]}


# ---------------------------------------------------------------- dataset layouts


@dataclass
class Item:
    """One rated image: ``key`` (its name in the dataset's list), the file, the human score and its group."""

    key: str
    path: Path
    mos: float
    group: str | None = None


@dataclass
class Dataset:
    """The usable items of a layout and the rows skipped while reading it: ``(key, reason)``."""

    items: list[Item]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    grouped: bool = False  # report the median over groups (PIQ23) as the headline numbers
    description: str = ""


class LayoutError(ValueError):
    """The dataset root does not hold the layout asked for; the message says what is missing."""


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _collect(rows: Iterable[tuple[str, Path, object, str | None]], description: str, grouped: bool = False,
             check_files: bool = True) -> Dataset:
    """Rows ``(key, path, mos, group)`` into a :class:`Dataset`: NaN or missing MOS, duplicated keys (the first
    row is kept) and missing files are skipped with their reason."""
    items, skipped, seen = [], [], {}
    for i, (key, path, mos, group) in enumerate(rows):
        m = _float(mos)
        if key in seen:
            skipped.append((key, f"duplicated name (row {i + 1}; row {seen[key] + 1} kept)"))
            continue
        seen[key] = i
        if not math.isfinite(m):
            skipped.append((key, f"MOS is not a number ({mos!r})"))
            continue
        if check_files and not path.is_file():
            skipped.append((key, f"missing image {path}"))
            continue
        items.append(Item(key, path, m, group))
    return Dataset(items, skipped, grouped, description)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheets write a BOM
            reader = csv.DictReader(f)
            rows = list(reader)
            return [c.strip() for c in (reader.fieldnames or [])], [
                {(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in rows]
    except OSError as e:
        raise LayoutError(f"cannot read {path}: {e.strerror or e}") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise LayoutError(f"{path} is not a readable CSV ({e})") from None


def _column(columns: list[str], wanted: str | None, candidates: Sequence[str], path: Path, what: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise LayoutError(f"{path} has no column {wanted!r} (columns: {', '.join(columns)})")
        return wanted
    lower = {c.lower(): c for c in columns}
    for c in candidates:
        if c.lower() in lower:
            return lower[c.lower()]
    raise LayoutError(f"{path}: cannot tell which column holds the {what} (columns: {', '.join(columns)}); "
                      f"name it with --{'image' if what == 'image name' else 'score'}-col")


def read_cgfiqa(root: str | os.PathLike, split: str = "test") -> Dataset:
    """CGFIQA-40k as distributed: ``{split}/label.json`` (parallel lists ``"Image"`` and ``"MOS"``) and
    ``{split}/img/<Image>``. (``{split}/landmark/*.npy`` is not needed to score.)"""
    base = Path(root) / split
    label = base / "label.json"
    if not label.is_file():
        raise LayoutError(f"{label} not found: a CGFIQA split holds label.json and img/ (is --split right?)")
    try:
        data = json.loads(label.read_text())
        names, mos = data["Image"], data["MOS"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LayoutError(f"{label}: expected a JSON object with lists 'Image' and 'MOS' ({type(e).__name__}: {e})"
                          ) from None
    if not isinstance(names, list) or not isinstance(mos, list) or len(names) != len(mos):
        raise LayoutError(f"{label}: 'Image' and 'MOS' must be lists of one length "
                          f"(got {len(names) if isinstance(names, list) else type(names).__name__} and "
                          f"{len(mos) if isinstance(mos, list) else type(mos).__name__})")
    img = base / "img"
    return _collect(((str(n), img / str(n), m, None) for n, m in zip(names, mos)), f"CGFIQA {split} ({label})")


def _find_one_csv(root: Path, what: str) -> Path:
    found = sorted(root.glob("*.csv"))
    if len(found) != 1:
        raise LayoutError(f"{root}: expected one CSV of {what}, found {len(found)}"
                          f"{' (' + ', '.join(p.name for p in found) + ')' if found else ''}; name it with --csv-file")
    return found[0]


def read_gfiqa(root: str | os.PathLike, csv_file: str | os.PathLike | None = None, image_col: str | None = None,
               score_col: str | None = None, images: str | os.PathLike | None = None) -> Dataset:
    """GFIQA-20k: an image folder and a CSV of image name and MOS.

    The CSV is ``csv_file`` or the one CSV in ``root``; its columns are found by name (``image``/``name``/
    ``img_name``/``filename``, ``mos``/``MOS``/``score``) unless given. Images are in ``images``, else the first
    of ``root/image``, ``root/images``, ``root/img`` that exists, else ``root``.
    """
    root = Path(root)
    table = Path(csv_file) if csv_file else _find_one_csv(root, "image names and MOS")
    columns, rows = _read_csv(table)
    icol = _column(columns, image_col, ["image", "name", "img_name", "image_name", "filename", "file", "img"],
                   table, "image name")
    scol = _column(columns, score_col, ["mos", "score", "mos_z", "dmos"], table, "MOS")
    folder = Path(images) if images else next((root / d for d in ("image", "images", "img") if (root / d).is_dir()),
                                              root)
    return _collect(((r[icol], folder / r[icol], r[scol], None) for r in rows), f"GFIQA ({table}, images {folder})")


def read_piq23(root: str | os.PathLike, split: str | None = "test", attribute: str = "Overall",
               split_file: str | os.PathLike | None = None, images: str | os.PathLike | None = None) -> Dataset:
    """PIQ23 as its repository and download lay it out: ``Scores_<attribute>.csv`` (in ROOT or ``ROOT/Scores``;
    columns ``IMAGE PATH`` such as ``Overall\\66_Indoor_Scene_0.jpg``, ``JOD``, ``SCENE``, ``IMAGE``, ...) and a split
    CSV (``IMAGE`` or ``IMAGE PATH``, and ``SPLIT``: Train or Test): ``split_file``, else the one under ROOT with a
    ``SPLIT`` column, PIQ23's ``Test split/Device Split.csv`` preferred. ``split=None`` keeps every image.
    Image paths are relative to ``images``, else ROOT.

    The headline numbers are the median over scenes of the per-scene statistics, as PIQ23 reports them.
    """
    root = Path(root)
    name = f"Scores_{attribute}.csv"
    scores = next((p for p in (root / name, root / "Scores" / name) if p.is_file()), None)
    if scores is None:
        have = ", ".join(sorted({p.name for p in root.rglob("Scores_*.csv")})) or "none"
        raise LayoutError(f"{name} not found in {root} or {root / 'Scores'} (score files: {have}); "
                          "pick one with --attribute")
    columns, rows = _read_csv(scores)
    for c in ("IMAGE PATH", "JOD", "SCENE"):
        if c not in columns:
            raise LayoutError(f"{scores} has no column {c!r} (columns: {', '.join(columns)})")

    def file_name(r: dict) -> str:
        return r.get("IMAGE") or _norm_path(r["IMAGE PATH"]).rsplit("/", 1)[-1]

    keep = None
    if split is not None:
        if split_file is None:
            candidates = [p for p in sorted(root.rglob("*.csv")) if not p.name.startswith("Scores_")
                          and "SPLIT" in _read_csv(p)[0]]
            if not candidates:
                raise LayoutError(f"no split CSV (with a SPLIT column) under {root}; give --split-file, or "
                                  "--split all to use every image")
            device = [p for p in candidates if "device" in p.name.lower()]
            split_file = (device or candidates)[0]
        scols, srows = _read_csv(Path(split_file))
        if "SPLIT" not in scols or not ({"IMAGE", "IMAGE PATH"} & set(scols)):
            raise LayoutError(f"{split_file} needs a 'SPLIT' column and 'IMAGE' or 'IMAGE PATH' "
                              f"(columns: {', '.join(scols)})")
        keep = {file_name(r) for r in srows if r["SPLIT"].strip().lower() == split.lower()}
        if not keep:
            values = sorted({r["SPLIT"] for r in srows})
            raise LayoutError(f"{split_file}: no image has SPLIT {split!r} (values: {', '.join(values)})")
    folder = Path(images) if images else root
    selected = [r for r in rows if keep is None or file_name(r) in keep]
    return _collect(((_norm_path(r["IMAGE PATH"]), folder / _norm_path(r["IMAGE PATH"]), r["JOD"], r["SCENE"])
                     for r in selected), f"PIQ23 {attribute}, split {split} ({scores})", grouped=True)


def _norm_path(p: str) -> str:
    return p.strip().replace("\\", "/").lstrip("/")  # PIQ23's CSVs were written on Windows


def read_csv_layout(root: str | os.PathLike, image_col: str | None = None, score_col: str | None = None,
                    group_col: str | None = None, images: str | os.PathLike | None = None) -> Dataset:
    """Any CSV: ``root`` is the CSV file (or a folder with one CSV); image paths are relative to ``images`` or to
    the CSV's folder. With ``group_col`` the per-group statistics and their median are reported too."""
    root = Path(root)
    table = root if root.is_file() else _find_one_csv(root, "image paths and scores")
    columns, rows = _read_csv(table)
    icol = _column(columns, image_col, ["image", "path", "image_path", "name", "filename", "file"], table,
                   "image name")
    scol = _column(columns, score_col, ["mos", "score", "jod", "dmos"], table, "MOS")
    gcol = _column(columns, group_col, [], table, "group") if group_col else None
    folder = Path(images) if images else table.parent
    return _collect(((_norm_path(r[icol]), folder / _norm_path(r[icol]), r[scol], r[gcol] if gcol else None)
                     for r in rows), f"CSV {table} ({icol}, {scol}{', ' + gcol if gcol else ''})")


def read_layout(root, layout: str, split: str | None = "test", **options) -> Dataset:
    """Dispatch to the reader of ``layout`` (one of :data:`LAYOUTS`); ``options`` are the reader's keywords."""
    if layout == "cgfiqa":
        return read_cgfiqa(root, split or "test")
    if layout == "gfiqa":
        return read_gfiqa(root, options.get("csv_file"), options.get("image_col"), options.get("score_col"),
                          options.get("images"))
    if layout == "piq23":
        return read_piq23(root, split, options.get("attribute") or "Overall", options.get("split_file"),
                          options.get("images"))
    if layout == "csv":
        return read_csv_layout(root, options.get("image_col"), options.get("score_col"), options.get("group_col"),
                               options.get("images"))
    raise LayoutError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


# ---------------------------------------------------------------- scorers


LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def _luma255(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None] * 255


def laplacian_variance(x: torch.Tensor) -> torch.Tensor:
    """Variance of the Laplacian of the luma (8-bit levels): the classic sharpness score, as in
    ``benchmarks/quality.py``. ``x``: (N, 3, H, W) in [0, 1]."""
    return torch.nn.functional.conv2d(_luma255(x), LAPLACIAN[None, None].to(x)).var(dim=(1, 2, 3))


def tenengrad(x: torch.Tensor) -> torch.Tensor:
    """Mean squared Sobel gradient magnitude of the luma (as in ``benchmarks/quality.py``)."""
    y = _luma255(x)
    k = SOBEL[None, None].to(x)
    return (torch.nn.functional.conv2d(y, k).square() + torch.nn.functional.conv2d(y, k.transpose(-1, -2)).square()
            ).mean(dim=(1, 2, 3))


BASELINES = {"laplacian_var": laplacian_variance, "tenengrad": tenengrad}


@dataclass
class Scorer:
    """A named scorer: ``fn`` maps a list of (3, H, W) uint8 images to (N,) scores. ``ident`` identifies it in
    the score cache (the weights' sha256 for IFQA models), so a cache is never reused for another model."""

    name: str
    ident: str
    fn: Callable[[list[torch.Tensor]], np.ndarray]
    info: dict = field(default_factory=dict)


def ifqa_scorer(backbone: str | None = None, weights: str | None = None, device: str = "cpu",
                batch_size: int = 8, name: str | None = None) -> Scorer:
    """An IFQA model as a :class:`Scorer` (``IFQA.score_images``: the path of ``ifqa score``)."""
    from .core import IFQA
    from .weights import REGISTRY, sha256_of

    model = IFQA(backbone=backbone, weights=weights).to(device)
    if weights is None or (not Path(str(weights)).is_file() and str(weights) in REGISTRY):
        reg = REGISTRY[str(weights) if weights else "ifqa-lite"]
        sha, label = reg.sha256, reg.name
    else:
        sha, label = sha256_of(weights), Path(str(weights)).stem
    if model.backbone != "lite" and weights is None:
        label = model.backbone

    def fn(images: list[torch.Tensor]) -> np.ndarray:
        return model.score_images(images, batch_size=batch_size).score.double().cpu().numpy()

    return Scorer(name or label, f"ifqa:{model.backbone}:{sha}", fn,
                  {"kind": "ifqa", "backbone": model.backbone, "weights": model.weights_source, "sha256": sha})


def baseline_scorer(name: str) -> Scorer:
    """A classical baseline (:data:`BASELINES`) on the image resized to 256 x 256 with the library's resize."""
    from .io import to_batch

    f = BASELINES[name]

    def fn(images: list[torch.Tensor]) -> np.ndarray:
        return f(to_batch(images, "lite")).double().numpy()

    return Scorer(name, f"baseline:{name}:v1", fn, {"kind": "baseline", "resize": 256})


# ---------------------------------------------------------------- streaming scoring with a resumable cache


class ScoreCache:
    """Scores already computed, as JSON lines appended after every batch: ``{"key", "size", "mtime_ns", "scores":
    {scorer ident: score}}``. A file whose size or modification time changed is scored again. A line cut short by
    an interruption is ignored, so an interrupted run resumes from its last complete batch."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path else None
        self.entries: dict[str, dict] = {}
        self.bad_lines = 0
        if self.path is not None and self.path.is_file():
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        e = json.loads(line)
                        key, scores = e["key"], e["scores"]
                        old = self.entries.get(key)
                        if old is not None and (old["size"], old["mtime_ns"]) == (e["size"], e["mtime_ns"]):
                            old["scores"].update(scores)
                        else:
                            self.entries[key] = {"size": e["size"], "mtime_ns": e["mtime_ns"], "scores": dict(scores)}
                    except (ValueError, KeyError, TypeError):
                        self.bad_lines += 1
        self._file = None

    @staticmethod
    def _stat(path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_size, st.st_mtime_ns

    def lookup(self, item: Item, idents: Sequence[str]) -> dict[str, float] | None:
        """The cached scores of ``item`` for every ident, or None if any is missing or the file changed."""
        e = self.entries.get(item.key)
        if e is None:
            return None
        try:
            if (e["size"], e["mtime_ns"]) != self._stat(item.path):
                return None
        except OSError:
            return None
        if all(i in e["scores"] for i in idents):
            return {i: float(e["scores"][i]) for i in idents}
        return None

    def add(self, rows: list[tuple[Item, dict[str, float]]]) -> None:
        if self.path is None or not rows:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            cut = False
            if self.path.is_file() and self.path.stat().st_size > 0:
                with open(self.path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    cut = f.read(1) != b"\n"
            self._file = open(self.path, "a", encoding="utf-8")
            if cut:  # end the line an interruption cut short, or the next entry would be lost with it
                self._file.write("\n")
        lines = []
        for item, scores in rows:
            try:
                size, mtime = self._stat(item.path)
            except OSError:
                continue
            lines.append(json.dumps({"key": item.key, "size": size, "mtime_ns": mtime, "scores": scores}) + "\n")
        self._file.write("".join(lines))
        self._file.flush()  # a later interruption loses at most the batch being scored

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _decode(path: Path):
    from .io import check_size, load_image

    try:
        img = load_image(path)
        check_size(img, str(path))
        return img, None
    except ValueError as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - a decoder bug must not stop a 40,000-image run
        return None, f"{path}: cannot decode ({type(e).__name__}: {e})"


def _prefetched(items: Sequence[Item], depth: int) -> Iterator[tuple[Item, torch.Tensor | None, str | None]]:
    """Decode in a background thread, at most ``depth`` images ahead: memory bounded by ``depth`` images."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: list = []
        it = iter(items)
        for item in it:
            pending.append((item, pool.submit(_decode, item.path)))
            if len(pending) >= depth:
                break
        while pending:
            item, fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_decode, nxt.path)))
            img, err = fut.result()
            yield item, img, err


def score_dataset(items: Sequence[Item], scorers: Sequence[Scorer], batch_size: int = 8,
                  cache: ScoreCache | None = None, progress: bool = False
                  ) -> tuple[dict[str, np.ndarray], list[int], list[tuple[str, str]]]:
    """Score every item with every scorer, ``batch_size`` images in memory at a time.

    Returns ``(scores, used, skipped)``: ``scores[name]`` aligned with ``used`` (indices into ``items`` of the
    images scored), and ``(key, reason)`` for the images that could not be decoded.
    """
    idents = [s.ident for s in scorers]
    cache = cache or ScoreCache(None)
    values: dict[str, list[float]] = {s.name: [] for s in scorers}
    order: dict[int, int] = {}  # item index -> position in the score lists
    skipped: list[tuple[str, str]] = []
    todo = []
    for i, item in enumerate(items):
        hit = cache.lookup(item, idents)
        if hit is None:
            todo.append(i)
        else:
            order[i] = len(values[scorers[0].name])
            for s in scorers:
                values[s.name].append(hit[s.ident])
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), file=sys.stderr, desc="scoring", unit="img", dynamic_ncols=True)
    batch: list[tuple[int, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        imgs = [img for _, img in batch]
        out = {s.ident: s.fn(imgs) for s in scorers}
        rows = []
        for j, (i, _) in enumerate(batch):
            order[i] = len(values[scorers[0].name])
            scores = {s.ident: float(out[s.ident][j]) for s in scorers}
            for s in scorers:
                values[s.name].append(scores[s.ident])
            rows.append((items[i], scores))
        cache.add(rows)
        if bar is not None:
            bar.update(len(batch))
        batch.clear()

    try:
        todo_items = [items[i] for i in todo]
        for i, (item, img, err) in zip(todo, _prefetched(todo_items, depth=2 * batch_size)):
            if err is not None:
                skipped.append((item.key, err))
                if bar is not None:
                    bar.update(1)
                continue
            batch.append((i, img))
            if len(batch) == batch_size:
                flush()
        flush()
    finally:
        cache.close()
        if bar is not None:
            bar.close()
    used = sorted(order)
    pos = np.array([order[i] for i in used], dtype=np.int64)
    return {k: np.asarray(v, dtype=np.float64)[pos] if len(v) else np.zeros(0) for k, v in values.items()}, used, \
        skipped


# ---------------------------------------------------------------- one evaluation


def evaluate(dataset: Dataset, scorers: Sequence[Scorer], batch_size: int = 8, cache_path=None,
             resamples: int = 1000, seed: int = 0, progress: bool = False) -> tuple[dict, dict]:
    """Score ``dataset`` and compute the agreement of each scorer with the MOS.

    Returns ``(results, data)``: ``results[name]`` holds ``n_scored``, ``n_skipped``, ``skipped`` (counts by
    reason), and ``srcc``, ``krcc``, ``plcc``, ``plcc_fitted``, ``rmse_fitted`` as ``{"value", "ci95"}``
    (for a grouped dataset: the median over groups, with ``pooled`` and ``groups`` beside); ``data`` holds the
    arrays for plotting (``mos``, ``scores``, ``fits``) and the skipped ``(key, reason)`` list.
    """
    cache = ScoreCache(cache_path)
    scores, used, decode_skipped = score_dataset(dataset.items, scorers, batch_size, cache, progress)
    skipped = list(dataset.skipped) + decode_skipped
    mos = np.array([dataset.items[i].mos for i in used], dtype=np.float64)
    groups = [dataset.items[i].group for i in used]
    reasons: dict[str, int] = {}
    for _, why in skipped:
        kind = _reason_kind(why)
        reasons[kind] = reasons.get(kind, 0) + 1
    results, fits = {}, {}
    for s in scorers:
        x = scores[s.name]
        entry: dict = {"n_scored": int(x.size), "n_skipped": len(skipped), "skipped": reasons, "scorer": s.info}
        if x.size >= 2:
            pooled = agreement_with_ci(x, mos, resamples, seed)
            if dataset.grouped or any(g is not None for g in groups):
                grouped = grouped_agreement_with_ci(x, mos, [str(g) for g in groups], resamples, seed)
                entry["groups"] = grouped["groups"]
                if dataset.grouped:  # PIQ23: the median over scenes is the headline, the pooled numbers beside
                    entry.update(grouped["median"])
                    entry["pooled"] = pooled
                else:
                    entry.update(pooled)
                    entry["group_median"] = grouped["median"]
            else:
                entry.update(pooled)
            if x.size >= 4 and np.ptp(x) > 0:
                fit = fit_logistic(x, mos)
                fits[s.name] = fit
                entry["logistic_params"] = [float(p) for p in fit.params]
        else:
            entry.update({k: {"value": None, "ci95": [None, None]} for k in STATISTICS})
        results[s.name] = entry
    return results, {"mos": mos, "scores": scores, "fits": fits, "skipped": skipped,
                     "keys": [dataset.items[i].key for i in used], "cache_bad_lines": cache.bad_lines}


def _reason_kind(why: str) -> str:
    w = why.lower()
    for kind, words in (("duplicated", ["duplicated"]), ("nan_mos", ["mos is not"]),
                        ("missing", ["missing", "no such"]), ("too_small", ["at least"])):
        if any(x in w for x in words):
            return kind
    return "unreadable"


# ---------------------------------------------------------------- the scatter plot (PIL, no matplotlib)


def scatter_plot(path: str | os.PathLike, mos: np.ndarray, scores: dict[str, np.ndarray],
                 fits: dict[str, LogisticFit], stats: dict[str, dict], panel: int = 360) -> None:
    """One panel per scorer: MOS against score, the fitted logistic drawn over the points; written as PNG."""
    from PIL import Image, ImageDraw, ImageFont

    names = list(scores)
    cols = min(3, max(1, len(names)))
    rows = -(-len(names) // cols)
    img = Image.new("RGB", (cols * panel, rows * panel), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    margin_l, margin_b, margin_t, margin_r = 52, 40, 34, 14
    y = np.asarray(mos, dtype=np.float64)
    for k, name in enumerate(names):
        ox, oy = (k % cols) * panel, (k // cols) * panel
        x = np.asarray(scores[name], dtype=np.float64)
        w, h = panel - margin_l - margin_r, panel - margin_t - margin_b
        x0, y0 = ox + margin_l, oy + margin_t
        draw.rectangle([x0, y0, x0 + w, y0 + h], outline=(90, 90, 90))
        st = stats.get(name, {})
        title = f"{name}  SRCC {_fmt(st.get('srcc'))}  PLCC(fit) {_fmt(st.get('plcc_fitted'))}"
        draw.text((ox + 8, oy + 10), title, fill=(0, 0, 0), font=font)
        if x.size == 0:
            continue
        xlo, xhi = _limits(x)
        ylo, yhi = _limits(y)

        def px(a, b):
            return x0 + (a - xlo) / (xhi - xlo) * w, y0 + h - (b - ylo) / (yhi - ylo) * h

        for t in np.linspace(xlo, xhi, 5):
            u, _ = px(t, ylo)
            draw.line([u, y0 + h, u, y0 + h + 4], fill=(90, 90, 90))
            label = _tick(t)
            draw.text((u - draw.textlength(label, font=font) / 2, y0 + h + 7), label, fill=(60, 60, 60), font=font)
        for t in np.linspace(ylo, yhi, 5):
            _, v = px(xlo, t)
            draw.line([x0 - 4, v, x0, v], fill=(90, 90, 90))
            draw.text((ox + 6, v - 5), _tick(t), fill=(60, 60, 60), font=font)
        draw.text((x0 + w // 2 - 14, y0 + h + 22), "score", fill=(0, 0, 0), font=font)
        draw.text((ox + 6, oy + 22), "MOS", fill=(0, 0, 0), font=font)
        step = max(1, x.size // 20000)  # 40,000 dots say no more than 20,000
        for a, b in zip(x[::step], y[::step]):
            u, v = px(a, b)
            draw.ellipse([u - 1.5, v - 1.5, u + 1.5, v + 1.5], fill=(40, 90, 170))
        if name in fits:
            grid = np.linspace(xlo, xhi, 200)
            curve = np.clip(fits[name](grid), ylo, yhi)
            draw.line([px(a, b) for a, b in zip(grid, curve)], fill=(210, 40, 30), width=2)
    img.save(path, format="PNG")


def _tick(t: float) -> str:
    return f"{t:.0f}" if abs(t) >= 100 else f"{t:.3g}"


def _limits(v: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.min(v)), float(np.max(v))
    pad = (hi - lo) * 0.05 or max(abs(lo) * 0.05, 1e-3)
    return lo - pad, hi + pad


def _fmt(stat) -> str:
    v = stat.get("value") if isinstance(stat, dict) else stat
    return "n/a" if v is None else f"{v:.3f}"


def format_table(results: dict) -> str:
    """The results as a fixed-width text table, one row per scorer, value [95 % interval] per statistic."""
    header = ["scorer", "n", "skipped", "SRCC", "KRCC", "PLCC", "PLCC fit", "RMSE fit"]
    rows = []
    for name, r in results.items():
        cells = [name, str(r["n_scored"]), str(r["n_skipped"])]
        for s in STATISTICS:
            v = r[s]
            lo, hi = v["ci95"]
            cells.append("n/a" if v["value"] is None else
                         f"{v['value']:.4f} [{_fmt(lo)}, {_fmt(hi)}]")
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- ifqa evaluate-mos


def add_arguments(p) -> None:
    """The options of ``ifqa evaluate-mos`` (see ``docs/evaluation.md``)."""
    p.add_argument("root", metavar="ROOT", help="the dataset: its folder (or, for --layout csv, the CSV file)")
    p.add_argument("--layout", choices=LAYOUTS, required=True,
                   help="cgfiqa: {split}/label.json + {split}/img; gfiqa: images + a CSV of name and MOS; "
                        "piq23: Scores_<attribute>.csv + a split CSV; csv: any CSV (--image-col, --score-col)")
    p.add_argument("--split", default="test",
                   help="cgfiqa and piq23 split (default test; piq23: 'all' for every image)")
    p.add_argument("--backbone", action="append", choices=["lite", "cnn", "vit"], default=None,
                   help="once for every --weights, or once per --weights in order")
    p.add_argument("--weights", action="append", default=None,
                   help="weights file or registered name; repeat to evaluate several models (default: ifqa-lite)")
    p.add_argument("--no-baselines", action="store_true",
                   help="leave out the classical baselines (variance of Laplacian, Tenengrad)")
    p.add_argument("--out", required=True, metavar="FILE", help="results JSON")
    p.add_argument("--plot", metavar="PNG", help="scatter plot with the fitted curves (default: beside --out)")
    p.add_argument("--cache", metavar="FILE",
                   help="score cache (JSON lines; default: --out + .cache.jsonl); a rerun resumes from it")
    p.add_argument("--no-cache", action="store_true", help="score everything again, keep no cache")
    p.add_argument("--image-col", help="column of image names/paths (gfiqa, csv)")
    p.add_argument("--score-col", help="column of human scores (gfiqa, csv)")
    p.add_argument("--group-col", help="csv: report per-group statistics and their median too")
    p.add_argument("--images", metavar="DIR", help="gfiqa, piq23, csv: the folder image names are relative to")
    p.add_argument("--csv-file", metavar="FILE", help="gfiqa: the CSV, when ROOT holds several")
    p.add_argument("--attribute", default="Overall", help="piq23: Scores_<attribute>.csv (Overall, Details, Exposure)")
    p.add_argument("--split-file", metavar="FILE", help="piq23: the split CSV (default: found under ROOT)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


def build_scorers(args) -> list[Scorer]:
    """The scorers ``--backbone``/``--weights`` name, then the baselines; names made unique."""
    weights = args.weights or [None]
    backbones = args.backbone or [None]
    if len(backbones) not in (1, len(weights)):
        raise ValueError(f"give --backbone once, or once per --weights ({len(weights)}), not {len(backbones)} times")
    if len(backbones) == 1:
        backbones = backbones * len(weights)
    scorers, used = [], set()
    for b, w in zip(backbones, weights):
        s = ifqa_scorer(b, w, args.device, args.batch_size)
        base, k = s.name, 1
        while s.name in used:
            k += 1
            s.name = f"{base}_{k}"
        used.add(s.name)
        scorers.append(s)
    if not args.no_baselines:
        scorers += [baseline_scorer(n) for n in BASELINES]
    return scorers


def run_evaluate_mos(args) -> int:
    """``ifqa evaluate-mos``: the table on stdout, ``--out`` JSON, the scatter PNG. Returns the exit status: 0, or 1
    when images were skipped (missing, unreadable, NaN MOS, duplicated); the counts are in the JSON either way.
    Raises ``ValueError`` (a :class:`LayoutError` included) for usage errors."""
    import torch

    if args.batch_size < 1 or args.bootstrap < 0:
        raise ValueError("--batch-size must be >= 1 and --bootstrap >= 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available")
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a directory")
    if not out.parent.is_dir() and str(out.parent):
        raise ValueError(f"--out {out}: folder {out.parent} does not exist")
    root = Path(args.root)
    if not root.exists():
        raise ValueError(f"{root}: no such file or directory")
    split = None if args.layout == "piq23" and args.split.lower() == "all" else args.split
    dataset = read_layout(root, args.layout, split, image_col=args.image_col, score_col=args.score_col,
                          group_col=args.group_col, images=args.images, csv_file=args.csv_file,
                          attribute=args.attribute, split_file=args.split_file)
    if not dataset.items and not dataset.skipped:
        raise ValueError(f"{dataset.description}: lists no images")
    from .weights import WeightsError

    try:
        scorers = build_scorers(args)
    except (WeightsError, TypeError) as e:
        raise ValueError(str(e)) from None
    cache = None if args.no_cache else Path(args.cache or f"{out}.cache.jsonl")
    results, data = evaluate(dataset, scorers, args.batch_size, cache, args.bootstrap, args.seed,
                             progress=not args.no_progress)
    for key, why in data["skipped"]:
        print(f"ifqa: skipped {key}: {why}", file=sys.stderr)
    if data["cache_bad_lines"]:
        print(f"ifqa: {cache}: ignored {data['cache_bad_lines']} incomplete line(s) (an interrupted write)",
              file=sys.stderr)
    run = {"layout": args.layout, "root": str(root), "split": split, "dataset": dataset.description,
           "logistic": LOGISTIC_FORM, "bootstrap_resamples": args.bootstrap, "seed": args.seed,
           "headline": "median over groups" if dataset.grouped else "pooled over images"}
    for r in results.values():
        r["run"] = run
        r["skipped_items"] = [{"key": k, "reason": w} for k, w in data["skipped"][:200]]
    text = json.dumps(results, indent=1)
    tmp = out.with_name(f".{out.name}.part")
    tmp.write_text(text)
    os.replace(tmp, out)
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    if data["mos"].size:
        scatter_plot(plot, data["mos"], data["scores"], data["fits"], results)
    print(f"{dataset.description}: {len(data['mos'])} images scored, {len(data['skipped'])} skipped "
          f"({', '.join(f'{k} {v}' for k, v in next(iter(results.values()))['skipped'].items()) or 'none'})")
    print(format_table(results))
    print(f"wrote {out} and {plot}" + (f" (cache {cache})" if cache else ""))
    return 1 if data["skipped"] else 0
