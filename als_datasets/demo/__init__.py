"""Embedded demo region and seeded synthetic writers (GeoTIFF, LAS/LAZ)."""

from .generator import DemoProject, DemoRegion, demo_region, ensure_demo, generate_demo
from .synth import write_geotiff, write_las

__all__ = [
    "DemoProject",
    "DemoRegion",
    "demo_region",
    "ensure_demo",
    "generate_demo",
    "write_geotiff",
    "write_las",
]
