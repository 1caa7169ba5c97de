"""bench/scale/profile_reconcile.py: full reconciles of a fleet at rest, from the watch-fed store, send nothing and
remember their answers (controller/applied.py `ApplyReasons`)."""

from __future__ import annotations

import asyncio

from bench.scale.profile_autoscaler import fill
from bench.scale.profile_reconcile import StoreApplies, main
from tei_operator.controller.cache import ObjectStore
from tei_operator.controller.reconcile import OwnerKey, Reconciler, owner_types
from tei_operator.kube import DEPLOYMENT
from tei_operator.settings import load_settings


def test_the_profiler_runs_and_full_reconciles_at_rest_send_nothing(capsys):
    assert main(["--services", "12", "--rounds", "1"]) == 0
    assert "requests sent by those rounds: 0" in capsys.readouterr().out


def test_a_full_reconcile_at_rest_checks_drift_from_memory_and_a_hand_edit_is_still_undone():
    settings = load_settings(metrics_source="scrape")
    store = ObjectStore()
    fill(store, 4, settings)
    kube = StoreApplies(store)
    reconciler = Reconciler(kube, settings, cache=store)
    keys = [OwnerKey(kind, b["metadata"]["namespace"], b["metadata"]["name"])
            for kind, rtype in owner_types().items() for b in store.list_now(rtype)]

    async def round_() -> None:
        for key in keys:
            await reconciler.reconcile(key, apply=True)

    asyncio.run(round_())
    asyncio.run(round_())
    sent, remembered = len(kube.sent), reconciler.apply_reasons.remembered
    asyncio.run(round_())
    assert len(kube.sent) == sent  # nothing to apply
    assert reconciler.apply_reasons.remembered - remembered >= 2 * len(keys)  # the Deployment and Service of each
    # A hand edit of the image is a new version of the Deployment: checked in full again, and applied over.
    deployment = next(d for d in store.list_now(DEPLOYMENT) if d["metadata"]["name"] == keys[0].name)
    edited = {**deployment, "metadata": {**deployment["metadata"], "resourceVersion": "999999999"},
              "spec": {**deployment["spec"], "template": {**deployment["spec"]["template"], "spec": {
                  **deployment["spec"]["template"]["spec"],
                  "containers": [{**deployment["spec"]["template"]["spec"]["containers"][0], "image": "x/y:1"}]}}}}
    store.put(edited)
    asyncio.run(round_())
    assert any(s.startswith(f"apply Deployment {keys[0].namespace}/{keys[0].name}") for s in kube.sent[sent:])
