"""The local control plane used by the tests and `make demo` (see harness.py)."""

from .harness import Cluster, ClusterError, free_port
from .pools import DEFAULT_POOLS, SCARCE_POOLS, NodePool, parse_layout

__all__ = ["Cluster", "ClusterError", "free_port", "NodePool", "DEFAULT_POOLS", "SCARCE_POOLS", "parse_layout"]
