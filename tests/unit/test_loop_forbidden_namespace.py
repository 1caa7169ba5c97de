"""The autoscaler with a watched namespace it may not read (no Role there): found by the fault suite
(tests/faults, rbac-missing), where one forbidden namespace failed every tick, so no namespace was autoscaled."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from tei_operator.autoscaling.loop import Autoscaler
from tei_operator.kube import KubeApiError


class ListingKube:
    """Answers list() per namespace: a list of items, or a KubeApiError to raise."""

    def __init__(self, answers: dict) -> None:
        self.answers = answers
        self.calls: list[str | None] = []

    def register(self, rtype) -> None:
        pass

    async def list(self, rtype, namespace=None, **_):
        self.calls.append(namespace)
        answer = self.answers[namespace]
        if isinstance(answer, Exception):
            raise answer
        return [dict(item) for item in answer]


def autoscaler(kube, namespaces) -> Autoscaler:
    settings = SimpleNamespace(namespaces=namespaces, autoscaler_tick_seconds=15,
                               autoscaler_field_manager="tei-operator-autoscaler", metrics_source="scrape")
    return Autoscaler(kube, settings)


def forbidden(namespace: str) -> KubeApiError:
    return KubeApiError(403, "Forbidden", f'embeddingservices.tei-operator.io is forbidden: User "sa" cannot list '
                        f'resource "embeddingservices" in API group "tei-operator.io" in the namespace "{namespace}"')


async def test_a_forbidden_namespace_is_skipped_with_one_warning_naming_it(caplog):
    kube = ListingKube({"team-a": [{"metadata": {"name": "x"}}], "team-b": forbidden("team-b")})
    auto = autoscaler(kube, ["team-a", "team-b"])
    rtype = next(iter(auto.kinds.values()))
    with caplog.at_level(logging.WARNING, logger="tei_operator"):
        first = await auto._list(rtype)
        second = await auto._list(rtype)
    assert [i["metadata"]["name"] for i in first] == ["x"] == [i["metadata"]["name"] for i in second]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # once, not every tick
    assert "team-b" in warnings[0] and f"list {rtype.plural}" in warnings[0]
    # Once the Role is there, the namespace is read again, and losing it again warns again.
    kube.answers["team-b"] = [{"metadata": {"name": "y"}}]
    assert len(await auto._list(rtype)) == 2
    kube.answers["team-b"] = forbidden("team-b")
    with caplog.at_level(logging.WARNING, logger="tei_operator"):
        await auto._list(rtype)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


async def test_other_api_errors_still_fail_the_tick():
    kube = ListingKube({"team-a": KubeApiError(500, "InternalError", "etcdserver: request timed out")})
    auto = autoscaler(kube, ["team-a"])
    with pytest.raises(KubeApiError):
        await auto._list(next(iter(auto.kinds.values())))


async def test_cluster_wide_forbidden_is_not_hidden():
    kube = ListingKube({None: forbidden("")})
    auto = autoscaler(kube, [])
    with pytest.raises(KubeApiError):
        await auto._list(next(iter(auto.kinds.values())))
