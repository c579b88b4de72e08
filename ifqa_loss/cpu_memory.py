"""Reuse freed CPU memory across forward passes (glibc malloc tuning).

glibc serves large blocks with ``mmap`` and unmaps them when they are freed. A 256x256 forward pass
allocates hundreds of MB of activations, so every call page-faults that memory in again: for ``cnn``
at batch 8 on the reference CPU that was ~650k page faults and ~1.3 s of system time per 5.5 s call
(``benchmarks/speed.py``). Keeping freed blocks in the heap removes that cost. Peak memory is
unchanged; the resident size just stays at the peak instead of shrinking between calls.

This is a process-wide setting, so the library never applies it on import. ``ifqa score`` and
``ifqa train`` apply it on the CPU; call :func:`reuse_freed_memory` in your own CPU scripts. Set
``IFQA_MALLOC_DEFAULTS=1`` to leave the allocator alone.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

# mallopt parameters from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # largest int: keep up to 2 GiB of free heap top

OPT_OUT_ENV = "IFQA_MALLOC_DEFAULTS"
_applied = False


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the OS after every call.

    Allocations are served from the heap (no per-block ``mmap``), and the heap top is trimmed only
    beyond 2 GiB of free space. Safe to call more than once. Not undone for the life of the process.

    Returns:
        True if the setting is in effect; False on a C library other than glibc (nothing to do:
        macOS, Windows and musl differ), or when ``IFQA_MALLOC_DEFAULTS=1`` asks to opt out.

    Example:
        >>> from ifqa_loss.cpu_memory import reuse_freed_memory
        >>> isinstance(reuse_freed_memory(), bool)
        True
    """
    global _applied
    if _applied:
        return True
    if os.environ.get(OPT_OUT_ENV, "").strip() not in ("", "0"):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # mallopt returns 1 on success; M_MMAP_MAX=0 sends every allocation to the (reusable) heap.
    _applied = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _applied
