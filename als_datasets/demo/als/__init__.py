"""The embedded demo region: a deterministic synthetic ALS region generated on first use.

Three "LiDAR projects" near the Columbia River (Camas WA, Troutdale OR, Corbett OR) with
analytic terrain (flat valley floors, rolling hills, steep ridges and bluffs), an NLCD-coded
land-cover raster (EPSG:5070, 30 m), a 1/3 arc-second DEM (EPSG:4269) and LAZ point clouds
(ground, buildings, multi-return vegetation, water, noise) delivered as several tiles per project.
Nothing is real except the rough location: terrain, towns and forests are made up.

Everything is a pure function of the seed; all coordinate conversions are NAD83 -> NAD83
projections (no datum grids), so the same seed gives byte-identical files.

Modules, each importing only from the ones listed before it:

- :mod:`.region`: the projects, the analytic landscape (terrain and land-cover rules), outlines, bounds
- :mod:`.rasters`: the land-cover and DEM rasters sampled from it, and the land-cover lookup
- :mod:`.points`: the per-tile point synthesis (buildings, trees, pulses and returns)
- :mod:`.generate`: the demo folder (:func:`~.generate.generate_demo`) and its cache
  (:func:`~.generate.ensure_demo`)
"""
