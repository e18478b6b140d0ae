"""``als-datasets report``: diversity statistics, plots, Croissant and card; compares builds."""

from __future__ import annotations

from pathlib import Path

import typer

from als_datasets.cli.options import DEBUG
from als_datasets.cli.root import app


@app.command()
def report(
    dirs: list[Path] = typer.Argument(..., metavar="DIR...", help="One or more build folders."),
    out: Path = typer.Option(None, "--out", "-o", help="Folder for the comparison of several builds "
                                                       "(default: report-comparison)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the PNG plots."),
    repo_id: str = typer.Option(None, "--repo-id", help="ORG/NAME used in the card's loading examples."),
    debug: bool = DEBUG,
) -> None:
    """(Re)write each build's report/diversity.json, plots, croissant.json and README.md card, and
    print the diversity; with several folders, a side-by-side comparison with the differences."""
    from als_datasets.errors import InputError
    from als_datasets.report.folder import compare_builds, write_report

    for d in dirs:
        if not (d / "manifest.json").is_file():
            raise InputError(d, "not a finished build (no manifest.json)")
    for d in dirs:
        div = write_report(d, plots=plots, repo_id=repo_id)
        ent = ", ".join(f"{k} H={v['entropy']:.3f} (K={v['K']})" for k, v in div["labels"].items())
        typer.echo(f"{d}: {div['num_samples']} samples; {ent}")
    if len(dirs) > 1:
        _, text = compare_builds(dirs, out or Path("report-comparison"))
        typer.echo(text)
        typer.echo(f"comparison written to {out or Path('report-comparison')}")
