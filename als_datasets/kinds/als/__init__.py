"""``kind: als``: airborne LiDAR point-cloud tiles (DESIGN.md §5, §6).

The pipeline of this kind, in the order a build runs it: :mod:`.recipe` (projects, land cover,
DEM), :mod:`.sources` (point-cloud headers, local and remote COPC; rasters), :mod:`.frame` (the
25 m sampling grid, labels, eligible tiles), :mod:`.strategies` (geospatial / random draws),
:mod:`.plan`, :mod:`.extract` (points routed to tiles, cleaned), :mod:`.tasks` and :mod:`.build`
(shard tasks), :mod:`.card`.
"""

from als_datasets.kinds.als.kind import AlsKind
from als_datasets.registry import register

ALS = register(AlsKind())

__all__ = ["ALS", "AlsKind"]
