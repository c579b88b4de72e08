"""``ifqa compare``: the same faces restored by several methods, scored, tested pairwise, and shown in an HTML report.

Faces are matched across the folders by file stem (``0001.png`` in one folder and ``0001.jpg`` in another are the
same face: methods often change the format); a stem missing from any folder is listed as unmatched, never dropped
silently. Per method: the mean IFQA score with a bootstrap 95 % interval. Per pair of methods (a, b): the paired
mean difference a - b, the sign-flip permutation test and the Wilcoxon signed-rank test of the differences
(:mod:`ifqa_loss.evaluation`), and ``win_rate_a``, the share of faces where a scores higher (ties count half).

With ``--reference HQ_DIR``: PSNR and SSIM (torchmetrics, on [0, 1] RGB at the reference's size), and, with the
``faces`` extra, identity similarity (cosine of dlib's 128-d face-recognition ResNet embeddings, whose weights ship
in face-recognition-models) and landmark distance (mean distance of the 68 dlib landmarks, in reference pixels).
Landmarks of both images are found inside the reference's face box, so a heavily degraded face, which the detector
might miss, is still measured.

The report folder holds ``report.html`` (self-contained: no network, no script or style from elsewhere), the
thumbnails and heatmaps it shows under ``img/``, and ``results.json``.
"""
from __future__ import annotations

import html
import io
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .evaluation import mean_ci, sign_flip_test, wilcoxon_signed_rank

#: Per-face metrics: (key, label, higher is better).
METRICS = [("ifqa", "IFQA", True), ("psnr", "PSNR (dB)", True), ("ssim", "SSIM", True),
           ("identity", "identity (cos)", True), ("landmark_distance", "landmark dist. (px)", False)]


def add_arguments(p) -> None:
    """The options of ``ifqa compare`` (see ``docs/evaluation.md``)."""
    p.add_argument("dirs", nargs="+", metavar="DIR", help="one folder of restored faces per method")
    p.add_argument("--names", nargs="+", metavar="NAME", help="method names (default: the folder names)")
    p.add_argument("--reference", metavar="HQ_DIR", help="ground-truth faces: adds PSNR, SSIM and, with the faces "
                                                         "extra, identity similarity and landmark distance")
    p.add_argument("--report", required=True, metavar="OUT_DIR", help="writes OUT_DIR/report.html and results.json")
    p.add_argument("--backbone", choices=["lite", "cnn", "vit"], default=None)
    p.add_argument("--weights", default=None, help="weights file or registered name (default: bundled ifqa-lite)")
    p.add_argument("--no-face-metrics", action="store_true", help="skip identity and landmarks even with the extra")
    p.add_argument("--thumb", type=int, default=128, metavar="PX", help="thumbnail side in the report (default 128)")
    p.add_argument("--permutations", type=int, default=10000, help="random sign flips when n > 16 (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


# ---------------------------------------------------------------- matching


def match_faces(dirs: list[Path], names: list[str], reference: Path | None = None
                ) -> tuple[list[str], dict[str, dict[str, Path]], dict[str, list[str]], list[str]]:
    """Faces common to every folder, by stem.

    Returns ``(stems, files, unmatched, problems)``: the common stems (sorted), ``files[method][stem]``,
    ``unmatched[method]`` = stems of that folder missing from another one (and, under ``"reference"``, the common
    stems the reference lacks), and problems such as two files of one stem in a folder (both left out).
    """
    from .io import find_images

    files: dict[str, dict[str, Path]] = {}
    problems: list[str] = []
    for name, d in zip(names, dirs):
        found, _ = find_images([d])
        by_stem: dict[str, Path] = {}
        dup: set[str] = set()
        for f in map(Path, found):
            if f.stem in by_stem:
                dup.add(f.stem)
            by_stem[f.stem] = f
        for s in sorted(dup):
            problems.append(f"{d}: several files named {s}.* (left out: which one is the face?)")
            del by_stem[s]
        files[name] = by_stem
    common = set.intersection(*(set(f) for f in files.values())) if files else set()
    unmatched = {n: sorted(set(f) - common) for n, f in files.items()}
    if reference is not None:
        found, _ = find_images([reference])
        ref: dict[str, Path] = {}
        for f in map(Path, found):
            ref.setdefault(f.stem, f)
        files["reference"] = ref
        unmatched["reference"] = sorted(common - set(ref))
    return sorted(common), files, unmatched, problems


# ---------------------------------------------------------------- identity and landmarks (faces extra)


class FaceJudge:
    """dlib's 68-landmark predictor and face-recognition ResNet, measured inside the reference's face box."""

    def __init__(self) -> None:
        from . import faces

        self.dlib = faces._dlib()
        self.predictor = faces._predictor68()
        self.recognizer = self.dlib.face_recognition_model_v1(
            faces._model_file("dlib_face_recognition_resnet_model_v1.dat"))
        self.detector = faces._hog()

    def box(self, ref_hwc: np.ndarray):
        """The reference's largest detected face, else the central 70 % (aligned crops put the face there)."""
        found = list(self.detector(ref_hwc, 1))
        if found:
            return max(found, key=lambda r: r.width() * r.height())
        h, w = ref_hwc.shape[:2]
        return self.dlib.rectangle(int(0.15 * w), int(0.15 * h), int(0.85 * w), int(0.85 * h))

    def measure(self, hwc: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
        """(68, 2) landmarks and the 128-d embedding of the face in ``box``."""
        shape = self.predictor(hwc, box)
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        return points, np.asarray(self.recognizer.compute_face_descriptor(hwc, shape), dtype=np.float64)


def face_judge() -> FaceJudge | None:
    """A :class:`FaceJudge`, or None without the faces extra."""
    from .faces import FacesUnavailableError

    try:
        return FaceJudge()
    except (FacesUnavailableError, RuntimeError, AttributeError):
        return None


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else math.nan


# ---------------------------------------------------------------- scoring


def _hwc(img: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(img.permute(1, 2, 0).numpy())


def _jpeg(rgb_hwc: np.ndarray, path: Path, side: int) -> None:
    from PIL import Image

    im = Image.fromarray(rgb_hwc)
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=88)
    path.write_bytes(buf.getvalue())


def _reference_metrics(img: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    from .io import to_float

    x, t = to_float(img), to_float(ref)
    if x.shape[-2:] != t.shape[-2:]:  # measured at the reference's size
        x = torch.nn.functional.interpolate(x, size=t.shape[-2:], mode="bicubic", antialias=True,
                                            align_corners=False).clamp(0, 1)
    return {"psnr": float(peak_signal_noise_ratio(x, t, data_range=1.0)),
            "ssim": float(structural_similarity_index_measure(x, t, data_range=1.0))}


@dataclass
class Comparison:
    methods: list[str]
    stems: list[str]
    values: dict[str, dict[str, list[float]]]  # metric -> method -> per-face values (NaN where not measured)
    unmatched: dict[str, list[str]]
    problems: list[str]
    failed: list[str]


def compare(dirs: list[Path], names: list[str], out_dir: Path, reference: Path | None = None, model=None,
            batch_size: int = 8, face_metrics: bool = True, thumb: int = 128, progress: bool = False) -> Comparison:
    """Score every matched face of every method; write thumbnails and heatmaps under ``out_dir/img``.

    Faces go ``batch_size`` at a time (every method's image of them, and the reference's), so memory does not
    grow with the number of faces. A face any of whose images cannot be decoded is left out for every method
    (the comparison stays paired) and listed in ``failed``.
    """
    from .core import IFQA
    from .io import ImageDecodeError, check_size, load_image, to_uint8
    from .viz import overlay, to_uint8_hwc

    model = model or IFQA()
    stems, files, unmatched, problems = match_faces(dirs, names, reference)
    judge = face_judge() if (reference is not None and face_metrics) else None
    keys = ["ifqa"] + (["psnr", "ssim"] if reference is not None else []) + \
        (["identity", "landmark_distance"] if judge is not None else [])
    values = {k: {m: [] for m in names} for k in keys}
    kept, failed = [], []
    img_dirs = [out_dir / "img" / str(i) for i in range(len(names))]
    for d in img_dirs:
        d.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress and len(stems) > 8:
        from tqdm import tqdm

        bar = tqdm(total=len(stems), file=sys.stderr, desc="comparing", unit="face", dynamic_ncols=True)
    for start in range(0, len(stems), batch_size):
        chunk = []
        for stem in stems[start:start + batch_size]:
            try:
                imgs = [load_image(files[m][stem]) for m in names]
                for m, im in zip(names, imgs):
                    check_size(im, str(files[m][stem]))
                ref = None
                if reference is not None and stem in files["reference"]:
                    ref = load_image(files["reference"][stem])
            except (ImageDecodeError, ValueError) as e:
                failed.append(f"{stem}: {e}")
                continue
            chunk.append((stem, imgs, ref))
        for mi, m in enumerate(names):
            if not chunk:
                break
            out = model.score_images([c[1][mi] for c in chunk], batch_size=batch_size)
            for (stem, imgs, _), s, qmap in zip(chunk, out.score.tolist(), out.map):
                values["ifqa"][m].append(s)
                face = len(kept) + [c[0] for c in chunk].index(stem)
                img = imgs[mi]
                small = torch.nn.functional.interpolate(img[None].float() / 255, size=qmap.shape[-2:],
                                                        mode="bilinear", antialias=True, align_corners=False)
                _jpeg(_hwc(to_uint8(small)[0]), img_dirs[mi] / f"{face}.jpg", thumb)
                heat = overlay(small.to(qmap.device), qmap[None].float())[0]
                _jpeg(to_uint8_hwc(heat), img_dirs[mi] / f"{face}_map.jpg", thumb)
        for stem, imgs, ref in chunk:
            box = ref_hwc = None
            if judge is not None and ref is not None:
                ref_hwc = _hwc(ref)
                box = judge.box(ref_hwc)
                ref_points, ref_desc = judge.measure(ref_hwc, box)
            for m, img in zip(names, imgs):
                if reference is None:
                    continue
                if ref is None:
                    for k in keys[1:]:
                        values[k][m].append(math.nan)
                    continue
                for k, v in _reference_metrics(img, ref).items():
                    values[k][m].append(v)
                if judge is not None:
                    x = img
                    if x.shape[-2:] != ref.shape[-2:]:
                        x = to_uint8(torch.nn.functional.interpolate(
                            x[None].float() / 255, size=ref.shape[-2:], mode="bicubic", antialias=True,
                            align_corners=False))[0]
                    points, desc = judge.measure(_hwc(x), box)
                    values["identity"][m].append(_cosine(desc, ref_desc))
                    values["landmark_distance"][m].append(float(np.linalg.norm(points - ref_points, axis=1).mean()))
        kept += [c[0] for c in chunk]
        if bar is not None:
            bar.update(len(stems[start:start + batch_size]))
    if bar is not None:
        bar.close()
    return Comparison(list(names), kept, values, unmatched, problems, failed)


# ---------------------------------------------------------------- statistics


def pair_stats(a: np.ndarray, b: np.ndarray, higher_is_better: bool = True, permutations: int = 10000,
               seed: int = 0) -> dict:
    """Paired statistics of a vs b over the faces where both are finite."""
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    d = a - b
    perm = sign_flip_test(d, resamples=permutations, seed=seed)
    wil = wilcoxon_signed_rank(d)
    better = d > 0 if higher_is_better else d < 0
    wins = float((better.sum() + 0.5 * (d == 0).sum()) / d.size) if d.size else math.nan
    ci = mean_ci(d, seed=seed)
    return {"n": int(d.size), "mean_diff": float(d.mean()) if d.size else None, "mean_diff_ci95": ci["ci95"],
            "p_permutation": perm["p"], "permutation_method": perm["method"], "p_wilcoxon": wil["p"],
            "wilcoxon_method": wil["method"], "win_rate_a": wins}


def summarise(c: Comparison, permutations: int = 10000, seed: int = 0) -> dict:
    """``results.json``: per-method means, the IFQA ``pairs`` (the contract), the pairs of the other metrics, the
    per-face values, and what was not compared."""
    methods = {}
    for m in c.methods:
        methods[m] = {"n": len(c.stems)}
        for key, _, _ in METRICS:
            if key in c.values:
                methods[m][key] = mean_ci(c.values[key][m], seed=seed)
    by_metric = {}
    for key, _, higher in METRICS:
        if key not in c.values:
            continue
        rows = []
        for i, a in enumerate(c.methods):
            for b in c.methods[i + 1:]:
                st = pair_stats(np.asarray(c.values[key][a], dtype=np.float64),
                                np.asarray(c.values[key][b], dtype=np.float64), higher, permutations, seed)
                rows.append({"a": a, "b": b, **st})
        by_metric[key] = rows
    faces = [{"name": s, **{k: {m: _num(c.values[k][m][i]) for m in c.methods} for k in c.values}}
             for i, s in enumerate(c.stems)]
    return {"methods": methods, "pairs": by_metric.get("ifqa", []), "pairs_by_metric": by_metric,
            "n_faces": len(c.stems), "unmatched": c.unmatched, "problems": c.problems, "failed": c.failed,
            "matching": "by file stem", "tests": {
                "p_permutation": "two-sided sign-flip permutation test of the mean difference "
                                 f"(exact for n <= 16, else {permutations} random flips)",
                "p_wilcoxon": "two-sided Wilcoxon signed-rank, zeros dropped (exact for n <= 50 without ties, "
                              "else normal approximation, tie-corrected)",
                "win_rate_a": "share of faces where a is better (ties half)"},
            "faces": faces}


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------- the HTML report


def _fmt(v, digits: int = 4) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _p(v) -> str:
    return "–" if v is None else (f"{v:.2e}" if v < 1e-3 else f"{v:.4f}")


def distribution_svg(values: dict[str, list[float]], width: int = 640, height: int = 220) -> str:
    """Histograms of each method's IFQA scores as step lines, one colour each, as inline SVG."""
    colors = ["#1f5fa8", "#d2461e", "#2a9d4b", "#8e44ad", "#c79a00", "#17a2b8", "#555555"]
    allv = np.concatenate([np.asarray(v, dtype=np.float64) for v in values.values()]) if values else np.zeros(0)
    allv = allv[np.isfinite(allv)]
    lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.01, hi + 0.01
    bins = np.linspace(lo, hi, 26)
    hists = {m: np.histogram(np.asarray(v, dtype=np.float64)[np.isfinite(v)], bins)[0] for m, v in values.items()}
    top = max((h.max() for h in hists.values() if h.size), default=1) or 1
    ml, mb, mt = 40, 30, 10
    w, h = width - ml - 10, height - mb - mt
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20 * len(values)}" '
             f'role="img" aria-label="distribution of IFQA scores">',
             f'<rect x="{ml}" y="{mt}" width="{w}" height="{h}" fill="none" stroke="#888"/>']
    for t in np.linspace(lo, hi, 6):
        x = ml + (t - lo) / (hi - lo) * w
        parts.append(f'<text x="{x:.1f}" y="{mt + h + 16}" font-size="11" text-anchor="middle">{t:.3f}</text>')
    parts.append(f'<text x="{ml - 6}" y="{mt + 10}" font-size="11" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{ml - 6}" y="{mt + h}" font-size="11" text-anchor="end">0</text>')
    for k, (m, counts) in enumerate(hists.items()):
        pts = []
        for i, cnt in enumerate(counts):
            x0 = ml + (bins[i] - lo) / (hi - lo) * w
            x1 = ml + (bins[i + 1] - lo) / (hi - lo) * w
            y = mt + h - cnt / top * h
            pts += [f"{x0:.1f},{y:.1f}", f"{x1:.1f},{y:.1f}"]
        color = colors[k % len(colors)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(pts)}"/>')
        ly = height + 20 * k + 4
        parts.append(f'<rect x="{ml}" y="{ly}" width="14" height="10" fill="{color}"/>'
                     f'<text x="{ml + 20}" y="{ly + 10}" font-size="12">{html.escape(m)}</text>')
    parts.append("</svg>")
    return "".join(parts)


_SCRIPT = """
(function () {
  var table = document.getElementById('faces');
  var body = table.tBodies[0];
  var state = {key: 'worst', dir: 1};
  function sortBy(key, dir) {
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.dataset[key], y = b.dataset[key];
      if (key === 'name') { return dir * x.localeCompare(y); }
      var fx = parseFloat(x), fy = parseFloat(y);
      if (isNaN(fx)) { fx = Infinity; }
      if (isNaN(fy)) { fy = Infinity; }
      return dir * (fx - fy) || a.dataset.name.localeCompare(b.dataset.name);
    });
    rows.forEach(function (r) { body.appendChild(r); });
    state = {key: key, dir: dir};
    table.dataset.sortedBy = key + (dir > 0 ? ' ascending' : ' descending');
    document.getElementById('sort-state').textContent = 'sorted by ' + table.dataset.sortedBy;
  }
  Array.prototype.forEach.call(table.querySelectorAll('th[data-sort]'), function (th) {
    th.addEventListener('click', function () {
      var key = th.dataset.sort;
      sortBy(key, state.key === key ? -state.dir : 1);
    });
  });
  sortBy('worst', 1);
})();
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; }
td.name, th.name { text-align: left; }
#faces th[data-sort] { cursor: pointer; text-decoration: underline dotted; }
#faces img { display: block; }
.pair { display: flex; gap: 2px; }
.note { color: #666; font-size: 90%; }
"""


def write_report(out_dir: Path, results: dict, c: Comparison, title: str = "ifqa compare") -> Path:
    """``out_dir/report.html``: summary, pairwise tests, the distribution plot and the per-face rows."""
    esc = html.escape
    methods = c.methods
    metric_cols = [(k, label) for k, label, _ in METRICS if k in c.values]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>{esc(title)}</h1>",
             f"<p>{results['n_faces']} faces matched by file stem across {len(methods)} methods.</p>",
             "<h2>Summary</h2><table id='summary'><tr><th class='name'>method</th><th>n</th>"]
    parts += [f"<th>{esc(label)}</th>" for _, label in metric_cols]
    parts.append("</tr>")
    for m in methods:
        row = [f"<tr><td class='name'>{esc(m)}</td><td>{results['methods'][m]['n']}</td>"]
        for k, _ in metric_cols:
            v = results["methods"][m][k]
            row.append(f"<td>{_fmt(v['value'])} <span class='note'>[{_fmt(v['ci95'][0])}, "
                       f"{_fmt(v['ci95'][1])}]</span></td>")
        parts.append("".join(row) + "</tr>")
    parts.append("</table><p class='note'>Means with bootstrap 95 % intervals. PSNR/SSIM against the reference; "
                 "identity: cosine of dlib face embeddings; landmark distance: mean of the 68 points (lower is "
                 "better).</p>")
    parts.append("<h2>Pairwise tests</h2><table id='pairs'><tr><th class='name'>metric</th><th class='name'>a</th>"
                 "<th class='name'>b</th><th>n</th><th>mean a − b [95 %]</th><th>p (sign-flip)</th>"
                 "<th>p (Wilcoxon)</th><th>a better</th></tr>")
    for k, label in metric_cols:
        for r in results["pairs_by_metric"][k]:
            lo, hi = r["mean_diff_ci95"]
            parts.append(f"<tr><td class='name'>{esc(label)}</td><td class='name'>{esc(r['a'])}</td>"
                         f"<td class='name'>{esc(r['b'])}</td><td>{r['n']}</td><td>{_fmt(r['mean_diff'])} "
                         f"[{_fmt(lo)}, {_fmt(hi)}]</td><td>{_p(r['p_permutation'])}</td>"
                         f"<td>{_p(r['p_wilcoxon'])}</td><td>{_fmt(r['win_rate_a'], 3)}</td></tr>")
    parts.append("</table>")
    if any(results["unmatched"].values()) or results["problems"] or results["failed"]:
        parts.append("<h2>Not compared</h2><ul>")
        for m, stems in results["unmatched"].items():
            if stems:
                more = f" … and {len(stems) - 50} more" if len(stems) > 50 else ""
                parts.append(f"<li>{esc(m)}: {len(stems)} unmatched: {esc(', '.join(stems[:50]))}{more}</li>")
        for p in results["problems"] + results["failed"]:
            parts.append(f"<li>{esc(p)}</li>")
        parts.append("</ul>")
    parts.append("<h2>Distribution of IFQA scores</h2>" + distribution_svg(c.values["ifqa"]))
    parts.append("<h2>Faces</h2><p class='note'>Click a header to sort; again to reverse. Default: worst face "
                 "first (lowest IFQA score over the methods). <span id='sort-state'></span></p>")
    parts.append("<table id='faces'><thead><tr><th class='name' data-sort='name'>face</th>"
                 "<th data-sort='worst'>worst IFQA</th>")
    for i, m in enumerate(methods):
        parts.append(f"<th data-sort='s{i}'>{esc(m)}: image, heatmap, IFQA</th>")
    if len(methods) >= 2:
        parts.append(f"<th data-sort='diff'>{esc(methods[0])} − {esc(methods[1])}</th>")
    parts.append("</tr></thead><tbody>")
    scores = c.values["ifqa"]
    for f, stem in enumerate(c.stems):
        s = [scores[m][f] for m in methods]
        attrs = [f"data-name='{esc(stem, quote=True)}'", f"data-worst='{min(s)!r}'"]
        attrs += [f"data-s{i}='{v!r}'" for i, v in enumerate(s)]
        if len(methods) >= 2:
            attrs.append(f"data-diff='{s[0] - s[1]!r}'")
        row = [f"<tr {' '.join(attrs)}><td class='name'>{esc(stem)}</td><td>{min(s):.4f}</td>"]
        for i, m in enumerate(methods):
            alt = esc(f"{m} {stem}", quote=True)
            row.append(f"<td><div class='pair'><img src='img/{i}/{f}.jpg' alt='{alt}'>"
                       f"<img src='img/{i}/{f}_map.jpg' alt='{alt} heatmap'></div>{s[i]:.4f}</td>")
        if len(methods) >= 2:
            row.append(f"<td>{s[0] - s[1]:+.4f}</td>")
        parts.append("".join(row) + "</tr>")
    parts.append(f"</tbody></table><script>{_SCRIPT}</script></body></html>")
    path = out_dir / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


# ---------------------------------------------------------------- ifqa compare


def run_compare(args) -> int:
    """``ifqa compare``: returns the exit status (0; 1 when a face could not be read or names did not match).
    Raises ``ValueError`` for usage errors."""
    from .core import IFQA
    from .weights import WeightsError

    dirs = [Path(d) for d in args.dirs]
    for d in dirs + ([Path(args.reference)] if args.reference else []):
        if not d.is_dir():
            raise ValueError(f"{d}: not a folder of images")
    if len(dirs) < 2:
        raise ValueError("give at least two folders to compare")
    names = args.names or [d.name or str(d) for d in dirs]
    if len(names) != len(dirs):
        raise ValueError(f"--names gives {len(names)} names for {len(dirs)} folders")
    if len(set(names)) != len(names) or "reference" in names:
        raise ValueError(f"method names must be distinct and not 'reference' (got {names}); set them with --names")
    if args.batch_size < 1 or args.thumb < 16 or args.permutations < 1:
        raise ValueError("--batch-size must be >= 1, --thumb >= 16, --permutations >= 1")
    out_dir = Path(args.report)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--report {out_dir}: cannot create the folder ({e.strerror or e})") from None
    try:
        model = IFQA(backbone=args.backbone, weights=args.weights).to(args.device)
    except (WeightsError, TypeError) as e:
        raise ValueError(str(e)) from None
    ref = Path(args.reference) if args.reference else None
    c = compare(dirs, names, out_dir, ref, model, args.batch_size, not args.no_face_metrics, args.thumb,
                progress=not args.no_progress)
    if not c.stems:
        raise ValueError(f"no face is in every folder (matched by file stem): {', '.join(map(str, dirs))}")
    results = summarise(c, args.permutations, args.seed)
    results["ifqa_model"] = {"backbone": model.backbone, "weights": model.weights_source}
    if ref is not None and "identity" not in c.values and not args.no_face_metrics:
        results["face_metrics"] = 'not measured: the faces extra is not installed (pip install "ifqa-loss[faces]")'
    tmp = out_dir / ".results.json.part"
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, out_dir / "results.json")
    report = write_report(out_dir, results, c)
    for m, stems in c.unmatched.items():
        if stems:
            print(f"ifqa: {m}: {len(stems)} face(s) not in every folder: {', '.join(stems[:10])}"
                  f"{' ...' if len(stems) > 10 else ''}", file=sys.stderr)
    for p in c.problems + c.failed:
        print(f"ifqa: {p}", file=sys.stderr)
    if "face_metrics" in results:
        print(f"ifqa: {results['face_metrics']}", file=sys.stderr)
    _print_summary(results, c)
    print(f"wrote {report} and {out_dir / 'results.json'}")
    return 1 if (c.failed or c.problems or any(c.unmatched.values())) else 0


def _print_summary(results: dict, c: Comparison) -> None:
    keys = [k for k, _, _ in METRICS if k in c.values]
    print("method".ljust(16) + "".join(k[:18].rjust(20) for k in keys))
    for m in c.methods:
        print(m[:16].ljust(16) + "".join(_fmt(results["methods"][m][k]["value"]).rjust(20) for k in keys))
    for r in results["pairs"]:
        print(f"{r['a']} - {r['b']}: IFQA mean diff {r['mean_diff']:+.4f}, p(sign-flip) {_p(r['p_permutation'])}, "
              f"p(Wilcoxon) {_p(r['p_wilcoxon'])}, {r['a']} better on {r['win_rate_a']:.1%} of {r['n']} faces")
