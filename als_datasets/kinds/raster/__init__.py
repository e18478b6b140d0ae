"""What the two raster kinds (:mod:`..satellite`, :mod:`..dem`) share: scenes (one multiband file
or one file per band) on a common grid, the patch frame, labels, draws, shard task and card, and
:class:`~.kind.RasterKind`, the base of their kind objects.  It registers no kind itself."""
