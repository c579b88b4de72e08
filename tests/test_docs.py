"""The README and docs/*.md are tested: their code runs, their commands are covered, their links resolve.

- Every ```python block runs, in a folder holding the files the docs name (``face.png``, ``photos/``,
  ``IFQA_Metric.pth`` ...: small synthetic stand-ins, see ``docs_dir``). Blocks that use a training set-up
  of the reader's own get ``generator``, ``opt_g``, ``train_loader`` and ``val_loader`` from ``INJECTED``.
- Every command line of a ```bash block starts with one of ``PROGRAMS`` and is covered: ``ifqa score`` runs
  here through ``ifqa_loss.cli.main``; ``ifqa train`` runs here down to the training call, which is replaced
  by a recorder (training takes minutes to hours; the options are parsed and turned into the run's config);
  everything else is in ``ELSEWHERE``, which names the test or make target that runs it.
- Every relative link, and every repository path written in backticks, names an existing file (and
  heading, and test function).
"""
from __future__ import annotations

import ast
import contextlib
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PROGRAMS = ("ifqa", "python", "make", "pip", "torchrun")

# Commands run somewhere else, keyed by how the command line starts: (where it runs, why not here).
# "make:<target>" is a Makefile target; "tests/<file>::<function>" a test that runs the command (or the script
# with smaller options).
ELSEWHERE = {
    "make demo": ("make:demo", "the demo itself"),
    "make test": ("make:test", "the whole suite"),
    "make test-fast": ("make:test-fast", "the suite without the slow tests"),
    "make lint": ("make:lint", "the linter"),
    "make bench": ("make:bench", "minutes of timing"),
    "make quality": ("make:quality", "../shared/data"),
    "pip install": ("make:install", "needs the network; the Makefile's install step pip-installs the package"),
    "python -m pytest": ("make:test", "these test files are part of the suite"),
    "python fuzz/fuzz_decode.py": ("tests/test_fuzz.py::test_fuzz_decode_plain_loop", "runs for an hour"),
    "python examples/finetune_restoration.py": ("tests/test_examples.py::test_finetune_restoration_fast",
                                                "16 min and ../shared/data; the test runs --fast"),
    "python examples/evaluate_torchmetrics.py": ("tests/test_examples.py::test_evaluate_torchmetrics_fast",
                                                 "a subprocess with DataLoader workers"),
    "python benchmarks/speed.py": ("make:bench", "minutes of timing"),
    "python benchmarks/quality.py": ("tests/test_quality_benchmark.py::test_quality_benchmark_subset",
                                     "../shared/data; the test runs a subset"),
    "python benchmarks/heldout_severity.py": ("tests/test_quality_benchmark.py::test_heldout_severity_subset",
                                              "../shared/data; the test runs a subset"),
    "ifqa evaluate-mos": ("tests/test_evaluation.py::test_cgfiqa_layout_contract_and_scipy_agreement",
                          "needs a human-opinion data set; the tests generate each layout"),
    "ifqa compare": ("tests/test_compare.py::test_results_contract_and_unmatched_names",
                     "needs restored faces; the test generates them"),
    "python benchmarks/compare_degradations.py": ("tests/test_compare.py::test_compare_degradations_benchmark_subset",
                                                  "../shared/data; the test runs 12 faces"),
    "python benchmarks/robustness.py": ("tests/test_robustness_benchmark.py::test_robustness_benchmark_subset",
                                        "../shared/data and minutes of attacks; the test runs 2 faces, 5 steps"),
    "python benchmarks/experiments/jpeg_probe.py": ("tests/test_jpeg_probe.py::test_probe_runs_on_the_bundled_model",
                                        "../shared/data"),
    "ifqa align": ("tests/test_cli_faces.py::test_align_writes_crops_and_landmarks",
                   "needs the faces extra; the test aligns a public-domain photo"),
    "python benchmarks/faces_speed.py": ("tests/test_faces.py::test_faces_speed_benchmark_runs",
                                         "../shared/data; the test times one round on two photos"),
    "make test-integrations": ("make:test-integrations", "its own venv with torchvision and basicsr"),
    "torchrun --nproc_per_node 2 -m ifqa_loss score": (
        "tests/test_cli_distributed.py::test_two_processes_write_the_same_bytes_as_one",
        "two processes; the test compares their output with one process's, byte for byte"),
    "torchrun": ("tests/test_distributed.py::test_train_under_torchrun_gloo",
                 "two processes; the ifqa train part of the command is also checked here"),
}


# ---------------------------------------------------------------- reading the docs


def fenced_blocks(path: Path) -> list[tuple[str, int, str]]:
    """``(language, first line number, code)`` of each fenced block."""
    blocks, lang, start, lines = [], None, 0, []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, lines = line[3:].strip(), i + 1, []
            else:
                blocks.append((lang, start, "\n".join(lines) + "\n"))
                lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, f"{path.name}: unclosed code block from line {start}"
    return blocks


def shell_commands(code: str) -> list[list[str]]:
    """Command lines of a shell block as argv lists: continuations joined, comments and VAR=value dropped."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
            argv = argv[1:]
        if argv:
            out.append(argv)
    return out


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


PYTHON_BLOCKS = [(doc, line, code) for doc in DOCS for lang, line, code in fenced_blocks(doc) if lang == "python"]
COMMANDS = [(doc, line, argv) for doc in DOCS for lang, line, code in fenced_blocks(doc) if lang in ("bash", "sh")
            for argv in shell_commands(code)]


def test_readme_is_a_short_guide_with_the_set_up_commands_first():
    readme = REPO / "README.md"
    assert readme.stat().st_size < 15_000
    first = next(code for lang, _, code in fenced_blocks(readme) if lang in ("bash", "sh"))
    assert [argv for argv in shell_commands(first)] == [["make", "demo"], ["make", "test"]]
    assert len(PYTHON_BLOCKS) >= 5 and len(COMMANDS) >= 10  # the extraction found the docs' code


def test_every_module_is_in_the_package_map():
    text = (REPO / "README.md").read_text()
    table = text[text.index("## Package map"):].split("\n## ")[0]
    named = set()
    for line in table.splitlines():  # "`pkg/a.py`, `b.py`, `c.py`": a bare name is beside the last full path
        folder = None
        for item in re.findall(r"`([^`]+\.py)`", line.split(" | ")[0]):
            if item.startswith("ifqa_loss/"):
                named.add(item)
                folder = Path(item).parent
            elif folder is not None and "/" not in item:
                named.add(str(folder / item))
    modules = {_rel(p) for p in (REPO / "ifqa_loss").rglob("*.py")}
    assert modules - named == set(), "modules missing from the README's package map"
    assert named - modules == set(), "the package map names modules that do not exist"


# ---------------------------------------------------------------- the files the docs name


def _write_png(path: Path, size: tuple[int, int], seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 9.0 + c) + np.cos(yy / 13.0 - c) for c in range(3)], axis=-1)
    img = ((base + 2) * 60 + rng.normal(0, 8, (h, w, 3))).clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


@pytest.fixture(scope="module")
def docs_dir(tmp_path_factory) -> Path:
    """A working folder with the inputs the docs' examples name; ``../shared`` is mirrored inside its parent."""
    from ifqa_loss import IFQA
    from ifqa_loss.weights import registered_path, save_official

    root = tmp_path_factory.mktemp("docs") / "work"
    _write_png(root / "face.png", (300, 260), 0)
    with contextlib.suppress(ImportError):  # a photo with a face for the --detect examples (NASA, public domain)
        from PIL import Image
        from skimage import data

        Image.fromarray(data.astronaut()).save(root / "photo.jpg", quality=95)
    for i, size in enumerate([(256, 256), (120, 90), (512, 400)]):
        _write_png(root / "photos" / f"img{i}.png", size, i + 1)
    _write_png(root / "photos" / "older" / "img3.png", (64, 64), 4)
    _write_png(root / "restored" / "0.png", (256, 256), 5)
    # the official checkpoints stand in as the bundled network in the official {'D': state_dict} format
    net = IFQA().net
    save_official(net, root / "IFQA_Metric.pth")
    save_official(net, root / "IFQA++_Metric.pth")
    bundled = registered_path("ifqa-lite")
    for folder in ("runs/lite", "runs/stage1"):
        (root / folder).mkdir(parents=True)
        shutil.copy(bundled, root / folder / "ifqa-lite.safetensors")
    # training inputs, for the commands that only check their options
    for faces in (root / "faces", root.parent / "shared" / "data" / "faces256" / "images"):
        for i in range(2):
            _write_png(faces / f"{i}.png", (256, 256), 10 + i)
        np.savez(faces.parent / "landmarks68.npz", names=np.array(["0.png"]),
                 landmarks=np.zeros((1, 68, 2), np.float32))
        (faces.parent / "val.txt").write_text("1.png\n")
    (root / "ifqa_loss" / "bundled").mkdir(parents=True)
    (root / "ifqa_loss" / "bundled" / "ifqa-lite.train.txt").write_text("0.png\n")
    return root


# ---------------------------------------------------------------- python blocks


class _TinyGenerator(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x + self.conv(x))


def injected() -> dict:
    """The reader's own training set-up that the loss and metric examples assume: images in [-1, 1]."""
    gen = torch.Generator().manual_seed(0)
    generator = _TinyGenerator()
    pairs = [(torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1, torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1)
             for _ in range(2)]
    return {"generator": generator, "opt_g": torch.optim.Adam(generator.parameters(), lr=1e-3),
            "train_loader": pairs, "val_loader": pairs}


INJECTED = set(injected())


def _needs_faces() -> None:
    """Skip examples of ``ifqa_loss.faces`` detection without the faces extra, or without the photo they name."""
    from ifqa_loss.faces import faces_available

    if not faces_available():
        pytest.skip('the faces extra is not installed: pip install "ifqa-loss[faces]"')
    pytest.importorskip("skimage", reason="the face examples use scikit-image's astronaut photo")


# DSL-FIQA's example builds a full-size ViT-B network (1 GB of stand-in weights): about a minute on 2 cores
_SLOW_BLOCK_MARKERS = ("DSLFIQANet",)
_PYTHON_BLOCK_PARAMS = [
    pytest.param(doc, line, code, id=f"{doc.name}:{line}",
                 marks=[pytest.mark.slow] if any(m in code for m in _SLOW_BLOCK_MARKERS) else [])
    for doc, line, code in PYTHON_BLOCKS
]


@pytest.mark.parametrize("doc,line,code", _PYTHON_BLOCK_PARAMS)
def test_python_block_runs(doc, line, code, docs_dir, monkeypatch):
    if "ifqa_loss.faces" in code:
        _needs_faces()
    monkeypatch.chdir(docs_dir)
    namespace = {"__name__": "__docs__", **injected()}
    before = {k: v for k, v in namespace.items() if isinstance(v, torch.nn.Module)}
    weights = {k: [p.detach().clone() for p in m.parameters()] for k, m in before.items()}
    exec(compile(code, f"{_rel(doc)}:{line}", "exec"), namespace)  # noqa: S102 - the docs' own code
    if "opt_g.step()" in code:  # a training loop: the generator learnt, IFQA did not
        assert any(not torch.equal(a, b) for a, b in zip(weights["generator"], namespace["generator"].parameters()))
    for value in namespace.values():
        if hasattr(value, "ifqa") and hasattr(value.ifqa, "net"):  # an IFQALoss
            assert all(not p.requires_grad for p in value.ifqa.net.parameters())


def test_injected_names_are_only_the_readers_own(docs_dir):
    """The docs say which names are the reader's: every block that uses an injected name says it is theirs."""
    for doc, line, code in PYTHON_BLOCKS:
        tree = ast.parse(code)
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        assigned = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        for name in (used - assigned) & INJECTED:
            assert re.search(rf"#.*\b{name}\b.*\byours\b", code), \
                f"{_rel(doc)}:{line}: say that `{name}` is the reader's"


# ---------------------------------------------------------------- shell commands


def _ifqa_argv(argv: list[str]) -> list[str] | None:
    """The ``ifqa`` arguments of a command that runs the CLI (``ifqa``, ``python -m ifqa_loss``, ``torchrun ... -m
    ifqa_loss``), else None."""
    if argv[0] == "ifqa":
        return argv[1:]
    if argv[0] in ("python", "torchrun") and "-m" in argv:
        i = argv.index("-m")
        if argv[i + 1:i + 2] == ["ifqa_loss"]:
            return argv[i + 2:]
    return None


def _elsewhere(argv: list[str]) -> tuple[str, str] | None:
    line = " ".join(argv)
    keys = [k for k in ELSEWHERE if line == k or line.startswith(k + " ")]
    return ELSEWHERE[max(keys, key=len)] if keys else None


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_every_command_is_covered():
    uncovered = []
    for doc, line, argv in COMMANDS:
        assert argv[0] in PROGRAMS, f"{_rel(doc)}:{line}: `{' '.join(argv)}` starts with an unexpected program"
        ifqa = _ifqa_argv(argv)
        if ifqa is not None and ifqa[:1] in (["score"], ["train"]) and argv[0] != "torchrun":
            continue  # run below
        if _elsewhere(argv) is None:
            uncovered.append(f"{_rel(doc)}:{line}: {' '.join(argv)}")
    assert not uncovered, "commands neither run here nor listed in ELSEWHERE:\n" + "\n".join(uncovered)


def test_elsewhere_names_real_tests_and_make_targets():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"(?m)^([A-Za-z][\w-]*)\s*:(?!=)", makefile))
    for where, _ in ELSEWHERE.values():
        if where.startswith("make:"):
            assert where[5:] in targets, f"Makefile has no target {where[5:]!r}"
        else:
            file, func = where.split("::")
            tree = ast.parse((REPO / file).read_text())
            assert func in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, f"{where} does not exist"
    assert re.search(r"pip install[^\n]*-e", makefile), "the install step no longer pip-installs the package"


def test_example_commands_parse():
    """Scripts with a ``parse_args(argv)`` accept the options the docs give them."""
    import runpy

    for doc, line, argv in COMMANDS:
        if argv[0] == "python" and argv[1:2] and argv[1].startswith("examples/"):
            module = runpy.run_path(str(REPO / argv[1]), run_name="__docs__")
            if "parse_args" in module:
                module["parse_args"](argv[2:])


SCORE = [(d, n, a) for d, n, a in COMMANDS if (_ifqa_argv(a) or [None])[0] == "score"]
TRAIN = [(d, n, a) for d, n, a in COMMANDS if (_ifqa_argv(a) or [None])[0] == "train"]


@pytest.mark.parametrize("doc,line,argv", SCORE, ids=[f"{d.name}:{n}:{' '.join(a[1:4])}" for d, n, a in SCORE])
def test_score_command_runs(doc, line, argv, docs_dir, monkeypatch, capsys):
    from ifqa_loss import cli

    if "--detect" in argv:
        _needs_faces()
    monkeypatch.chdir(docs_dir)
    args = _ifqa_argv(argv)
    for out in ("scores.csv", "maps"):
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(out) if Path(out).is_dir() else Path(out).unlink()
    assert cli.main(args + ["--no-progress"]) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    if "--json" in args:
        results = json.loads(stdout)
        assert results and all(0 <= r["score"] <= 1 for r in results)
    elif _option(args, "--csv"):
        assert Path(_option(args, "--csv")).read_text().startswith("path,score")
    else:
        assert stdout.strip()
    if _option(args, "--save-maps"):
        assert list(Path(_option(args, "--save-maps")).glob("*.npy"))


@pytest.mark.parametrize("doc,line,argv", TRAIN, ids=[f"{d.name}:{n}" for d, n, a in TRAIN])
def test_train_command_parses(doc, line, argv, docs_dir, monkeypatch, capsys):
    import ifqa_loss.train.trainer as trainer
    from ifqa_loss import cli

    monkeypatch.chdir(docs_dir)
    args = _ifqa_argv(argv)
    if "--help" in args:
        assert cli.main(args) == 0 and "--steps" in capsys.readouterr().out
        return
    seen = []

    def record(cfg, progress=True):
        seen.append(cfg)
        return {}

    monkeypatch.setattr(trainer, "train", record)
    if hasattr(cli, "train"):
        monkeypatch.setattr(cli, "train", record)
    monkeypatch.setattr(cli, "reuse_freed_memory", lambda: False)
    assert cli.main(args) == 0, capsys.readouterr().err
    assert len(seen) == 1, "ifqa train did not reach the training call"
    cfg = seen[0]
    assert str(cfg.out) == _option(args, "--out") and str(cfg.data) == _option(args, "--data")
    if _option(args, "--steps"):
        assert cfg.steps == int(_option(args, "--steps"))


# ---------------------------------------------------------------- links


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text())
    return {_slug(m) for m in re.findall(r"(?m)^#+ (.+)$", text)}


REPO_PATH = re.compile(r"`((?:ifqa_loss|benchmarks|examples|tests|docs|fuzz)/[^`]*)`")


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_links_resolve(doc):
    text = doc.read_text()
    prose = re.sub(r"(?ms)^```.*?^```", "", text)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+:", target):
            continue  # web links are not checked
        file, _, anchor = target.partition("#")
        path = (doc.parent / file) if file else doc
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target} (no such heading)")
    for ref in REPO_PATH.findall(prose):
        file, _, func = ref.partition("::")
        if "<" in ref or " " in file:
            continue  # a pattern such as tests/<file>::<test>, or a command
        if not (list(REPO.glob(file.rstrip("/"))) if "*" in file else (REPO / file.rstrip("/")).exists()):
            broken.append(ref)
        elif func:
            name = func.split("[")[0]
            tree = ast.parse((REPO / file).read_text())
            if name not in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}:
                broken.append(f"{ref} (no such test)")
    assert not broken, f"{_rel(doc)}: broken links: {broken}"


# ---------------------------------------------------------------- the README's quality table


def test_quality_table_matches_the_benchmark_results():
    """The README's one table of how good the bundled model is shows benchmarks/results/quality.json."""
    results = json.loads((REPO / "benchmarks" / "results" / "quality.json").read_text())
    text = (REPO / "README.md").read_text()
    table = text[text.index("<!-- the bundled model's quality table"):].split("\n\n")[0]
    rows = {r.split("|")[1].strip(" *"): [c.strip(" *") for c in r.split("|")[2:-1]]
            for r in table.splitlines() if r.startswith("| ") and "---" not in r}
    methods = {"ifqa-lite": "ifqa", "variance of Laplacian": "laplacian_var", "Tenengrad": "tenengrad"}
    assert set(rows) >= set(methods)
    for row, key in methods.items():
        kinds = ("blur", "noise", "jpeg", "downup", "mixed")
        severity = [results["severity"][key][kind]["mean_spearman"] for kind in kinds]
        expected = [f"{v:+.3f}" if v > 0 else f"{v:.3f}" for v in severity]
        expected += [f"{results['summary']['auc'][key]:.3f}", f"{results['summary']['region_ratio_mixed'][key]:.3g}"]
        assert rows[row] == expected, f"README quality table, row {row!r}"
