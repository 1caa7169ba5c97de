"""controller/access.py: namespaces the operator may not read are left out with an error naming them and the
missing permissions (found by tests/faults rbac-missing: one such namespace stopped kopf for all of them)."""

from __future__ import annotations

import logging

import pytest

from tei_operator.controller.access import WATCHED, readable_namespaces
from tei_operator.kube import KubeApiError


class ReviewingKube:
    """Answers SelfSubjectAccessReviews: allowed unless (namespace, resource) is in `denied`."""

    def __init__(self, denied: set[tuple[str, str]]) -> None:
        self.denied = denied
        self.reviews = 0

    async def request(self, method, path, *, body=None, **_):
        assert method == "POST" and path.endswith("/selfsubjectaccessreviews")
        attrs = body["spec"]["resourceAttributes"]
        self.reviews += 1
        return {"status": {"allowed": (attrs["namespace"], attrs["resource"]) not in self.denied}}


async def test_a_namespace_without_a_role_is_left_out_and_named(caplog):
    kube = ReviewingKube({("team-b", "embeddingservices"), ("team-b", "pods")})
    with caplog.at_level(logging.ERROR, logger="tei_operator"):
        assert await readable_namespaces(kube, ["team-a", "team-b"]) == ["team-a"]
    assert kube.reviews == 2 * len(WATCHED) * 2
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert message.startswith("Skipped namespace team-b:")
    assert "list embeddingservices.tei-operator.io" in message and "watch pods" in message
    assert "team-a" not in message


async def test_the_whole_cluster_is_not_reviewed():
    kube = ReviewingKube(set())
    assert await readable_namespaces(kube, []) == []
    assert kube.reviews == 0


async def test_no_readable_namespace_is_a_clear_error():
    kube = ReviewingKube({("team-b", "deployments")})
    with pytest.raises(KubeApiError, match="may not read any of its watched namespaces \\(team-b\\)"):
        await readable_namespaces(kube, ["team-b"])
