"""The manifest copies the controller makes on every full reconcile (json_tree.py)."""

from __future__ import annotations

import copy

from tei_operator.json_tree import copy_tree, without_annotations


def test_copy_tree_copies_every_dict_and_list_and_equals_the_original():
    tree = {"a": [1, {"b": "x", "c": [None, True, 2.5]}], "d": {"e": {}}, "t": ("y", "z")}
    copied = copy_tree(tree)
    assert copied == {**tree, "t": ["y", "z"]}
    copied["a"][1]["c"].append(3)
    copied["d"]["e"]["f"] = 1
    assert tree == {"a": [1, {"b": "x", "c": [None, True, 2.5]}], "d": {"e": {}}, "t": ("y", "z")}


def test_without_annotations_drops_only_the_keys_asked_and_changes_nothing_given():
    manifest = {"kind": "Deployment", "metadata": {"name": "m", "annotations": {"keep": "1", "drop": "2"}},
                "spec": {"replicas": 1}}
    before = copy.deepcopy(manifest)
    out = without_annotations(manifest, ("drop",), drop_empty=True)
    assert out == {"kind": "Deployment", "metadata": {"name": "m", "annotations": {"keep": "1"}},
                   "spec": {"replicas": 1}}
    assert manifest == before
    assert out["spec"] is manifest["spec"]  # shared, not copied
    assert without_annotations(manifest, ("other",), drop_empty=True) is manifest
    only = {"metadata": {"annotations": {"drop": "2"}}}
    assert without_annotations(only, ("drop",), drop_empty=True) == {"metadata": {}}
    assert without_annotations(only, ("drop",), drop_empty=False) == {"metadata": {"annotations": {}}}
    assert without_annotations({"kind": "Service"}, ("drop",), drop_empty=True) == {"kind": "Service"}
