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
