"""What a model needs to know about a dataset folder written by ``als-datasets build``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError


@dataclass(frozen=True)
class DatasetInfo:
    """A build folder as the harness sees it.

    ``kind``: ``als`` | ``satellite`` | ``dem`` (``manifest.json``); ``splits``: ``_info.json``'s
    splits (``num_samples``, ``filenames`` relative to ``root``, ``shard_lengths``); ``bands``: for
    raster kinds, the dataset's band list in order (common names such as ``blue``, ``nir``,
    ``swir16``, or ``elevation``; ``_info.json`` ``bands``); ``patch_size_px`` for raster kinds;
    ``band_stats``: per sensor and band, the pooled mean and std of the train split's valid pixels
    (satellite builds), for normalising with dataset statistics as SatMAE does.
    """

    root: str
    kind: str
    splits: dict = field(default_factory=dict)
    bands: tuple[str, ...] = ()
    patch_size_px: int | None = None
    name: str = ""
    band_stats: dict = field(default_factory=dict)  # {sensor: {band: {"mean", "std"}}} of the train split

    @classmethod
    def from_folder(cls, root) -> DatasetInfo:
        root = Path(root)
        info_p, man_p = root / "_info.json", root / "manifest.json"
        for p in (info_p, man_p):
            if not p.is_file():
                raise InputError(p, "missing: not a finished als-datasets build")
        try:
            info = json.loads(info_p.read_text())
            manifest = json.loads(man_p.read_text())
        except ValueError as exc:
            raise InputError(info_p, f"not valid JSON: {exc}") from None
        return cls(root=str(root), kind=str(manifest.get("kind", "als")), splits=dict(info.get("splits", {})),
                   bands=tuple(info.get("bands", ())), patch_size_px=info.get("patch_size_px"),
                   name=str(info.get("name", root.name)), band_stats=dict(info.get("band_stats") or {}))

    def run_dir(self, what: str) -> Path:
        """Default run folder, ``runs/<build folder>-<what>`` under the current directory: named
        after the build's *folder* (as given to ``--data``), not the dataset's name, so that
        builds of one recipe with other strategies or seeds (``out/demo-geospatial``,
        ``out/demo-random``) never share a run."""
        return Path("runs") / f"{Path(self.root).resolve().name}-{what}"

    def num_samples(self, split: str = "train") -> int:
        if split not in self.splits:
            raise InputError(Path(self.root) / "_info.json", f"no split {split!r} (has {sorted(self.splits)})")
        return int(self.splits[split]["num_samples"])

    def shard_paths(self, split: str = "train") -> list[str]:
        self.num_samples(split)
        return [str(Path(self.root) / f) for f in self.splits[split]["filenames"]]
