"""``als-datasets plan``: the sampling frame and the draw, before any point cloud is read."""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from .options import OUT, QUIET, RECIPE, SAMPLES, SEED, STRATEGY, check_strategy, resolve_recipe


@app.command()
def plan(
    recipe: Path = RECIPE,
    strategy: str = STRATEGY,
    out: Path = OUT,
    samples_per_project: int = SAMPLES,
    seed: int = SEED,
    quiet: bool = QUIET,
) -> None:
    """Write OUT/frame.parquet (every candidate tile: labels, eligibility, weight, draw rank)
    and list the point-cloud files the selected tiles need."""
    from ..build import route_tasks
    from ..plan import make_plan, write_frame
    from ..progress import Reporter

    with Reporter(enabled=not quiet) as rep:
        r = resolve_recipe(recipe, strategy, out, samples_per_project, seed, progress=None if quiet else rep.log)
        check_strategy(r)
        units = len(r.projects) if r.kind == "als" else len(r.scenes)
        with rep.step("sampling frame", units) as adv:
            p = make_plan(r, progress=lambda msg, i, n: adv(1) if i < n else None)
    Path(r.out_dir).mkdir(parents=True, exist_ok=True)
    write_frame(p, Path(r.out_dir) / "frame.parquet")
    f = p.frame
    if r.kind != "als":
        sel = p.selected
        reasons = f.loc[~f["eligible"], "reason"].value_counts().to_dict()
        typer.echo(f"{r.out_dir}/frame.parquet: {len(f)} candidate patches, {int(f['eligible'].sum())} eligible"
                   + (f" (dropped: {', '.join(f'{k} {v}' for k, v in reasons.items())})" if reasons else "")
                   + f", {len(sel)} selected ({r.strategy}, seed {r.seed}) in {len(r.scenes)} scene(s)")
        for cont, n in sel["continent"].fillna("none").value_counts().items():
            typer.echo(f"  {cont}: {n}")
        return
    needed = set(p.selected["tile_id"])
    files = sorted({str(t.info.path) for t in route_tasks(p, needed, Path(r.out_dir) / ".build" / "staging")})
    typer.echo(f"{r.out_dir}/frame.parquet: {len(f)} candidate tiles, {int(f['eligible'].sum())} eligible, "
               f"{len(needed)} selected ({r.strategy}, seed {r.seed}) in {len(r.projects)} project(s)")
    for proj, grp in p.selected.groupby("project", sort=False):
        strata = grp.groupby(["landcover", "slope_class"]).size()
        typer.echo(f"  {proj}: " + ", ".join(f"{a}/{b} {n}" for (a, b), n in strata.items()))
    if files:
        listing = Path(r.out_dir) / "pointclouds_needed.txt"
        listing.write_text("".join(f"{f}\n" for f in files))
        typer.echo(f"point-cloud files needed by the selected tiles: {len(files)} (listed in {listing})")
