"""The dataset card (README.md) of a build folder, rendered from the ``cards/`` template.

Everything comes from the folder itself (manifest.json, recipe.yaml, index/frame, the diversity
report), so ``als-datasets report DIR`` re-renders the same card a build wrote.  The card's
numbers are the report's numbers: the tables are formatted from ``report/diversity.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

LABEL_TITLES = {"landcover": "Land cover", "slope_class": "Slope class", "stratum": "Stratum (land cover / slope)",
                "project": "Project", "continent": "Continent", "biome": "Biome"}


def fmt(x, nd=3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def diversity_markdown(div: dict) -> str:
    """Label entropies: sample vs eligible frame, and the label proportions.

    The sample's H is normalised by ln of the frame's label count (``K_frame``); a row without a
    frame falls back to ln K (labels present) and is marked with a footnote.
    """
    rows = ["| label | K | H (nats) | H / ln K frame | frame K | frame H | frame H / ln K |",
            "|---|---|---|---|---|---|---|"]
    parts = []
    fallback = False
    for col, st in div.get("labels", {}).items():
        fr = st.get("frame") or {}
        mark = ""
        if st.get("K_frame") is None:
            fallback, mark = True, " ¹"
        rows.append(f"| {LABEL_TITLES.get(col, col)} | {st['K']} | {fmt(st['entropy'])} | {fmt(st['normalised'])}{mark} | "
                    f"{fmt(fr.get('K'))} | {fmt(fr.get('entropy'))} | {fmt(fr.get('normalised'))} |")
        if col == "project":
            continue
        fp = fr.get("proportions") or {}
        lines = [f"| {k} | {n} | {fmt(st['proportions'][k])} | {fmt(fp.get(k))} |" for k, n in st["counts"].items()]
        lines += [f"| {k} | 0 | 0.000 | {fmt(v)} |" for k, v in fp.items() if k not in st["counts"]]
        parts.append(f"**{LABEL_TITLES.get(col, col)}**\n\n| label | samples | share | share in frame |\n"
                     f"|---|---|---|---|\n" + "\n".join(lines))
    if fallback:
        rows.append("\n¹ no frame to compare with: H / ln K, K the labels present in the sample.")
    return "\n".join(rows) + "\n\n" + "\n\n".join(parts)


def distribution_markdown(div: dict) -> str:
    d = div.get("distributions") or {}
    if not d:
        return ""
    rows = ["| per-sample value | mean | std | min | median | max |", "|---|---|---|---|---|---|"]
    for col, st in d.items():
        rows.append(f"| {col} | {fmt(st.get('mean'))} | {fmt(st.get('std'))} | {fmt(st.get('min'))} | "
                    f"{fmt(st.get('median'))} | {fmt(st.get('max'))} |")
    return "\n".join(rows)


def sources_markdown(recipe: dict, fallback: list[str]) -> str:
    """The card's "Source data": the recipe's ``sources:`` (name, licence, URL), else the kind's
    ``fallback`` lines (what the build read) and a note that the licences are not stated."""
    src = recipe.get("sources") or []
    if not src:
        return "\n".join(fallback) + "\n\nThe recipe does not state the sources' licences (`sources:` key)."
    return "\n".join(f"- {s.get('name')}: {s.get('license', 'licence not stated')}"
                     + (f" ({s['url']})" if s.get("url") else "") for s in src)


def card_splits(manifest: dict, recipe: dict) -> tuple[dict[str, dict], list[str]]:
    """Per split: examples, bytes per format and the Arrow ``num_bytes`` of the Parquet shards
    (for the card's ``dataset_info``); and the
    declared configs (``default`` = Parquet, ``webdataset``) of the formats the build wrote."""
    splits: dict[str, dict] = {}
    for e in manifest["shards"]:
        s = splits.setdefault(e["split"], {"num_examples": manifest["splits"].get(e["split"], 0),
                                           "parquet_bytes": 0, "webdataset_bytes": 0, "num_bytes": 0})
        s[f"{e['format']}_bytes"] += e["bytes"]
        if e["format"] == "parquet" and s.get("num_bytes") is not None:
            # the Arrow bytes datasets generates (recorded by the writer); unknown for older builds
            s["num_bytes"] = s["num_bytes"] + e["arrow_bytes"] if "arrow_bytes" in e else None
    for s in splits.values():
        if not s.get("num_bytes"):
            s.pop("num_bytes", None)
    formats = [f for f, k in (("default", "parquet"), ("webdataset", "webdataset"))
               if k in (recipe.get("output") or {}).get("formats", ["webdataset", "parquet"])]
    return splits, formats


def render_card(out_dir, div: dict, plots: list[Path], repo_id: str | None = None) -> tuple[dict, str]:
    """(card YAML dict, full README text), rendered by the build's kind (its ``manifest.json``)."""
    from als_datasets.registry import get_kind

    out = Path(out_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    return get_kind(manifest.get("kind"), out / "manifest.json").render_card(out, div, plots, repo_id)


def card_for_repo(out_dir, repo_id: str) -> str:
    """The card's text as published to ``repo_id``: rendered again from the folder's report
    (``report/diversity.json`` and the plots it has) with that id in the loading examples."""
    from als_datasets.report.plots import PLOT_FILES

    out = Path(out_dir)
    div = json.loads((out / "report" / "diversity.json").read_text())
    plots = [out / "report" / name for name in PLOT_FILES if (out / "report" / name).is_file()]
    _, text = render_card(out, div, plots, repo_id)
    return text if text.endswith("\n") else text + "\n"


def write_card(out_dir, div: dict, plots: list[Path], repo_id: str | None = None) -> Path:
    from als_datasets.shards.writer import atomic_write

    _, text = render_card(out_dir, div, plots, repo_id)
    text = text if text.endswith("\n") else text + "\n"
    path = Path(out_dir) / "README.md"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path
