"""The kinds: one package per family of inputs and samples, each registering a
:class:`~als_datasets.registry.Kind` when imported (the registry imports every package here).

- :mod:`.als` — airborne LiDAR point-cloud tiles (geospatial / random sampling, arXiv 2501.05095)
- :mod:`.satellite` — multispectral patches (*Pretrain Where?*, arXiv 2604.21104)
- :mod:`.dem` — elevation patches (DEM MAE, arXiv 2309.03367)
- :mod:`.raster` — the machinery the two raster kinds share (scenes, frame, draw, shard task,
  card); it registers nothing itself.
"""
