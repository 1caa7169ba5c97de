"""kstatus's generic rules for a custom resource, as Flux, kpt and Config Sync apply them (sigs.k8s.io/cli-utils
pkg/kstatus/status: checkGenericProperties, then the fallback for kinds it has no rules for). Written here, for the
unit and integration tests of the Reconciling/Stalled conditions."""

from __future__ import annotations


def kstatus(obj: dict) -> str:
    """Terminating, InProgress (generation not observed, or Reconciling=True), Failed (Stalled=True), else Current."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    if "observedGeneration" in status and status["observedGeneration"] != meta.get("generation"):
        return "InProgress"
    for cond in status.get("conditions") or []:
        if cond["type"] == "Reconciling" and cond["status"] == "True":
            return "InProgress"
        if cond["type"] == "Stalled" and cond["status"] == "True":
            return "Failed"
    return "Current"
