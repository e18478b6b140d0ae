"""Embedded demo region and seeded synthetic writers (GeoTIFF, LAS/LAZ)."""

from .generator import DemoProject, DemoRegion, demo_region, ensure_demo, generate_demo
from .raster import ensure_dem_demo, ensure_satellite_demo, generate_dem_demo, generate_satellite_demo
from .synth import write_geotiff, write_las

__all__ = [
    "DemoProject",
    "DemoRegion",
    "demo_region",
    "ensure_dem_demo",
    "ensure_demo",
    "ensure_satellite_demo",
    "generate_dem_demo",
    "generate_demo",
    "generate_satellite_demo",
    "write_geotiff",
    "write_las",
]
