"""A build folder's report: ``report/diversity.json``, the plots, ``croissant.json`` and the card.

Computed from the folder's index, frame, manifest and recipe — the shards are not re-read —
so ``als-datasets report DIR`` can refresh an existing build, and every ``build`` calls it.
"""

from __future__ import annotations

import json
from pathlib import Path

COMPARE_HEAD = ["label", "strategy", "samples_per_project", "num_samples"]


def compare_columns() -> list[str]:
    """The comparison's columns: the common ones, then every registered kind's, in kind order."""
    from als_datasets.registry import get_kind, kind_names

    cols = list(COMPARE_HEAD)
    for name in kind_names():
        cols += [c for c in get_kind(name).compare_columns if c not in cols]
    return cols


def write_report(out_dir, plots: bool = True, croissant: bool = True, repo_id: str | None = None) -> dict:
    """(Re)write the report files and the card of one build folder; returns the diversity dict."""
    from als_datasets.dataset.croissant import write_croissant
    from als_datasets.report.card import write_card
    from als_datasets.report.diversity import write_diversity

    out = Path(out_dir)
    div = write_diversity(out)
    pngs: list[Path] = []
    if plots:
        from als_datasets.report.plots import write_plots

        pngs = write_plots(out)
    write_card(out, div, pngs, repo_id=repo_id)
    if croissant:  # after the card: it reads the card's licence
        write_croissant(out)
    return div


def compare_builds(dirs: list[Path], out_dir: Path | None = None) -> tuple[object, str]:
    """Side-by-side table of several builds (their diversity reports) and its differences from
    the first; written to ``out_dir`` (comparison.md, comparison.json, comparison.png) if given."""
    from als_datasets.report.compare import compare_table, differences, format_markdown, format_table
    from als_datasets.report.diversity import load_diversity

    reports = [load_diversity(d) for d in dirs]
    labels = [Path(d).name for d in dirs]
    table = compare_table(reports, labels)
    cols = [c for c in compare_columns()  # columns no build has (other kinds') are left out
            if c in table.columns and (c in ("label", "strategy") or table[c].notna().any())]
    diff = differences(table, 0)
    dcols = [c for c in cols if c in diff.columns]
    text = (format_table(table, cols) + f"\n\ndifference from {labels[0]}:\n" + format_table(diff, dcols))
    if out_dir is not None:
        from als_datasets.report.plots import plot_comparison
        from als_datasets.shards.writer import atomic_write

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        md = ("# Comparison of builds\n\n" + format_markdown(table, cols) + f"\n\n## Difference from {labels[0]}\n\n"
              + format_markdown(diff, dcols) + "\n")
        atomic_write(out / "comparison.md", lambda f: f.write(md.encode()))
        js = json.dumps({"builds": [str(d) for d in dirs], "table": json.loads(table.to_json(orient="records"))},
                        indent=2, sort_keys=True) + "\n"
        atomic_write(out / "comparison.json", lambda f: f.write(js.encode()))
        for metric in ("stratum_entropy", "continent_entropy", "spectral_entropy_mean"):
            if metric in table.columns and table[metric].notna().any():
                plot_comparison(table, out / f"comparison_{metric}.png", metric=metric)
    return table, text
