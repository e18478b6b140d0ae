"""The shape of the code (DESIGN.md §11), checked so that it stays true: no import cycle between
modules, a core that never imports or names a kind, modules of reasonable size, and a kind
added from outside the package (``toy_kind.py``) built, validated and reported by the core."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "als_datasets"
#: folders outside the core: the kinds, and what is per kind by nature (demo generators, models)
NOT_CORE = ("kinds", "train", "demo")
MAX_LINES = 600


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return mods


def import_graph() -> dict[str, set[str]]:
    """module → the modules of the package it imports (anywhere in it, function bodies included).
    ``from pkg import name`` is an import of ``pkg.name`` when that is a module, else of ``pkg``."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, (path, is_pkg) in mods.items():
        here = m.split(".") if is_pkg else m.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = (here[: len(here) - node.level + 1] if node.level else [])
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    dep = sub if sub in mods else target
                    if dep in mods and dep != m:
                        graph[m].add(dep)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods and alias.name != m:
                        graph[m].add(alias.name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def _is_core(module: str) -> bool:
    parts = module.split(".")
    return len(parts) < 2 or parts[1] not in NOT_CORE


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_core_never_imports_a_kind():
    """Only the registry reaches the kinds (by discovery); the rest of the core asks it."""
    bad = [f"{m} imports {d}" for m, deps in import_graph().items() if _is_core(m) and m != "als_datasets.registry"
           for d in deps if d.startswith("als_datasets.kinds")]
    assert not bad, "\n".join(bad)


def test_kinds_are_siblings():
    """A kind imports the core, itself and the shared raster base (``kinds.raster``), never
    another kind: what two kinds share belongs in the core."""
    bad = []
    for m, deps in import_graph().items():
        parts = m.split(".")
        if len(parts) < 3 or parts[1] != "kinds":
            continue
        for d in deps:
            dp = d.split(".")
            if len(dp) >= 3 and dp[1] == "kinds" and dp[2] not in (parts[2], "raster"):
                bad.append(f"{m} imports {d}")
    assert not bad, "\n".join(bad)


def test_core_never_names_a_kind():
    """No string literal of the core is a kind's name (no ``if kind == "als"``); the registry's
    default kind is the one exception."""
    from als_datasets.registry import kind_names

    names = set(kind_names())
    assert {"als", "satellite", "dem"} <= names
    bad = []
    for m, (path, _) in _modules().items():
        if not _is_core(m) or m == "als_datasets.registry":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno}: {node.value!r}")
    assert not bad, "\n".join(bad)


def test_modules_stay_under_600_lines():
    long = {str(p.relative_to(PKG.parent)): n for p, _ in _modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


# --------------------------------------------------------------------------- a kind from outside

@pytest.fixture()
def toy_kind():
    from toy_kind import ToyKind

    from als_datasets.registry import register, unregister

    kind = register(ToyKind())
    yield kind
    unregister("toy")


def _cli(*args) -> None:
    from als_datasets.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        assert not exc.code, f"als-datasets {' '.join(args)} exited {exc.code}"


def test_a_kind_registered_from_tests_builds_validates_and_reports(toy_kind, tmp_path, capsys):
    import pyarrow.parquet as pq
    import yaml
    from datasets import load_dataset

    recipe = tmp_path / "toy.yaml"
    recipe.write_text(yaml.safe_dump({"kind": "toy", "name": "toyset", "cells": 5, "samples": 9, "seed": 3}))
    out, again = tmp_path / "out", tmp_path / "again"

    _cli("plan", str(recipe), "--out", str(tmp_path / "plan"), "--quiet")
    assert "25 candidates, 25 eligible, 9 selected" in capsys.readouterr().out
    _cli("build", str(recipe), "--out", str(out), "--quiet")
    _cli("validate", str(out))
    _cli("report", str(out))

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "toy" and manifest["splits"] == {"train": 9} and manifest["samples"] == 9
    assert len([e for e in manifest["shards"] if e["format"] == "webdataset"]) == 3  # shards of ≤ 4, per group
    index = pq.read_table(out / "index.parquet").to_pandas()
    assert len(index) == 9 and set(index["parity"]) <= {"even", "odd"}
    div = json.loads((out / "report" / "diversity.json").read_text())
    assert div["kind"] == "toy" and div["num_samples"] == 9
    assert set(div["labels"]) == {"parity"} and set(div["distributions"]) == {"value_mean"}
    assert sorted(p.name for p in (out / "report").glob("*.png")) == ["footprints.png", "labels.png"]
    assert "Toy grids (a test kind)." in (out / "README.md").read_text()
    croissant = json.loads((out / "croissant.json").read_text())
    assert croissant["description"].startswith("9 toy samples")
    ds = load_dataset(str(out), split="train")
    assert len(ds) == 9 and len(ds[0]["grid.npy"]) == 4

    _cli("build", str(recipe), "--out", str(again), "--quiet")  # the same bytes again
    for rel in ("manifest.json", "index.parquet", "webdataset/train/shard-000000.tar"):
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_an_unknown_kind_names_the_recipe_and_the_kinds(tmp_path, capsys):
    recipe = tmp_path / "x.yaml"
    recipe.write_text("kind: lidar\n")
    from als_datasets.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["build", str(recipe), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {recipe}: kind 'lidar': expected als, dem or satellite", err


def test_kinds_come_from_the_registry_only(monkeypatch):
    """A fresh interpreter finds the three shipped kinds by discovery, with nothing imported first."""
    import subprocess

    code = ("from als_datasets.registry import kind_names, get_kind; "
            "print(kind_names(), get_kind('dem').group_column, get_kind(None).name)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "['als', 'dem', 'satellite'] scene als"


def test_each_kinds_card_shows_only_its_own_sources(tmp_path, demo_recipe):
    """A satellite recipe without ``sources:`` lists its scenes and layers under "Source data",
    never an ALS build's land cover, DEM and point clouds (and the other way round)."""
    from als_datasets.build import run_build
    from als_datasets.recipe import load_recipe

    sat = load_recipe(data={"demo": {"kind": "satellite"}, "sources": [], "samples": 6},
                      out_dir=tmp_path / "sat")
    run_build(sat)
    card = (tmp_path / "sat" / "README.md").read_text()
    source = card.split("Source data and their licences:", 1)[1].split("\n## ", 1)[0]
    assert "- scenes: `" in source and "- continents: `Natural Earth 110m admin-0 (shipped)`" in source
    assert "point clouds" not in card and "DEM:" not in source and "slope" not in source
    assert "The recipe does not state the sources' licences" in source

    import yaml

    als = load_recipe(demo_recipe, data={**yaml.safe_load(demo_recipe.read_text()), "sources": [],
                                         "samples_per_project": 2}, out_dir=tmp_path / "als")
    run_build(als)
    source = (tmp_path / "als" / "README.md").read_text().split("Source data and their licences:", 1)[1]
    source = source.split("\n## ", 1)[0]
    assert "- point clouds: the projects' LAS/LAZ/COPC files" in source and "scenes" not in source
