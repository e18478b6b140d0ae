"""The kinds registry: discovery of the kinds/ packages and of entry points, lookups, the
report columns it gathers."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from als_datasets import registry
from als_datasets.errors import InputError


def test_get_kind_default_and_unknown():
    assert registry.get_kind(None).name == registry.DEFAULT_KIND == "als"
    with pytest.raises(InputError) as exc:
        registry.get_kind("lidar", "r.yaml")
    assert str(exc.value) == "r.yaml: kind 'lidar': expected als, dem or satellite"
    with pytest.raises(InputError, match="demo.kind 'x'"):
        registry.get_kind("x", "r.yaml", key="demo.kind")


def test_register_refuses_what_is_not_a_kind():
    with pytest.raises(TypeError):
        registry.register(object())
    with pytest.raises(TypeError):
        registry.register(registry.Kind())  # no name


def test_infer_kind_and_report_columns():
    assert registry.infer_kind(["key", "point_count"]) == "als"
    assert registry.infer_kind(["spectral_entropy"]) == "satellite"
    assert registry.infer_kind(["relief_m"]) == "dem"
    assert registry.infer_kind(["x"]) is None
    als = registry.report_columns("als")
    assert als["label"] == ["landcover", "slope_class", "stratum", "project"] and als["group"] == ["project"]
    every = registry.report_columns(None)
    assert {"stratum", "continent", "biome"} <= set(every["label"])
    assert {"height_entropy", "spectral_entropy"} <= set(every["entropy"])


def test_entry_point_kinds_are_discovered(monkeypatch, tmp_path):
    """A kind shipped by another distribution registers through the ``als_datasets.kinds``
    entry-point group (the module is imported; importing it registers)."""
    (tmp_path / "plugin_kind.py").write_text(
        "from als_datasets.registry import Kind, register\n"
        "class PluginKind(Kind):\n    name = 'plugin'\n"
        "register(PluginKind())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint("plugin", "plugin_kind", registry.ENTRY_POINT_GROUP)

    def fake_entry_points(group=None):
        return [ep] if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_discovered", False)
    try:
        assert "plugin" in registry.kind_names()
        assert registry.get_kind("plugin").name == "plugin"
    finally:
        registry.unregister("plugin")
        sys.modules.pop("plugin_kind", None)
