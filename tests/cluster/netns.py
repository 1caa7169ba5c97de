"""Where the simulated pods' IP addresses live: a non-loopback range made local in a private network namespace.

Kubernetes refuses loopback addresses in Endpoints and EndpointSlices, so pods with 127.x.y.z addresses give every
Service a stream of FailedToCreateEndpoint / FailedToUpdateEndpointSlices warnings and no Service routes. Pods here
get addresses from 198.18.0.0/15 instead (RFC 2544's benchmarking range: never routed on the internet), which is made
local by assigning it to `lo` inside a network namespace of our own. That namespace has only `lo`: nothing sent to a
pod address, or anywhere else, can leave the machine.

How a process gets there:
- pytest (tests/conftest.py) calls `enter_private_namespace()` before the first test: the test process moves into a
  fresh namespace (unshare(CLONE_NEWNET), root only), so every process the run starts (etcd, kube-apiserver, kwok,
  the operator, the TEI emulators, Prometheus, kubectl, helm) and every client in the tests shares it. Commands that
  must reach a package registry (the tool build) run in the original namespace via `in_host_network`.
- `python -m tests.cluster up` and `make demo` create a named namespace (`ip netns add`), so that the cluster
  outlives the command; `python -m tests.cluster exec -- CMD` (or `ip netns exec NAME CMD`) runs a command in it.

Where this cannot be set up (not root, no unshare permission in a container, no iproute2 for a named namespace), the
pods fall back to a loopback /16 (127.N.0.0/16) as before, and the reason is logged: everything still works except
what needs valid Endpoints (Services route nowhere; the API server's service and pod proxies refuse loopback).
`TEI_OPERATOR_NETNS=off` chooses the fallback on purpose.
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import logging
import os
import random
import shutil
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass

log = logging.getLogger("tests.cluster.netns")

POD_SUPERNET = ipaddress.ip_network("198.18.0.0/15")
# The address `lo` carries in the namespace; with its /15 prefix the kernel makes the whole range local.
LOCAL_ADDRESS = "198.19.255.254"
# Each cluster takes its own /18 of the /15 (16,382 pod IPs; 8 clusters per namespace), so two clusters in one
# namespace (the session's and the closed-loop test's) never hand out the same address.
CLUSTER_PREFIX = 18
LOOPBACK_CIDR_FORMAT = "127.{}.0.0/16"
ENV = "TEI_OPERATOR_NETNS"  # auto (default): try the private namespace; off: loopback pod IPs
NETNS_DIR = "/run/netns"

_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _SIOCSIFADDR, _SIOCSIFNETMASK = 0x8913, 0x8914, 0x8916, 0x891C
_IFF_UP = 0x1


@dataclass
class PodNetwork:
    """What this process set up: `private` (pod IPs from POD_SUPERNET) or `loopback` (the fallback, with why)."""

    mode: str
    reason: str = ""
    netns: str = ""  # the namespace's path when it has one (/run/netns/NAME, /proc/PID/ns/net)

    def describe(self) -> str:
        if self.mode == "private":
            return (f"pod IPs from {POD_SUPERNET} on lo in a private network namespace"
                    + (f" ({self.netns})" if self.netns else ""))
        return f"pod IPs from loopback 127.N.0.0/16 (fallback: {self.reason}); Services do not route"


_current = PodNetwork("loopback", "no private network namespace was set up")
_host_fd: int | None = None
_blocks = list(POD_SUPERNET.subnets(new_prefix=CLUSTER_PREFIX))
_next_block = random.randrange(len(_blocks))
_lock = threading.Lock()


def current() -> PodNetwork:
    return _current


# -- is the pod range local here? ----------------------------------------------------------------------------------

def pod_range_is_local() -> bool:
    """Whether POD_SUPERNET is local in this process's network namespace (binding one of its addresses works)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((str(POD_SUPERNET[-2]), 0))
        except OSError:
            return False
    return True


def next_pod_cidr() -> str:
    """The pod CIDR for a new cluster: the next free /18 of POD_SUPERNET where that range is local, else a random
    loopback /16 (the fallback)."""
    global _next_block
    if pod_range_is_local():
        with _lock:
            block = _blocks[_next_block % len(_blocks)]
            _next_block += 1
        return str(block)
    return LOOPBACK_CIDR_FORMAT.format(random.randint(2, 254))


def check_pod_cidr(cidr: str) -> None:
    """Refuse a pod CIDR whose traffic could leave this machine. ValueError naming the field otherwise."""
    net = ipaddress.ip_network(cidr)
    if net.is_loopback:
        return
    if net.subnet_of(POD_SUPERNET) and pod_range_is_local():
        return
    raise ValueError(f"pod_cidr {cidr!r}: must be inside 127.0.0.0/8, or inside {POD_SUPERNET} when that range is "
                     "local (a private network namespace, see tests/cluster/netns.py): simulated pods stay on this "
                     "machine")


def is_pod_address(ip: str) -> bool:
    """Whether an emulator may bind this pod IP: a loopback address, or one of POD_SUPERNET."""
    address = ipaddress.ip_address(ip)
    return address.is_loopback or address in POD_SUPERNET


# -- system calls ----------------------------------------------------------------------------------------------------

def _libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _unshare_net() -> None:
    _check(_libc().unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)")


def _setns(fd: int) -> None:
    _check(_libc().setns(fd, _CLONE_NEWNET), "setns(CLONE_NEWNET)")


def _ifreq(name: str, payload: bytes = b"") -> bytes:
    return struct.pack("16s", name.encode()) + payload.ljust(24, b"\0")


def _sockaddr(ip: str) -> bytes:
    return struct.pack("HH4s", socket.AF_INET, 0, socket.inet_aton(ip))


def configure_loopback() -> None:
    """In the current namespace: bring `lo` up and give it LOCAL_ADDRESS with POD_SUPERNET's prefix, which makes
    the whole range local (ioctls, so no iproute2 is needed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("H", fcntl.ioctl(s, _SIOCGIFFLAGS, _ifreq("lo"))[16:18])[0]
        fcntl.ioctl(s, _SIOCSIFFLAGS, _ifreq("lo", struct.pack("H", flags | _IFF_UP)))
        if not pod_range_is_local():
            fcntl.ioctl(s, _SIOCSIFADDR, _ifreq("lo:pods", _sockaddr(LOCAL_ADDRESS)))
            fcntl.ioctl(s, _SIOCSIFNETMASK, _ifreq("lo:pods", _sockaddr(str(POD_SUPERNET.netmask))))
    if not pod_range_is_local():
        raise OSError(f"{POD_SUPERNET} is still not local after adding {LOCAL_ADDRESS} to lo")


# -- entering namespaces ---------------------------------------------------------------------------------------------

def _disabled() -> str | None:
    value = os.environ.get(ENV, "auto").strip().lower()
    if value == "off":
        return f"{ENV}=off"
    if value not in ("", "auto"):
        raise ValueError(f"{ENV}: must be auto or off, got {value!r}")
    return None


def enter_private_namespace() -> PodNetwork:
    """Move this process into a fresh network namespace with POD_SUPERNET local on `lo`. Must be called while the
    process has one thread (a namespace belongs to a thread; threads started later inherit it). On any failure the
    process stays where it was and the result says why (the loopback fallback)."""
    global _current, _host_fd
    reason = _disabled()
    if reason is None and pod_range_is_local():
        _current = PodNetwork("private", netns="already local in this namespace")
        return _current
    if reason is None and os.geteuid() != 0:
        reason = "not running as root (a network namespace needs CAP_SYS_ADMIN)"
    if reason is None and threading.active_count() != 1:
        reason = f"{threading.active_count()} threads already run (unshare moves only the calling one)"
    if reason is None:
        host = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _unshare_net()
        except OSError as exc:
            os.close(host)
            reason = str(exc)
        else:
            try:
                configure_loopback()
            except OSError as exc:
                _setns(host)
                os.close(host)
                reason = f"could not make {POD_SUPERNET} local on lo: {exc}"
            else:
                _host_fd = host
                _current = PodNetwork("private", netns=f"/proc/{os.getpid()}/ns/net")
                log.info("Moved into a private network namespace: %s", _current.describe())
                return _current
    _current = PodNetwork("loopback", reason)
    log.warning("No private network namespace: %s", _current.describe())
    return _current


def in_host_network() -> None:
    """preexec_fn for commands that must reach the network outside (the Go module proxy): runs them in the
    namespace this process started in. A no-op when the process never moved."""
    if _host_fd is not None:
        _setns(_host_fd)


def named_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def create_named(name: str) -> PodNetwork:
    """Create (or reuse) the named namespace /run/netns/NAME with POD_SUPERNET local on lo, and move this process
    into it. Falls back like enter_private_namespace (reason given) when it cannot."""
    global _current
    reason = _disabled()
    if reason is None and os.geteuid() != 0:
        reason = "not running as root (a network namespace needs CAP_SYS_ADMIN)"
    if reason is None and shutil.which("ip") is None:
        reason = "`ip` (iproute2) is not installed: it creates a named network namespace"
    if reason is None and threading.active_count() != 1:
        reason = f"{threading.active_count()} threads already run (setns moves only the calling one)"
    if reason is None:
        path = named_path(name)
        if not os.path.exists(path):
            result = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
            if result.returncode != 0:
                reason = f"`ip netns add {name}` failed: {result.stderr.strip()}"
        if reason is None:
            try:
                enter_named(path)
                configure_loopback()
            except OSError as exc:
                in_host_network()
                reason = f"could not set up network namespace {name}: {exc}"
            else:
                _current = PodNetwork("private", netns=path)
    if reason is None:
        log.info("Entered network namespace %s: %s", name, _current.describe())
        return _current
    _current = PodNetwork("loopback", reason)
    log.warning("No private network namespace: %s", _current.describe())
    return _current


def enter_named(path: str) -> PodNetwork:
    """Move this (single-threaded) process into the namespace at `path`, keeping the way back for
    in_host_network."""
    global _current, _host_fd
    host = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd)
    except OSError:
        os.close(host)
        raise
    finally:
        os.close(fd)
    if _host_fd is None:
        _host_fd = host
    else:
        os.close(host)
    _current = PodNetwork("private" if pod_range_is_local() else "loopback",
                          "" if pod_range_is_local() else f"{POD_SUPERNET} is not local in {path}", netns=path)
    return _current


def delete_named(name: str) -> None:
    if os.path.exists(named_path(name)) and shutil.which("ip"):
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, text=True)
