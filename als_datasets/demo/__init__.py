"""Embedded demo region and seeded synthetic writers (GeoTIFF, LAS/LAZ)."""

from .als.generate import ensure_demo, generate_demo
from .als.region import DemoProject, DemoRegion, demo_region
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
