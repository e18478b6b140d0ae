"""``kind: satellite``: multispectral patches with per-sample spectral entropy (DESIGN.md §7)."""

from als_datasets.kinds.satellite.kind import SatelliteKind
from als_datasets.registry import register

SATELLITE = register(SatelliteKind())

__all__ = ["SATELLITE", "SatelliteKind"]
