"""A minimal kind written from inside ``tests/``: proof that adding a kind needs no edit of the
core (DESIGN.md §11).  ``kind: toy`` samples are small seeded float32 grids on a lon/lat lattice
(``cells`` × ``cells`` candidates, drawn at random, ``samples`` kept); everything else — recipe
loading, plan splits and shards, the build, resume, the folder's metadata, validate, the report,
the card and Croissant — is the core's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from als_datasets.errors import InputError
from als_datasets.plan import Plan, shard_specs, split_of
from als_datasets.recipe import (
    check_name,
    holdout_fraction,
    merge_recipe,
    number,
    recipe_base,
    resolve_output,
)
from als_datasets.registry import Kind
from als_datasets.shards.tasks import ShardOutputs

TOY_DEFAULTS = {"kind": "toy", "name": None, "strategy": "random", "seed": 0, "cells": 6, "samples": 10, "size": 4,
                "holdout_fraction": 0.0, "output": {"dir": None, "formats": ["webdataset", "parquet"],
                                                    "shard_max_samples": 4}}
TOY_JSON = {"tile_id": str, "group": str, "split": str, "lon": float, "lat": float, "parity": str,
            "value_mean": float, "strategy": str, "draw_rank": int, "seed": int}


@dataclass(frozen=True)
class ToyRecipe:
    path: Path | None
    name: str
    strategy: str
    seed: int
    cells: int
    samples: int
    size: int
    holdout_fraction: float
    out_dir: Path
    formats: tuple[str, ...]
    shard_max_samples: int
    raw: dict = field(repr=False, compare=False, default_factory=dict)

    kind = "toy"


def toy_features(size: int):
    from als_datasets.dataset.features import features_for_samples

    example = {"__key__": "x", "json": None, "grid.npy": np.zeros((size, size), np.float32)}
    return features_for_samples(example, json_schema=TOY_JSON, array_shapes={"grid.npy": (size, size)})


@dataclass(frozen=True)
class ToyShardTask(ShardOutputs):
    index: int
    split: str
    records: tuple[dict, ...]
    out_dir: str
    formats: tuple[str, ...]
    size: int
    seed: int

    def features(self):
        return toy_features(self.size)

    def iter_samples(self):
        for rec in self.records:
            rng = np.random.default_rng([self.seed, int(rec["col"]), int(rec["row"])])
            grid = rng.random((self.size, self.size), dtype=np.float32)
            meta = {k: rec[k] for k in ("tile_id", "group", "split", "lon", "lat", "parity", "strategy", "seed")}
            meta.update(draw_rank=int(rec["draw_rank"]), value_mean=float(grid.mean()))
            yield {"__key__": rec["tile_id"], "grid.npy": grid, "json": meta}


class ToyKind(Kind):
    name = "toy"
    group_column = "group"
    signature_column = "value_mean"
    label_columns = ("parity",)
    distribution_columns = ("value_mean",)

    def load_recipe(self, data, src, overrides, out_dir):
        where = src if src is not None else "<recipe>"
        merged = merge_recipe(where, data, TOY_DEFAULTS, set(TOY_DEFAULTS) | {"license", "sources", "description"},
                              overrides, aliases={"samples_per_project": "samples"})
        name = check_name(where, merged.get("name") or "toy-set")
        formats, out = resolve_output(where, recipe_base(src), merged["output"], out_dir, f"{name}-random")
        raw = copy.deepcopy(merged)
        raw.update(name=name, output={**merged["output"], "dir": str(out)})
        return ToyRecipe(src, name, str(merged["strategy"]), number(where, merged, "seed", int, lo=0),
                         number(where, merged, "cells", int, lo=1), number(where, merged, "samples", int, lo=1),
                         number(where, merged, "size", int, lo=1), holdout_fraction(where, merged), out, formats,
                         number(where, merged["output"], "shard_max_samples", int, lo=1), raw)

    def check_strategy(self, recipe) -> None:
        if recipe.strategy != "random":
            raise InputError(recipe.path, f"unknown strategy {recipe.strategy!r} (choose from random)")

    def make_plan(self, recipe, progress=None, executor=None):
        import geopandas as gpd
        from shapely import box

        n = recipe.cells
        cols, rows = np.meshgrid(np.arange(n), np.arange(n))
        cols, rows = cols.ravel(), rows.ravel()
        lon, lat = 10.0 + cols * 0.01, 45.0 + rows * 0.01
        rank = np.empty(n * n, dtype=np.int64)
        rank[np.random.default_rng(recipe.seed).permutation(n * n)] = np.arange(n * n)
        ids = [f"toy_c{c}_r{r}" for c, r in zip(cols, rows)]
        frame = gpd.GeoDataFrame({
            "tile_id": ids, "group": [f"g{r % 2}" for r in rows], "col": cols, "row": rows,
            "lon": lon + 0.005, "lat": lat + 0.005, "parity": ["even" if (c + r) % 2 == 0 else "odd"
                                                               for c, r in zip(cols, rows)],
            "eligible": True, "weight": 1.0 / (n * n), "draw_rank": rank, "selected": rank < recipe.samples,
            "split": [split_of(k, recipe.seed, recipe.holdout_fraction) for k in ids],
        }, geometry=[box(x, y, x + 0.01, y + 0.01) for x, y in zip(lon, lat)], crs=4326)
        plan = Plan(recipe, [], frame)
        plan.shards = shard_specs(frame, recipe.shard_max_samples, self.group_column)
        return plan

    def shard_tasks(self, plan, out, staging, workers=1):
        r = plan.recipe
        sel = plan.selected.set_index("tile_id")
        tasks = []
        for spec in plan.shards:
            recs = tuple({"tile_id": k, "group": sel.at[k, "group"], "split": spec.split, "col": int(sel.at[k, "col"]),
                          "row": int(sel.at[k, "row"]), "lon": float(sel.at[k, "lon"]),
                          "lat": float(sel.at[k, "lat"]), "parity": sel.at[k, "parity"], "strategy": r.strategy,
                          "seed": r.seed, "draw_rank": int(sel.at[k, "draw_rank"])} for k in spec.keys)
            tasks.append(ToyShardTask(spec.index, spec.split, recs, str(out), r.formats, r.size, r.seed))
        return tasks

    def index_columns(self, recipe) -> list[str]:
        return ["key", "split", "shard", "group", "tile_id", "parity", "value_mean", "draw_rank", "lon", "lat"]

    def manifest_fields(self, plan) -> dict:
        return {"samples": plan.recipe.samples}

    def features(self, manifest, recipe):
        return toy_features(int(recipe.get("size", 4)))

    def render_card(self, out, div, plots, repo_id=None):
        import json

        import yaml

        from als_datasets.dataset.card import card_yaml
        from als_datasets.report.card import card_splits, diversity_markdown

        manifest = json.loads((out / "manifest.json").read_text())
        recipe = yaml.safe_load((out / "recipe.yaml").read_text())
        splits, formats = card_splits(manifest, recipe)
        ydict = card_yaml(self.features(manifest, recipe), splits, pretty_name=f"{manifest['name']} — toy grids",
                          license="cc0-1.0", tags=["toy"], formats=formats)
        body = f"# {manifest['name']}\n\nToy grids (a test kind).\n\n## Diversity\n\n{diversity_markdown(div)}\n"
        return ydict, "---\n" + yaml.safe_dump(ydict, sort_keys=False) + "---\n\n" + body
