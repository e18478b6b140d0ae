"""Satellite / DEM rasters: scenes (one multiband file or one file per band), a common grid, patches."""
