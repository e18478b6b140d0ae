"""The satellite card's own section: one row per scene used — sensor and processing level,
acquisition date(s), the product's scene cloud cover against this build's screen, the cloud method,
per-band scale / offset, and where the metadata came from (``_info.json`` ``scenes``)."""

from __future__ import annotations

import json
from pathlib import Path


def _g(x) -> str:
    return "–" if x is None else f"{x:g}"


def _lin(s, o) -> str:
    return f"× {_g(s)} {'−' if (o or 0) < 0 else '+'} {_g(abs(o or 0))}"


def scale_text(scale, offset) -> str:
    """``× 2.75e-05 + -0.2`` when every band shares one rescaling, else per band; "raw" without one."""
    pairs = [(s, o) for s, o in zip(scale or [], offset or []) if s is not None]
    if not pairs:
        return "none in the metadata (stored units)"
    if len(set(pairs)) == 1 and len(pairs) == len(scale):
        return _lin(*pairs[0])
    return "; ".join("raw" if s is None else _lin(s, o) for s, o in zip(scale, offset))


def screened(out: Path) -> dict[str, float]:
    """Per scene: mean ``cloud_fraction`` of its candidate patches with data (this build's screen)."""
    import pandas as pd

    try:
        f = pd.read_parquet(out / "frame.parquet", columns=["scene", "cloud_fraction", "nodata_fraction"])
    except (OSError, ValueError, KeyError):
        return {}
    f = f[f["nodata_fraction"] < 1.0]
    return f.groupby("scene")["cloud_fraction"].mean().to_dict()


def scenes_markdown(out) -> str:
    out = Path(out)
    try:
        scenes = json.loads((out / "_info.json").read_text()).get("scenes") or {}
    except (OSError, ValueError):
        return ""
    if not scenes:
        return ""
    screen = screened(out)
    lines = ["", "", "Scenes (product metadata as shipped with each scene; cloud cover from the product against this "
             "build's screen, the mean cloud fraction of the scene's candidate patches):", "",
             "| scene | sensor, level | date(s) | product cloud cover | screened cloud | cloud method | "
             "scale / offset (value = DN × scale + offset) | metadata |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in sorted(scenes.items()):
        cc = s.get("scene_cloud_cover")
        sc = screen.get(name)
        lines.append(
            f"| {name} | {s.get('sensor') or '–'}, {s.get('processing_level') or '–'} | "
            f"{', '.join(s.get('dates') or []) or 'unknown'} | {'–' if cc is None else f'{cc:.2f} %'} | "
            f"{'–' if sc is None or sc != sc else f'{100 * sc:.2f} %'} | {s.get('cloud_method')} | "
            f"{scale_text(s.get('band_scale'), s.get('band_offset'))} | "
            f"{s.get('metadata_source')}{' (' + s['metadata_file'] + ')' if s.get('metadata_file') else ''} |")
    notes = [f"- {name}: {w}" for name, s in sorted(scenes.items()) for w in s.get("warnings") or []]
    if notes:
        lines += ["", "Warnings about the scenes:", "", *notes]
    return "\n".join(lines) + "\n"
