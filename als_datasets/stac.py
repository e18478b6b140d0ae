"""STAC API searches for any kind: items by collection, place, date and properties; asset hrefs.

A kind that reads an archive through a STAC API (3DEP COPC point clouds, Sentinel-2 / Landsat
scenes) describes the search in its recipe section and calls :func:`search`; what comes back
is a list of plain :class:`StacItem` records, sorted by collection and id so that a build is
reproducible whatever order the API pages in.

* :func:`search` — ``pystac-client`` over the API's ``/search`` (POST, or GET where the API only
  conforms to that), paged through ``next`` links, with retries and backoff on 429/5xx and
  network errors; a failure is one :class:`~als_datasets.errors.InputError` line naming the
  API's URL without its query string (:func:`als_datasets.remote.redact`).
* :func:`asset_hrefs` — an item's assets filtered by key, media type or role.
* :func:`load_signer` / :func:`sign` — an optional URL-signing hook named in a recipe as a
  dotted callable (``package.module:function`` or ``package.module.function``) that takes an
  href and returns the href to fetch (e.g. ``planetary_computer.sign``).  Hrefs are kept and
  stored *unsigned*; they are signed only when opened, so a token never reaches a recipe,
  a manifest, a log or an error message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from als_datasets.errors import InputError
from als_datasets.remote import apply_signer, load_callable, redact

__all__ = ["StacItem", "search", "asset_hrefs", "load_signer", "sign", "COPC_MEDIA_TYPES"]

#: media types a COPC asset is published with (the pointcloud extension and common practice)
COPC_MEDIA_TYPES = ("application/vnd.laszip+copc", "application/octet-stream; profile=copc")
#: statuses retried with backoff (then reported)
RETRY_STATUS = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class StacItem:
    """One STAC item, reduced to what builds use (plain data, picklable)."""

    id: str
    collection: str
    geometry: dict | None
    bbox: tuple[float, ...] | None
    datetime: str | None
    properties: dict = field(default_factory=dict, compare=False, hash=False)
    #: asset key -> {"href", "type", "roles", ...} as the API gave it
    assets: dict = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_dict(cls, d: Mapping) -> StacItem:
        props = dict(d.get("properties") or {})
        bbox = d.get("bbox")
        return cls(id=str(d.get("id", "")), collection=str(d.get("collection") or ""),
                   geometry=d.get("geometry"), bbox=tuple(float(v) for v in bbox) if bbox else None,
                   datetime=props.get("datetime") or props.get("start_datetime"),
                   properties=props, assets={k: dict(v) for k, v in (d.get("assets") or {}).items()})

    def footprint(self):
        """The item's footprint as a shapely geometry (EPSG:4326): its geometry, else its bbox."""
        from shapely.geometry import box, shape

        if self.geometry:
            return shape(self.geometry)
        if self.bbox:
            b = self.bbox
            return box(b[0], b[1], b[3], b[4]) if len(b) == 6 else box(*b[:4])
        return None


def _retry(retries: int):
    from urllib3 import Retry

    return Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=0.5,
                 status_forcelist=RETRY_STATUS, allowed_methods=None, raise_on_status=False,
                 respect_retry_after_header=False)


def _why(e: BaseException) -> str:
    code = getattr(e, "status_code", None)
    if code:
        return f"HTTP {code}"
    text = " ".join(str(e).split())
    # requests' messages repeat the URL (with its query string): keep the exception's class only
    if "://" in text or "?" in text or not text:
        return type(e).__name__
    return f"{type(e).__name__}: {text[:160]}"


def search(api: str, *, collections: Sequence[str] | str | None = None, bbox: Sequence[float] | None = None,
           intersects: Mapping | None = None, datetime: str | None = None, query: Mapping | None = None,
           filter: Mapping | None = None, max_items: int | None = None, limit: int = 100,
           retries: int = 3, timeout: float = 60.0, headers: Mapping[str, str] | None = None) -> list[StacItem]:
    """Items of a STAC API search, sorted by (collection, id).

    ``bbox`` is ``[west, south, east, north]`` in degrees; ``intersects`` a GeoJSON geometry;
    ``datetime`` an RFC 3339 instant or ``start/end`` interval; ``query`` the STAC query extension
    (``{"eo:cloud_cover": {"lt": 20}}``); ``filter`` CQL2-JSON.  Raises a one-line
    :class:`InputError` naming the API (no query string) on any failure after ``retries``.
    """
    name = redact(api)
    try:
        from pystac_client import Client
        from pystac_client.stac_api_io import StacApiIO
    except ImportError:
        raise InputError(name, "STAC searches need pystac-client (pip install pystac-client)") from None
    if isinstance(collections, str):
        collections = [collections]
    io = StacApiIO(headers=dict(headers or {}), timeout=timeout, max_retries=_retry(retries))
    try:
        client = Client.open(api, stac_io=io)
        kwargs = dict(collections=list(collections) if collections else None, bbox=list(bbox) if bbox else None,
                      intersects=dict(intersects) if intersects else None, datetime=datetime,
                      query=dict(query) if query else None, filter=dict(filter) if filter else None,
                      max_items=max_items, limit=limit)
        found = client.search(**{k: v for k, v in kwargs.items() if v is not None})
        items = [StacItem.from_dict(d) for d in found.items_as_dicts()]
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - pystac-client, requests and urllib3 each raise their own
        raise InputError(name, f"STAC search failed after {retries} retries ({_why(e)})") from None
    items.sort(key=lambda it: (it.collection, it.id))
    return items


def asset_hrefs(item: StacItem, keys: Iterable[str] | None = None, media_types: Iterable[str] | None = None,
                roles: Iterable[str] | None = None) -> list[str]:
    """Hrefs of an item's assets, in asset-key order, that match every filter given
    (``keys``: asset keys; ``media_types``: ``type`` prefixes; ``roles``: any shared role)."""
    keys = None if keys is None else list(keys)
    types = None if media_types is None else [t.lower() for t in media_types]
    roles = None if roles is None else set(roles)
    out = []
    for key in (keys if keys is not None else sorted(item.assets)):
        a = item.assets.get(key)
        if not a or not a.get("href"):
            continue
        if types is not None and not any(str(a.get("type", "")).lower().startswith(t) for t in types):
            continue
        if roles is not None and not roles & set(a.get("roles") or ()):
            continue
        out.append(str(a["href"]))
    return out


def load_signer(dotted: str) -> Callable[[str], str]:
    """The callable a recipe names (``pkg.mod:func`` or ``pkg.mod.func``): href -> signed href."""
    return load_callable(dotted)


def sign(href: str, hook: str | None) -> str:
    """``href`` signed by the recipe's hook (unchanged without one).  The result may carry a
    token: open it, never print or store it (messages use :func:`als_datasets.remote.redact`).
    Builds do not call this: they register the hook with :func:`als_datasets.remote.register_signer`
    and the ranged reads sign each URL when they open it."""
    if not hook:
        return href
    return apply_signer(hook, href)
