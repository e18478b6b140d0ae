"""``als-datasets plan``: the sampling frame and the draw, before any point cloud is read."""

from __future__ import annotations

from pathlib import Path

import typer

from als_datasets.cli.options import (
    OUT,
    QUIET,
    RECIPE,
    SAMPLES,
    SEED,
    STRATEGY,
    check_strategy,
    resolve_recipe,
)
from als_datasets.cli.root import app


@app.command()
def plan(
    recipe: Path = RECIPE,
    strategy: str = STRATEGY,
    out: Path = OUT,
    samples_per_project: int = SAMPLES,
    seed: int = SEED,
    quiet: bool = QUIET,
) -> None:
    """Write OUT/frame.parquet (every candidate sample: labels, eligibility, weight, draw rank)
    and summarise the draw (ALS: and list the point-cloud files the selected tiles need)."""
    from als_datasets.plan import make_plan, write_frame
    from als_datasets.progress import Reporter
    from als_datasets.registry import get_kind

    with Reporter(enabled=not quiet) as rep:
        r = resolve_recipe(recipe, strategy, out, samples_per_project, seed, progress=None if quiet else rep.log)
        check_strategy(r)
        kind = get_kind(r.kind, r.path)
        with rep.step("sampling frame", kind.frame_units(r)) as adv:
            p = make_plan(r, progress=lambda msg, i, n: adv(1) if i < n else None)
    Path(r.out_dir).mkdir(parents=True, exist_ok=True)
    write_frame(p, Path(r.out_dir) / "frame.parquet")
    for line in kind.plan_summary(p, Path(r.out_dir)):
        typer.echo(line)
