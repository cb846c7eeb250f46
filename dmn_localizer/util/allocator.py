"""The C allocator's handling of large blocks, for steady per-update latency (glibc only).

An observation update allocates and frees the same large temporaries every time (at 256
particles per block, each activation map is 4 MB). By default glibc serves blocks above a
threshold with fresh ``mmap`` pages and returns freed memory at the top of the heap to the
system, so every update page-faults its temporaries in again: measured 514 minor faults per
update at K = 256 and about 8,000 at K = 2048 on a Zen 4 CPU, a cost that comes and goes with
glibc's dynamic threshold (some processes show none). :func:`keep_freed_memory` makes the heap
keep such blocks for reuse instead; it changes no result, only where memory comes from, and the
process keeps its peak resident size between updates (which it reaches in every update anyway).
"""
import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

# mallopt() parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# largest block taken from the heap: glibc's maximum on 64-bit systems (a larger value fails)
MMAP_THRESHOLD_BYTES = 32 << 20
# free memory at the top of the heap kept for reuse rather than returned to the system
TRIM_THRESHOLD_BYTES = 1 << 30


def _libc():
    """The process's C library, or None where it cannot be reached."""
    if not sys.platform.startswith('linux'):
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def keep_freed_memory():
    """Make glibc reuse freed large blocks instead of unmapping them (see the module docstring).
    Returns True if the allocator took the settings, False elsewhere (other C libraries:
    nothing changes)."""
    libc = _libc()
    mallopt = getattr(libc, 'mallopt', None)
    if mallopt is None:
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) \
        and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    logger.debug('keep_freed_memory: %s', 'on' if ok else 'not supported')
    return ok


def release_free_memory():
    """Return the heap's free memory to the system now (``malloc_trim``); False where the C
    library has no such call."""
    trim = getattr(_libc(), 'malloc_trim', None)
    if trim is None:
        return False
    trim(0)
    return True
