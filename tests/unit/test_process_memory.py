"""process_memory.limit_malloc_arenas: glibc's arenas really capped, in a fresh process (the cap only governs arenas
created after it, so each case runs in its own interpreter)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tei_operator.process_memory import _libc, limit_malloc_arenas

# Eight threads allocate at once and hold what they allocated; then glibc's malloc_info() lists its heaps (arenas).
_PROBE = """
import ctypes, os, sys, tempfile, threading
from tei_operator.process_memory import limit_malloc_arenas
if sys.argv[1] == "capped":
    print("cap", limit_malloc_arenas(2, environ={}))
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
barrier = threading.Barrier(8)
held = []
def allocate():
    barrier.wait()
    held.append([libc.malloc(4096) for _ in range(64)])
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc.fopen.restype = ctypes.c_void_p
path = tempfile.mktemp()
fp = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(fp))
libc.fclose(ctypes.c_void_p(fp))
print("heaps", open(path).read().count("<heap nr="))
os.unlink(path)
"""

glibc_only = pytest.mark.skipif(_libc() is None, reason="not glibc: the cap does nothing there")


def _heaps(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}, timeout=60).stdout
    return int(out.split("heaps")[1])


@glibc_only
def test_the_cap_keeps_eight_allocating_threads_in_two_arenas() -> None:
    assert _heaps("default") > 2  # glibc's default gives the threads arenas of their own: the probe can tell
    assert _heaps("capped") <= 2


def test_the_environment_wins() -> None:
    assert limit_malloc_arenas(2, environ={"MALLOC_ARENA_MAX": "4"}) == 4
    assert limit_malloc_arenas(2, environ={"MALLOC_ARENA_MAX": "many"}) is None


# A 1 MiB block freed raises glibc's default mmap threshold to 1 MiB; then a 300 KiB block comes from the heap. With
# the threshold fixed it is mapped on its own (mallinfo2's hblkhd: bytes in such mappings).
_MMAP_PROBE = """
import ctypes, sys
from tei_operator.process_memory import fix_mmap_threshold
if sys.argv[1] == "fixed":
    print("threshold", fix_mmap_threshold(256 * 1024, environ={}))
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free(ctypes.c_void_p(libc.malloc(1 << 20)))
before = libc.mallinfo2().hblkhd
block = libc.malloc(300 * 1024)
print("mapped", libc.mallinfo2().hblkhd - before)
"""

# Many 2 KiB blocks (Python objects that large come from malloc), all but one in 64 freed: the heap cannot shrink
# from its top, only release_free_memory hands the free pages between the survivors back.
_TRIM_PROBE = """
from tei_operator.process_memory import release_free_memory
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
blocks = [bytes(2048) + bytes([i % 256]) for i in range(40000)]
kept = blocks[::64]
del blocks
before = rss()
released = release_free_memory()
print("released", released, before - rss())
"""


def _probe(code: str, *args: str) -> str:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}, timeout=60).stdout


@glibc_only
def test_the_fixed_threshold_maps_large_blocks_on_their_own() -> None:
    assert "mapped 0" in _probe(_MMAP_PROBE, "default")  # glibc's raised threshold: from the heap
    out = _probe(_MMAP_PROBE, "fixed")
    assert "threshold 262144" in out and int(out.split("mapped")[1]) >= 300 * 1024


@glibc_only
def test_release_free_memory_hands_free_heap_pages_back() -> None:
    _, released, freed_kib = _probe(_TRIM_PROBE).split()
    assert released == "True" and int(freed_kib) > 40_000  # of the ~80 MiB freed inside the heap


def test_the_environment_wins_for_the_threshold() -> None:
    from tei_operator.process_memory import fix_mmap_threshold

    assert fix_mmap_threshold(1, environ={"MALLOC_MMAP_THRESHOLD_": "65536"}) == 65536
