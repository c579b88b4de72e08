"""Weight files: the registry of named weights, safe loading, backbone detection, checksums and downloads.

Loading never unpickles code: ``.pth``/``.pt`` files go through ``torch.load(weights_only=True)``
and ``.safetensors`` through safetensors.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .models import BACKBONES, CNN_WIDTHS, build_model
from .models.unet import CNN_BOTTLENECK

PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent / "bundled"
OFFICIAL_WEIGHTS_HELP = (
    "The official IFQA weights (IFQA_Metric.pth for backbone 'cnn', IFQA++_Metric.pth for 'vit') are linked "
    "from the README of https://github.com/AIM-SKKU/IFQA (Google Drive). Download one and pass its path, e.g. "
    "IFQA(backbone='cnn', weights='IFQA_Metric.pth') or `ifqa score --weights IFQA_Metric.pth ...`."
)


class WeightsError(ValueError):
    """A weights file or name that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class RegisteredWeights:
    """A named set of weights: bundled inside the package (``filename``) or downloadable (``url``)."""

    name: str
    backbone: str
    sha256: str
    filename: str | None = None
    url: str | None = None
    licence: str = ""
    description: str = ""
    config: Mapping[str, object] = field(default_factory=dict)


REGISTRY: dict[str, RegisteredWeights] = {}
DEFAULT_WEIGHTS = "ifqa-lite"


def register_weights(entry: RegisteredWeights, overwrite: bool = False) -> None:
    """Add ``entry`` to the registry so ``weights=entry.name`` resolves to it."""
    if entry.filename is None and entry.url is None:
        raise ValueError(f"registered weights {entry.name!r} need a bundled filename or a url")
    if entry.name in REGISTRY and not overwrite:
        raise ValueError(f"weights {entry.name!r} are already registered")
    REGISTRY[entry.name] = entry


def _register_bundled() -> None:
    card_path = PACKAGE_WEIGHTS_DIR / "ifqa-lite.json"
    if not card_path.is_file():
        return
    card = json.loads(card_path.read_text())
    register_weights(RegisteredWeights(
        name="ifqa-lite", backbone="lite", sha256=card["sha256"], filename=card["file"],
        licence=card.get("licence", ""), description=card.get("description", ""), config=card.get("config", {}),
    ))


# ---------------------------------------------------------------- files


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected.lower():
        raise WeightsError(f"{os.fspath(path)}: sha256 mismatch (expected {expected}, got {actual}); "
                           "the file is corrupt or not the registered one")


def cache_dir() -> Path:
    """Download cache: ``$IFQA_CACHE`` or ``~/.cache/ifqa_loss``."""
    return Path(os.environ.get("IFQA_CACHE") or Path.home() / ".cache" / "ifqa_loss")


def download(url: str, dest: str | os.PathLike, sha256: str, timeout: float = 60.0, retries: int = 2) -> Path:
    """Download ``url`` to ``dest`` atomically, checking its sha256; a bad or partial file is never kept."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for _ in range(retries + 1):
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                expected_len = resp.headers.get("Content-Length")
                h, n = hashlib.sha256(), 0
                while block := resp.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    n += len(block)
            if expected_len is not None and n != int(expected_len):
                raise WeightsError(f"download of {url} was interrupted ({n} of {expected_len} bytes)")
            if h.hexdigest() != sha256.lower():
                raise WeightsError(f"download of {url} has sha256 {h.hexdigest()}, expected {sha256}")
            os.replace(tmp, dest)
            return dest
        except (OSError, WeightsError) as e:
            last_error = e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise WeightsError(f"could not download {url} to {dest}: {last_error}")


def registered_path(name: str) -> Path:
    """Local file of registered weights ``name``: bundled, cached, or downloaded now; sha256-checked."""
    entry = REGISTRY[name]
    if entry.filename is not None and (PACKAGE_WEIGHTS_DIR / entry.filename).is_file():
        path = PACKAGE_WEIGHTS_DIR / entry.filename
        verify_sha256(path, entry.sha256)
        return path
    if entry.url is None:
        raise WeightsError(f"bundled weights {name!r} are missing from {PACKAGE_WEIGHTS_DIR}; reinstall ifqa-loss")
    path = cache_dir() / f"{name}-{entry.sha256[:12]}{Path(entry.url).suffix or '.safetensors'}"
    if path.is_file():
        try:
            verify_sha256(path, entry.sha256)
            return path
        except WeightsError:
            path.unlink()
    return download(entry.url, path, entry.sha256)


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read tensors from a weights file without running any code.

    Accepts ``.safetensors``, the official ``{'D': state_dict}`` torch file, bare state dicts, and
    ``{'state_dict'|'model': ...}`` wrappers; strips a DDP ``module.`` prefix.
    Returns ``(state_dict, metadata)``.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file {os.fspath(path)} does not exist")
    if not path.is_file():
        raise WeightsError(f"weights path {os.fspath(path)} is not a file")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {os.fspath(path)} is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(8)
    metadata: dict[str, str] = {}
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(os.fspath(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
                obj = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise WeightsError(f"{os.fspath(path)}: not a valid safetensors file, truncated or corrupt ({e})") from None
    else:
        obj = _torch_load_tensors_only(path)
    state = _unwrap(obj, path)
    return state, metadata


def _looks_like_safetensors(head: bytes) -> bool:
    return len(head) == 8 and int.from_bytes(head, "little") < (1 << 32) and not head.startswith((b"PK", b"\x80"))


def _torch_load_tensors_only(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickling_reason(str(e))
        if "GLOBAL" in reason or "global" in reason:
            raise WeightsError(
                f"{os.fspath(path)}: refused to load: the file holds Python objects other than tensors ({reason}), "
                "and unpickling it could run code from the file. Only tensor checkpoints are accepted; if you trust "
                "the file, convert it to .safetensors."
            ) from None
        raise WeightsError(
            f"{os.fspath(path)}: not a readable PyTorch checkpoint, corrupt or truncated ({reason})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, AttributeError) as e:
        raise WeightsError(
            f"{os.fspath(path)}: not a readable PyTorch checkpoint, truncated or corrupt ({e})") from None


def _unpickling_reason(message: str) -> str:
    """The informative line of torch's weights-only error, without its generic banner and advice."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    skip = ("Weights only load failed", "Check the documentation", "Please file an issue")
    useful = [ln for ln in lines if not ln.startswith(skip)]
    return useful[0] if useful else "unreadable pickle data"


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for key in ("D", "state_dict", "model", "d"):  # "d": an `ifqa train` checkpoint
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{os.fspath(path)}: expected a state dict (name -> tensor) or {{'D': state_dict}}, "
                           f"got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{os.fspath(path)}: entries that are not tensors: {bad[:5]}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


# ---------------------------------------------------------------- backbone detection


def detect_backbone(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> tuple[str, dict]:
    """Guess ``(backbone, config)`` from the keys and shapes (and safetensors metadata when present)."""
    metadata = metadata or {}
    if "ifqa.backbone" in metadata:
        backbone = metadata["ifqa.backbone"]
        config = json.loads(metadata.get("ifqa.config", "{}"))
        if backbone not in BACKBONES:
            raise WeightsError(f"file metadata names unknown backbone {backbone!r}")
        return backbone, config
    if "patch_embed.proj.weight" in state or "blocks.0.attn.qkv.weight" in state:
        return "vit", {}
    if any(k.startswith("encoder128.") for k in state):
        try:
            widths = tuple(int(state[f"encoder{r}.conv2.weight"].shape[0]) for r in (128, 64, 32, 16, 8))
        except KeyError:
            return "cnn", {}
        n_btn = len({k.split(".")[1] for k in state if k.startswith("btn.")})
        if widths == CNN_WIDTHS and n_btn == CNN_BOTTLENECK:
            return "cnn", {}
        return "lite", {"widths": list(widths), "num_bottleneck": n_btn}
    raise WeightsError("cannot tell the backbone from the keys: neither U-Net (encoder128.*) nor ViT (patch_embed.*) "
                       f"keys are present (first keys: {list(state)[:5]})")


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, backbone: str) -> None:
    """Copy ``state`` into ``model`` (on the meta device: assigned), with an itemised error on any mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                 for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or misshaped:
        guess = ""
        try:
            guess, _ = detect_backbone(state)
        except WeightsError:
            pass
        lines = [f"{source} does not match backbone {backbone!r}"
                 + (f" (its keys resemble backbone {guess!r})" if guess else "") + ":"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                more = f" ... and {len(items) - 8} more" if len(items) > 8 else ""
                lines.append(f"  {len(items)} {title} keys: {', '.join(items[:8])}{more}")
        raise WeightsError("\n".join(lines))
    state = {k: v.to(expected[k].dtype) if v.dtype != expected[k].dtype else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)


@dataclass
class LoadedWeights:
    model: nn.Module
    backbone: str
    source: str
    config: dict
    metadata: dict


def load_model(backbone: str | None = None, weights: str | os.PathLike | None = None) -> LoadedWeights:
    """Resolve ``weights`` (a path or registered name; ``None`` = bundled default) and build the model.

    The model is returned in eval mode with ``requires_grad=False`` parameters, on the CPU.
    """
    if backbone is not None and backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if weights is None:
        if backbone in (None, "lite") and DEFAULT_WEIGHTS in REGISTRY:
            weights = DEFAULT_WEIGHTS
        elif backbone in ("cnn", "vit"):
            raise WeightsError(f"backbone {backbone!r} needs weights. {OFFICIAL_WEIGHTS_HELP}")
        else:
            raise WeightsError(f"no bundled default weights are installed. {OFFICIAL_WEIGHTS_HELP}")
    config: dict = {}
    if isinstance(weights, (str, os.PathLike)) and not Path(weights).is_file() and str(weights) in REGISTRY:
        entry = REGISTRY[str(weights)]
        path, source, config = registered_path(entry.name), f"registered weights {entry.name!r}", dict(entry.config)
    elif isinstance(weights, (str, os.PathLike)):
        path, source = Path(weights), os.fspath(weights)
        if not path.exists():
            names = ", ".join(sorted(REGISTRY)) or "none installed"
            raise WeightsError(f"weights {source!r} is neither an existing file nor a registered name "
                               f"(registered: {names}). {OFFICIAL_WEIGHTS_HELP}")
    else:
        raise TypeError(f"weights must be a file path or a registered name, got {type(weights).__name__}")
    state, metadata = read_state_dict(path)
    detected, detected_config = detect_backbone(state, metadata)
    config = config or detected_config
    if backbone is None:
        backbone = detected
    elif backbone != detected and {backbone, detected} != {"cnn", "lite"}:
        raise WeightsError(f"{source} holds {detected!r} weights, but backbone={backbone!r} was asked for")
    elif backbone == "cnn" and detected == "lite":
        raise WeightsError(f"{source} holds 'lite' weights (widths {config.get('widths')}), not the official 'cnn'")
    with torch.device("meta"):
        model = build_model(backbone, **config)
    load_into(model, state, source, backbone)
    model.eval().requires_grad_(False)
    return LoadedWeights(model, backbone, source, config, metadata)


def save_weights(model: nn.Module, path: str | os.PathLike, backbone: str, config: Mapping | None = None,
                 extra_metadata: Mapping[str, str] | None = None) -> str:
    """Write ``model`` as ``.safetensors`` with the backbone in its metadata; returns the sha256."""
    from safetensors.torch import save_file

    meta = {"ifqa.backbone": backbone, "ifqa.config": json.dumps(dict(config or {})), **(extra_metadata or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, os.fspath(tmp), metadata=meta)
    os.replace(tmp, path)
    return sha256_of(path)


def save_official(model: nn.Module, path: str | os.PathLike) -> str:
    """Write the official ``{'D': state_dict}`` torch file (``cnn`` only); returns the sha256."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"D": state}, tmp)
    os.replace(tmp, path)
    return sha256_of(path)


_register_bundled()
