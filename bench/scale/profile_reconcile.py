"""The controller's own CPU per full reconcile at rest, without a cluster: `python -m bench.scale.profile_reconcile`.

At rest the periodic resync still reconciles every service in full once every 10 minutes (controller/runner.py,
`Reconciled`): at 1,000 services ~100 full reconciles a minute, each rendering the service's children, comparing
them with the cached objects and building its status, and sending nothing. This fills the operator's watch-fed
store with the scale benchmark's fleet once Ready (bench/scale/profile_autoscaler.py's `fill`), lets the real
`Reconciler` bring it in line through a client that answers from that store (`StoreApplies`: an apply stores what
the API server would keep of it), and then measures full reconciles that find nothing to do: CPU milliseconds per
reconcile (median of `--rounds` rounds over every service), and a cProfile of one round (`--profile`). It fails
when such a round sends any request: at rest a full reconcile must cost no API call.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Mapping
from typing import Any

from tei_operator import kube as k
from tei_operator.controller.cache import ObjectStore
from tei_operator.controller.reconcile import OwnerKey, Reconciler, owner_types
from tei_operator.settings import load_settings

from .profile_autoscaler import fill


class StoreApplies(k.KubeClient):
    """A KubeClient whose writes land in the store, as the API server would keep them: an apply replaces our fields
    and keeps the object's uid, status and replicas (and the autoscaler's ownership of them); a status patch merges.
    Every request is recorded in `sent`."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(transport=None)  # type: ignore[arg-type] - nothing is sent
        self.store = store
        self.sent: list[str] = []
        self._version = 10**7

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    async def apply(self, manifest: Mapping[str, Any], field_manager: str, *, force: bool = True,
                    dry_run: bool = False, subresource: str | None = None) -> dict:
        rtype = self._type_of(manifest)
        meta = manifest["metadata"]
        self.sent.append(f"apply {rtype.kind} {meta.get('namespace')}/{meta['name']}")
        live = self.store.get_now(rtype, meta["name"], meta.get("namespace"))
        if set(manifest.get("spec") or {}) == {"replicas"} and live is not None:  # set_replicas
            body = copy.deepcopy(live)
            body["spec"]["replicas"] = manifest["spec"]["replicas"]
            body["metadata"]["managedFields"] = [{"manager": field_manager, "operation": "Apply",
                                                  "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
        else:
            body = copy.deepcopy(dict(manifest))
            if live is not None:
                held = live["metadata"]
                body["metadata"].update({key: held[key] for key in ("uid", "generation", "managedFields")
                                         if key in held})
                if "status" in live:
                    body["status"] = live["status"]
                if "replicas" in (live.get("spec") or {}) and "replicas" not in body.get("spec", {}):
                    body["spec"]["replicas"] = live["spec"]["replicas"]
        body["metadata"]["resourceVersion"] = self._next_version()
        if rtype == k.DEPLOYMENT:  # the Deployment controller has seen it
            body.setdefault("status", {})["observedGeneration"] = body["metadata"].get("generation", 1)
        self.store.put(body)
        return body

    async def patch(self, rtype: k.ResourceType, name: str, namespace: str | None, patch: Any, **kwargs: Any) -> dict:
        self.sent.append(f"patch {rtype.kind} {namespace}/{name} {kwargs.get('subresource') or ''}".rstrip())
        body = copy.deepcopy(self.store.get_now(rtype, name, namespace))
        status = body.setdefault("status", {})
        for key, value in (patch.get("status") or {}).items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        body["metadata"]["resourceVersion"] = self._next_version()
        self.store.put(body)
        return body

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.sent.append(f"{method} {path}")  # Events of the first reconciles ("Created ...")
        return {}


async def _measure(services: int, rounds: int, profile: bool) -> tuple[list[float], int, str]:
    settings = load_settings(metrics_source="scrape")
    store = ObjectStore()
    fill(store, services, settings)
    kube = StoreApplies(store)
    reconciler = Reconciler(kube, settings, cache=store)
    keys = [OwnerKey(kind, body["metadata"]["namespace"], body["metadata"]["name"])
            for kind, rtype in owner_types().items() for body in store.list_now(rtype)]
    for _ in range(2):  # the first round applies what the store's children lack (the applied hash), then settles
        for key in keys:
            await reconciler.reconcile(key, apply=True)
    settled = len(kube.sent)
    times: list[float] = []
    text = ""
    for i in range(rounds):
        profiler = cProfile.Profile() if profile and i == rounds - 1 else None
        started = time.process_time()
        if profiler:
            profiler.enable()
        for key in keys:
            await reconciler.reconcile(key, apply=True)
        if profiler:
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
            text = out.getvalue()
        else:
            times.append((time.process_time() - started) / len(keys))
    return times, len(kube.sent) - settled, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.profile_reconcile",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="rounds over every service measured (after two that "
                        "settle the fleet)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one more round")
    args = parser.parse_args(argv)
    times, sent, text = asyncio.run(_measure(args.services, args.rounds + (1 if args.profile else 0), args.profile))
    if text:
        print(text)
    times.sort()
    print(f"N = {args.services} services, store only: a full reconcile at rest takes "
          f"{times[len(times) // 2] * 1000:.2f} ms CPU (median of {len(times)} rounds); "
          f"requests sent by those rounds: {sent}")
    if sent:
        print("A full reconcile at rest sent requests: it should send none", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
