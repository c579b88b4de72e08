"""Fuzz target: image-file decoding (``load_image``) and the tensor checks (``check_images`` & co.).

Contract under test: whatever the bytes, ``ifqa_loss.io.load_image`` either returns a (3, H, W) uint8
tensor or raises ``ImageDecodeError``; ``check_input_range``, ``check_images``, ``check_values_in_range`` and
``to_model_input`` on tensors built from the bytes return normally or raise ``ValueError``/``TypeError``.
Any other exception (IndexError, struct.error, RuntimeError, a segfault...) is a crash.

Usage (from the repository root):
    python fuzz/fuzz_decode.py                    # atheris (coverage-guided) if installed, else a mutation loop
    python fuzz/fuzz_decode.py --seconds 300      # default: $IFQA_FUZZ_SECONDS or 60
    python fuzz/fuzz_decode.py --plain            # force the loop without atheris
    python fuzz/fuzz_decode.py --artifacts DIR    # where a crashing input is saved (default: fuzz/artifacts)
    python fuzz/fuzz_decode.py --reproduce FILE   # run one saved input
    python fuzz/fuzz_decode.py --inject-crash     # self-test: check_images raises IndexError; must exit non-zero

The first byte of an input picks the target (even: decode a file, odd: tensor checks); seeds for both are
generated at start-up (PNG/JPEG/GIF/BMP/TIFF/WebP/ICO/PPM files of several modes, and tensor headers).
Exit status: 0 when the time ran out without a crash, non-zero otherwise.
"""
from __future__ import annotations

import argparse
import atexit
import io
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402  (imported before instrumentation: not worth instrumenting)
import torch  # noqa: E402

try:
    import atheris
except ImportError:  # the plain loop still works
    atheris = None
if "--plain" in sys.argv or "--reproduce" in sys.argv:
    atheris = None

if atheris is not None:
    with atheris.instrument_imports():  # PIL and its format plugins: coverage feedback for libFuzzer
        from PIL import Image

        Image.init()
else:
    from PIL import Image

# not under instrument_imports: it would instrument torch & co.
from ifqa_loss import io as image_io  # noqa: E402
from ifqa_loss import preprocess  # noqa: E402

# Known finding (tests/test_cli_hostile.py::test_load_image_refuses_a_pixel_bomb): between PIL's warning and error
# limits (89.5-179 Mpx) a tiny file is decoded in full, GBs of memory, and libFuzzer stops with out-of-memory.
# A lower limit keeps each input cheap; a bomb then takes the DecompressionBombError path (> 2x the limit).
Image.MAX_IMAGE_PIXELS = int(os.environ.get("IFQA_FUZZ_MAX_PIXELS", "4000000"))

if atheris is not None:
    for _module, _names in ((image_io, ("load_image", "_to_rgb8", "to_float")),
                            (preprocess, ("check_images", "check_input_range", "check_values_in_range",
                                          "to_model_input", "resize_to"))):
        for _name in _names:
            setattr(_module, _name, atheris.instrument_func(getattr(_module, _name)))

torch.set_num_threads(1)
warnings.simplefilter("ignore")  # PIL warns on most corrupt files (and on large ones); those are not findings

SUFFIXES = [".png", ".jpg", ".gif", ".bmp", ".tif", ".webp", ".ico", ".ppm", ".jpeg", ".tiff", ".txt", ""]
DTYPES = [torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.uint8, torch.int8, torch.int64,
          torch.bool, torch.complex64]
ALLOWED = (ValueError, TypeError)  # io.ImageDecodeError is a ValueError
MAX_ELEMENTS = 200_000


def _remove_stale_work_dirs() -> None:
    """libFuzzer ends the process without running Python's atexit: remove work folders of finished runs."""
    for d in Path(tempfile.gettempdir()).glob("ifqa-fuzz-*-*"):
        try:
            pid = int(d.name.split("-")[2])
            os.kill(pid, 0)
        except (ValueError, IndexError):
            continue
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            continue


_remove_stale_work_dirs()
_WORK = Path(tempfile.mkdtemp(prefix=f"ifqa-fuzz-{os.getpid()}-"))  # the input file and the atheris corpus
atexit.register(shutil.rmtree, _WORK, ignore_errors=True)


class Bytes:
    """Consumes a byte string front to back; past the end it yields zeros."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out + bytes(n - len(out))

    def byte(self) -> int:
        return self.take(1)[0]

    def float64(self) -> float:
        return struct.unpack("<d", self.take(8))[0]

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out


def fuzz_decode(data: Bytes) -> None:
    suffix = SUFFIXES[data.byte() % len(SUFFIXES)]
    apply_exif = bool(data.byte() & 1)
    path = _WORK / f"input{suffix}"
    path.write_bytes(data.rest())
    try:
        img = image_io.load_image(path, apply_exif=apply_exif)
    except ALLOWED:
        return
    assert isinstance(img, torch.Tensor) and img.dtype == torch.uint8, (type(img), getattr(img, "dtype", None))
    assert img.ndim == 3 and img.shape[0] == 3 and img.shape[1] >= 1 and img.shape[2] >= 1, tuple(img.shape)
    x = image_io.to_float(img)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    try:
        preprocess.check_images(x)
    except ALLOWED:
        return


def fuzz_tensor(data: Bytes) -> None:
    dtype = DTYPES[data.byte() % len(DTYPES)]
    ndim = data.byte() % 6
    shape = [data.byte() % 72 for _ in range(ndim)]
    if ndim >= 2:  # keep the leading dims small so that the tensor stays small
        shape[:-2] = [s % 4 for s in shape[:-2]]
    numel = int(np.prod(shape)) if shape else 1
    if numel > MAX_ELEMENTS:
        return
    flags = data.byte()
    lo, hi = data.float64(), data.float64()
    itemsize = torch.empty((), dtype=dtype).element_size()
    raw = data.rest() or b"\x00"
    need = numel * itemsize
    buf = (raw * (need // len(raw) + 1))[:need]
    storage_dtype = {torch.bfloat16: torch.int16, torch.bool: torch.uint8}.get(dtype, dtype)
    x = torch.frombuffer(bytearray(buf), dtype=storage_dtype) if need else torch.empty(0, dtype=storage_dtype)
    if dtype == torch.bool:
        x = x % 2
    x = x.view(dtype).reshape(shape) if dtype != torch.bool else x.to(torch.bool).reshape(shape)
    if flags & 1 and x.ndim >= 2:
        x = x.transpose(-1, -2)  # non-contiguous
    try:
        input_range = preprocess.check_input_range((lo, hi) if not flags & 2 else (0.0, 1.0))
    except ALLOWED:
        input_range = (0.0, 1.0)
    try:
        preprocess.check_images(x, check_finite=not flags & 4)
    except ALLOWED:
        return
    try:
        preprocess.check_values_in_range(x, input_range)
    except ALLOWED:
        pass
    out = preprocess.to_model_input(x, "lite", input_range)
    assert out.shape == (x.shape[0], 3, 256, 256), tuple(out.shape)


def test_one_input(raw: bytes) -> None:
    data = Bytes(raw)
    if data.byte() % 2 == 0:
        fuzz_decode(data)
    else:
        fuzz_tensor(data)


# ---------------------------------------------------------------- seeds, plain loop, main


def seeds() -> list[bytes]:
    out = []
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    images = {
        "RGB": Image.fromarray(rgb, "RGB"),
        "L": Image.fromarray(rgb[..., 0], "L"),
        "RGBA": Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"),
        "P": Image.fromarray(rgb, "RGB").convert("P"),
        "I;16": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
        "1": Image.fromarray(rgb[..., 0] > 127),
    }
    formats = {".png": "PNG", ".jpg": "JPEG", ".gif": "GIF", ".bmp": "BMP", ".tif": "TIFF", ".webp": "WEBP",
               ".ico": "ICO", ".ppm": "PPM"}
    for suffix, fmt in formats.items():
        for mode, img in images.items():
            buf = io.BytesIO()
            try:
                img.save(buf, format=fmt)
            except (OSError, ValueError, KeyError):
                continue  # this format cannot store this mode
            out.append(bytes([0, SUFFIXES.index(suffix), 0]) + buf.getvalue())
    for i, dtype in enumerate(DTYPES):
        for shape in ([1, 3, 16, 16], [2, 3, 20, 17], [3, 16, 16], [1, 4, 16, 16], [0, 3, 16, 16]):
            header = bytes([1, i, len(shape), *shape, 0]) + struct.pack("<dd", 0.0, 1.0)
            values = torch.rand(shape, generator=torch.Generator().manual_seed(i)).to(dtype) if dtype != torch.bool \
                else torch.rand(shape) > 0.5
            out.append(header + bytes(values.contiguous().view(torch.uint8).reshape(-1).tolist()[:512]))
    return out


def mutate(data: bytes, rnd: random.Random, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 8)):
        op = rnd.randrange(7)
        if op == 0 and b:  # flip a bit
            i = rnd.randrange(len(b))
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1 and b:  # set an interesting byte
            b[rnd.randrange(len(b))] = rnd.choice([0, 1, 0x7F, 0x80, 0xFF, rnd.randrange(256)])
        elif op == 2 and len(b) > 3:  # truncate
            del b[rnd.randrange(3, len(b)):]
        elif op == 3:  # insert random bytes
            i = rnd.randrange(len(b) + 1)
            b[i:i] = rnd.randbytes(rnd.randint(1, 16))
        elif op == 4 and len(b) > 4:  # delete a run
            i = rnd.randrange(len(b))
            del b[i:i + rnd.randint(1, 16)]
        elif op == 5 and len(b) > 8:  # overwrite with a big/odd 32-bit integer (sizes, offsets)
            i = rnd.randrange(len(b) - 4)
            b[i:i + 4] = struct.pack(rnd.choice(["<I", ">I"]), rnd.choice([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF,
                                                                           rnd.randrange(1 << 32)]))
        elif op == 6:  # splice with another seed
            other = rnd.choice(pool)
            i, j = rnd.randrange(len(b) + 1), rnd.randrange(len(other) + 1)
            b = b[:i] + other[j:]
    return bytes(b)


def plain_loop(seconds: float, artifacts: Path, seed: int) -> int:
    rnd = random.Random(seed)
    pool = seeds()
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        data = rnd.choice(pool) if n < len(pool) else mutate(rnd.choice(pool), rnd, pool)
        if n >= len(pool) and rnd.random() < 0.05:
            data = rnd.randbytes(rnd.randint(0, 256))
        n += 1
        try:
            test_one_input(data)
        except Exception:  # noqa: BLE001 - every disallowed exception is a finding
            artifacts.mkdir(parents=True, exist_ok=True)
            crash = artifacts / f"crash-{n}.bin"
            crash.write_bytes(data)
            traceback.print_exc()
            print(f"fuzz_decode: CRASH after {n} inputs; input saved to {crash}", file=sys.stderr)
            return 1
    print(f"fuzz_decode: {n} inputs in {seconds:.0f} s, no crash (plain loop, seed {seed})", file=sys.stderr)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=float(os.environ.get("IFQA_FUZZ_SECONDS", "60")))
    p.add_argument("--plain", action="store_true", help="mutation loop without atheris")
    p.add_argument("--artifacts", type=Path, default=REPO / "fuzz" / "artifacts")
    p.add_argument("--seed", type=int, default=int(os.environ.get("IFQA_FUZZ_SEED", "0")))
    p.add_argument("--reproduce", type=Path, help="run one saved input and exit")
    p.add_argument("--inject-crash", action="store_true", help=argparse.SUPPRESS)
    args, libfuzzer_args = p.parse_known_args()
    if args.inject_crash:  # self-test of the harness: a disallowed exception from inside the library
        def broken_check_images(*a, **k):
            raise IndexError("injected crash")

        preprocess.check_images = broken_check_images
    if args.reproduce:
        test_one_input(args.reproduce.read_bytes())
        print("fuzz_decode: no crash", file=sys.stderr)
        return 0
    if atheris is None or args.plain:
        return plain_loop(args.seconds, args.artifacts, args.seed)
    corpus = _WORK / "corpus"
    corpus.mkdir()
    for i, s in enumerate(seeds()):
        (corpus / f"seed-{i:03d}").write_bytes(s)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    argv = [sys.argv[0], f"-max_total_time={int(max(1, args.seconds))}", f"-artifact_prefix={args.artifacts}/",
            "-rss_limit_mb=4096", "-timeout=60", f"-seed={args.seed + 1}", *libfuzzer_args, str(corpus)]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
