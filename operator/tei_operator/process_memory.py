"""The operator process's own memory: glibc's malloc capped at a few arenas.

glibc gives every thread that allocates while the others hold their arena one of its own (up to 8 per core), and
memory freed into an arena stays with it: the operator's threads (Prometheus queries and other blocking calls run in
asyncio's default executor) each kept a heap of their own, mostly free. `tei-operator run` caps the arenas at
`ARENAS` before any thread starts, the effect of MALLOC_ARENA_MAX=2, set from inside the process so that the image,
the chart, a local `tei-operator run` and the scale benchmark all run the same way. A MALLOC_ARENA_MAX set in the
environment wins (glibc has then applied it already). On a C library other than glibc this does nothing.

Two more settings of glibc's malloc, for the same reason (memory freed inside the process is kept by it otherwise):

- `MMAP_THRESHOLD`: blocks this large or larger (API responses, LIST pages, the JSON text of an apply) are mapped
  on their own and unmapped when freed. glibc's default threshold rises to the size of the largest such block
  freed so far (up to 32 MiB), after which large blocks are carved from the heap and leave holes in it between the
  long-lived objects around them. A MALLOC_MMAP_THRESHOLD_ in the environment wins.
- `release_free_memory_forever`: every `TRIM_SECONDS`, `malloc_trim(0)` hands the pages of the heap that hold no
  live block back to the system (glibc keeps them otherwise: after the burst of watch events of creating 1,000
  services, tens of MiB of them). A few milliseconds each time.

docs/install.md ("The operator's own memory") says where the rest of the operator's memory goes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Mapping

ARENAS = 2
M_ARENA_MAX = -8  # mallopt() parameter numbers (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024  # bytes
TRIM_SECONDS = 30.0


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - present in glibc (and musl's stub), absent elsewhere
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt ignores everything
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def _set_malloc_option(param: int, value: int, env_name: str, environ: Mapping[str, str] | None) -> int | None:
    """mallopt(param, value) unless the environment sets `env_name` (glibc has applied that one already). Returns
    the value now in force, or None when this is not glibc, it refused, or the environment's value is not a number."""
    env = os.environ if environ is None else environ
    if env.get(env_name):
        try:
            return int(env[env_name])
        except ValueError:
            return None
    libc = _libc()
    if libc is None or libc.mallopt(param, int(value)) != 1:
        return None
    return value


def limit_malloc_arenas(arenas: int = ARENAS, environ: Mapping[str, str] | None = None) -> int | None:
    """Cap glibc's malloc arenas at `arenas` (call before threads start). Returns the cap now in force: `arenas`,
    the environment's MALLOC_ARENA_MAX when set, or None when this is not glibc or it refused."""
    return _set_malloc_option(M_ARENA_MAX, arenas, "MALLOC_ARENA_MAX", environ)


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD, environ: Mapping[str, str] | None = None) -> int | None:
    """Map blocks of `threshold` bytes or more on their own, always (see the module's docstring). Returns the
    threshold now in force, the environment's MALLOC_MMAP_THRESHOLD_ when set, or None when this is not glibc or
    it refused."""
    return _set_malloc_option(M_MMAP_THRESHOLD, threshold, "MALLOC_MMAP_THRESHOLD_", environ)


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc's malloc_trim). Returns whether any were released."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


async def release_free_memory_forever(seconds: float = TRIM_SECONDS) -> None:
    """`release_free_memory` every `seconds`, until cancelled (a no-op loop on a C library other than glibc)."""
    import asyncio

    if _libc() is None:
        return
    while True:
        await asyncio.sleep(seconds)
        release_free_memory()


TRACE_ENV = "TEI_OPERATOR_DEBUG_TRACEMALLOC"
"""For finding where the memory goes, never for production: a directory. `tei-operator run` then traces Python's
allocations (tracemalloc, `TEI_OPERATOR_DEBUG_TRACEMALLOC_FRAMES` frames, default 12) and, on each SIGUSR2, writes
`snapshot-<n>.tracemalloc` there (load it with `tracemalloc.Snapshot.load`) and `gc-<n>.txt`, the live objects
counted by type. Tracing costs memory and CPU of its own: the RSS of such a run is not the operator's."""


def trace_allocations_on_request(environ: Mapping[str, str] | None = None) -> str | None:
    """Start tracing when `TRACE_ENV` names a directory (see there); returns that directory, or None."""
    env = os.environ if environ is None else environ
    directory = env.get(TRACE_ENV)
    if not directory:
        return None
    import collections
    import gc
    import signal
    import tracemalloc

    os.makedirs(directory, exist_ok=True)
    tracemalloc.start(int(env.get(TRACE_ENV + "_FRAMES") or 12))
    taken = [0]

    def dump(_signum: int, _frame: object) -> None:
        taken[0] += 1
        gc.collect()
        tracemalloc.take_snapshot().dump(os.path.join(directory, f"snapshot-{taken[0]}.tracemalloc"))
        counts = collections.Counter(type(obj).__qualname__ for obj in gc.get_objects())
        with open(os.path.join(directory, f"gc-{taken[0]}.txt"), "w", encoding="utf-8") as out:
            out.writelines(f"{count} {name}\n" for name, count in counts.most_common(200))

    signal.signal(signal.SIGUSR2, dump)
    return directory


def summarize(snapshot_path: str, top: int = 25) -> str:
    """A snapshot written on SIGUSR2 (see `TRACE_ENV`), its live allocations grouped by the innermost frame in the
    operator's or kopf's code (who asked for the memory), largest first: `python -m tei_operator.process_memory
    SNAPSHOT`."""
    import collections
    import tracemalloc

    snapshot = tracemalloc.Snapshot.load(snapshot_path)
    sizes: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    for trace in snapshot.traces:
        label = "elsewhere (libraries, the interpreter)"
        for frame in reversed(list(trace.traceback)):  # innermost first
            name = frame.filename.replace(os.sep, "/")
            for marker in ("/tei_operator/", "/kopf/"):
                if marker in name:
                    label = marker.strip("/") + "/" + name.split(marker, 1)[1] + f":{frame.lineno}"
                    break
            else:
                continue
            break
        sizes[label] += trace.size
        counts[label] += 1
    lines = [f"live allocations traced: {sum(sizes.values()) / 2**20:.1f} MiB in {sum(counts.values())} blocks",
             "| MiB | blocks | allocated at (innermost operator/kopf frame) |", "|---|---|---|"]
    lines += [f"| {size / 2**20:.2f} | {counts[label]} | {label} |" for label, size in sizes.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(summarize(sys.argv[1]))
