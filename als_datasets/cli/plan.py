"""``als-datasets plan``: the sampling frame and the draw, before any point cloud is read."""

from __future__ import annotations

from pathlib import Path

import typer

from als_datasets.cli.options import (
    DEBUG,
    OUT,
    OVERWRITE,
    QUIET,
    RECIPE,
    SAMPLES,
    SEED,
    STRATEGY,
    check_out_dir,
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
    debug: bool = DEBUG,
    overwrite: bool = OVERWRITE,
) -> None:
    """Write OUT/frame.parquet (every candidate sample: labels, eligibility, weight, draw rank)
    and summarise the draw (ALS: and list the point-cloud files the selected tiles need).

    The folder is the build's: the same rules as ``build`` (a new or empty folder, or this
    recipe's own build), and a later ``build`` of the same recipe continues from it."""
    from als_datasets.dataset.outdir import WORK_DIR, claim_out_dir
    from als_datasets.plan import make_plan, write_frame
    from als_datasets.progress import Reporter
    from als_datasets.registry import get_kind

    with Reporter(enabled=not quiet) as rep:
        r = resolve_recipe(recipe, strategy, out, samples_per_project, seed, progress=None if quiet else rep.log)
        mode = check_out_dir(r, overwrite)
        kind = get_kind(r.kind, r.path)
        with rep.step("sampling frame", kind.frame_units(r)) as adv:
            p = make_plan(r, progress=lambda msg, i, n: adv(1) if i < n else None)
    if mode != "same" or (Path(r.out_dir) / WORK_DIR).exists():
        # fresh or replaced: the folder becomes this recipe's (unfinished) build; a finished build
        # of the same recipe already holds this very frame.parquet
        claim_out_dir(r, mode)
    write_frame(p, Path(r.out_dir) / "frame.parquet")
    for line in kind.plan_summary(p, Path(r.out_dir)):
        typer.echo(line)
    for line in kind.shortfall(p):  # a draw that falls short says so, and why
        typer.echo(f"note: {line}", err=True)
