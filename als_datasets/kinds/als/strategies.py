"""Sampling strategies behind one small interface.

A strategy turns a project's frame (eligible tiles, frame order) into sampling weights; the
draw itself is shared: numpy's legacy ``RandomState(seed).choice(n, min(n, draws),
replace=False, p=weights)``, seeded per project, so the paper's selections can be reproduced
and the first N entries of the ordered draw form the N-per-project set (5 ⊂ 10 ⊂ 20 ⊂ 40).

To add a strategy, write a function ``(tiles: DataFrame, recipe) -> weights`` over the eligible
rows and decorate it with ``@register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from als_datasets.kinds.als.frame import grid as g

WeightFn = Callable[[pd.DataFrame, object], np.ndarray]
STRATEGIES: dict[str, WeightFn] = {}


def register(name: str):
    def deco(fn: WeightFn) -> WeightFn:
        STRATEGIES[name] = fn
        return fn

    return deco


@register("geospatial")
def geospatial(eligible_tiles: pd.DataFrame, recipe) -> np.ndarray:
    """Inverse probability over the (land cover × slope) strata (arXiv 2501.05095)."""
    n = len(eligible_tiles)
    return g.stratum_weights(np.ones(n, bool), eligible_tiles["_lc_label"].to_numpy(),
                             eligible_tiles["_slope_label"].to_numpy(), len(recipe.slope_classes))


@register("random")
def random(eligible_tiles: pd.DataFrame, recipe) -> np.ndarray:
    """The paper's baseline: the same frame and eligibility, uniform weights."""
    return g.uniform_weights(np.ones(len(eligible_tiles), bool))


def get(name: str) -> WeightFn:
    if name not in STRATEGIES:
        raise KeyError(name)
    return STRATEGIES[name]


def apply_strategy(tiles: pd.DataFrame, recipe, strategy: str | None = None) -> pd.DataFrame:
    """Add ``weight``, ``draw_rank`` and ``selected`` to one project's frame (frame order kept)."""
    fn = get(strategy or recipe.strategy)
    out = tiles.copy()
    elig = out["eligible"].to_numpy()
    idx = np.flatnonzero(elig)
    weights = np.zeros(len(out))
    rank = np.full(len(out), -1, dtype=np.int64)
    if len(idx):
        w = np.asarray(fn(out.iloc[idx], recipe), dtype=np.float64)
        w = w / w.sum()
        weights[idx] = w
        order = g.ordered_draw(w, recipe.seed, recipe.draws)
        rank[idx[order]] = np.arange(len(order))
    out["weight"] = weights
    out["draw_rank"] = pd.array(np.where(rank >= 0, rank, 0), dtype="Int64")
    out.loc[rank < 0, "draw_rank"] = pd.NA
    out["selected"] = (rank >= 0) & (rank < recipe.samples_per_project)
    return out
