"""Counting API requests: kube-apiserver's `apiserver_request_total`, read from its /metrics before and after a
phase, as (verb, resource) -> requests. Subresources are kept apart (`deployments/status`), so the control plane's
status writes never mix with a client's writes of the object itself. Pure functions: tests feed them text."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, str]  # (verb, resource[/subresource])
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})
READ_VERBS = frozenset({"GET", "LIST", "WATCH"})
# The leader election Lease renewal (one write a second from any controller with leader election on) is reported
# on its own line, not in the per-service figures: it does not grow with the services.
LEASES = "leases"
CHILD_RESOURCES = frozenset({"deployments", "services", "poddisruptionbudgets", "networkpolicies"})


def parse_request_totals(text: str) -> Counter[Key]:
    """`apiserver_request_total` by (verb, resource[/subresource]), summed over codes, groups and scopes. Requests to
    non-resource paths (/metrics, /healthz) are left out."""
    out: Counter[Key] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            resource = sample.labels.get("resource", "")
            if not resource:
                continue
            sub = sample.labels.get("subresource", "")
            out[(sample.labels.get("verb", ""), f"{resource}/{sub}" if sub else resource)] += sample.value
    return out


def delta(after: Mapping[Key, float], before: Mapping[Key, float]) -> Counter[Key]:
    """after - before per key (a counter only grows; keys only in `after` count from 0)."""
    return Counter({k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0)})


def minus(a: Mapping[Key, float], *others: Mapping[Key, float],
          scale: Iterable[float] | None = None) -> dict[Key, float]:
    """a - sum(scale_i * others_i) per key (scale 1 by default); negative results are kept (they show noise)."""
    factors = list(scale) if scale is not None else [1.0] * len(others)
    keys = set(a).union(*others)
    out = {k: a.get(k, 0.0) - sum(f * o.get(k, 0.0) for f, o in zip(factors, others)) for k in keys}
    return {k: v for k, v in out.items() if abs(v) > 1e-9}


def total(counts: Mapping[Key, float], verbs: frozenset[str], *, leases: bool = False,
          resources: frozenset[str] | None = None) -> float:
    """The requests of `verbs` (Leases only if `leases`; only `resources` if given). Rows that came out negative
    after a subtraction (the control plane sent fewer of them than in its reference window: noise) count as 0, so
    they cannot hide the operator's requests of another kind."""
    return sum(max(0.0, v) for (verb, res), v in counts.items()
               if verb in verbs and (leases or res != LEASES) and (resources is None or res in resources))


def writes(counts: Mapping[Key, float]) -> float:
    return total(counts, WRITE_VERBS)


def reads(counts: Mapping[Key, float]) -> float:
    return total(counts, READ_VERBS)


def applies_of_children(counts: Mapping[Key, float]) -> float:
    """Server-side applies (and other writes of the object itself) of Deployments, Services, PDBs and
    NetworkPolicies: what "applies per child" counts."""
    return total(counts, frozenset({"APPLY", "PATCH", "PUT", "POST"}), resources=CHILD_RESOURCES)


def by_verb_resource(counts: Mapping[Key, float], per: float, *, floor: float = 0.05) -> list[tuple[str, str, float]]:
    """(verb, resource, count / per) sorted by count, biggest first; rows under `floor` (after dividing) left out."""
    rows = [(verb, res, v / per) for (verb, res), v in counts.items() if abs(v / per) >= floor]
    return sorted(rows, key=lambda r: (-abs(r[2]), r[0], r[1]))
