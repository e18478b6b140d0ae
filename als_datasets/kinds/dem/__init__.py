"""``kind: dem``: one-band elevation patches, NaN where the DEM has no data (DESIGN.md §1, §7)."""

from als_datasets.kinds.dem.kind import DemKind
from als_datasets.registry import register

DEM = register(DemKind())

__all__ = ["DEM", "DemKind"]
