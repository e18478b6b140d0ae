"""A loopback STAC API for the tests: landing page, conformance, collections, ``/search``.

It answers the subset of the STAC API that ``pystac-client`` uses: ``GET /`` (landing page with
``conformsTo`` and links), ``GET /conformance``, ``GET /collections``, ``GET /collections/{id}``,
``GET /collections/{id}/items``, and ``GET``/``POST /search`` with ``collections``, ``ids``,
``bbox``, ``intersects``, ``datetime``, ``query`` (the query extension: ``eq neq lt lte gt gte
in``), a CQL2-JSON ``filter`` (``and or not = <> < <= > >= s_intersects``) and ``limit``, paged
through ``next`` links (a ``token`` parameter, in the body for POST).  Items come from fixture
dicts.  Faults for the retry tests: ``fail_next(n, status)`` answers the next ``n`` requests with
``status``; ``requests`` counts what it was asked (``paths`` keeps them).

    with StacServer(items, collections=["3dep-lidar-copc"]) as api:
        found = stac.search(api.url, collections=["3dep-lidar-copc"], bbox=[...])
"""

from __future__ import annotations

import json
import operator
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/item-search#filter",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
]
_CMP = {"eq": operator.eq, "neq": operator.ne, "lt": operator.lt, "lte": operator.le, "gt": operator.gt,
        "gte": operator.ge, "=": operator.eq, "<>": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge}


def _geom(g):
    from shapely.geometry import shape

    return shape(g)


def _item_geom(item):
    from shapely.geometry import box

    if item.get("geometry"):
        return _geom(item["geometry"])
    return box(*item["bbox"][:4])


def _parse_dt(text: str | None):
    if not text or text == "..":
        return None
    return text.replace("Z", "+00:00")


def _in_datetime(item, interval: str) -> bool:
    from datetime import datetime

    props = item.get("properties", {})
    value = props.get("datetime") or props.get("start_datetime")
    if value is None:
        return False
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    a, _, b = interval.partition("/")
    if not _:
        return t == datetime.fromisoformat(_parse_dt(a))
    lo, hi = _parse_dt(a), _parse_dt(b)
    return (lo is None or t >= datetime.fromisoformat(lo)) and (hi is None or t <= datetime.fromisoformat(hi))


def _cql(item, expr) -> bool:
    op, args = expr["op"].lower(), expr.get("args", [])
    if op == "and":
        return all(_cql(item, a) for a in args)
    if op == "or":
        return any(_cql(item, a) for a in args)
    if op == "not":
        return not _cql(item, args[0])
    if op == "s_intersects":
        return _item_geom(item).intersects(_geom(args[1]))

    def value(a):
        if isinstance(a, dict) and "property" in a:
            p = a["property"]
            return item.get(p) if p in ("id", "collection") else item.get("properties", {}).get(p)
        return a

    left, right = value(args[0]), value(args[1])
    return left is not None and _CMP[op](left, right)


class _Handler(BaseHTTPRequestHandler):
    server: StacServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/geo+json" if "features" in obj else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _fault(self) -> bool:
        srv = self.server
        with srv.lock:
            srv.requests += 1
            srv.paths.append(self.path)
            if srv._fail_left > 0:
                srv._fail_left -= 1
                status = srv._fail_status
            else:
                status = 0
        if status:
            self._json(status, {"code": "ServerError", "description": "injected fault"})
        return bool(status)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self._fault():
            return
        u = urllib.parse.urlsplit(self.path)
        parts = [p for p in u.path.split("/") if p]
        srv = self.server
        if not parts:
            self._json(200, srv.landing())
        elif parts == ["conformance"]:
            self._json(200, {"conformsTo": CONFORMANCE})
        elif parts == ["collections"]:
            self._json(200, {"collections": [srv.collection(c) for c in srv.collections], "links": []})
        elif len(parts) == 2 and parts[0] == "collections" and parts[1] in srv.collections:
            self._json(200, srv.collection(parts[1]))
        elif len(parts) == 3 and parts[0] == "collections" and parts[2] == "items":
            q = dict(urllib.parse.parse_qsl(u.query))
            q["collections"] = parts[1]
            self._json(200, srv.page(q, "GET", f"/collections/{parts[1]}/items"))
        elif parts == ["search"]:
            self._json(200, srv.page(dict(urllib.parse.parse_qsl(u.query)), "GET"))
        else:
            self._json(404, {"code": "NotFound", "description": self.path})

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        if self._fault():
            return
        if urllib.parse.urlsplit(self.path).path.rstrip("/") != "/search":
            self._json(404, {"code": "NotFound", "description": self.path})
            return
        self._json(200, self.server.page(body, "POST"))


class StacServer(ThreadingHTTPServer):
    """``with StacServer(items) as api: api.url``; items are STAC Item dicts (``collection`` set)."""

    daemon_threads = True

    def __init__(self, items: list[dict], collections: list[str] | None = None, page_size: int = 2):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.items = list(items)
        self.collections = collections or sorted({it["collection"] for it in self.items})
        self.page_size = page_size
        self.lock = threading.Lock()
        self.requests, self.paths = 0, []
        self._fail_left, self._fail_status = 0, 503
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def fail_next(self, n: int, status: int = 503) -> None:
        with self.lock:
            self._fail_left, self._fail_status = n, status

    def landing(self) -> dict:
        base = self.url.rstrip("/")
        return {
            "type": "Catalog", "stac_version": "1.0.0", "id": "test-stac", "description": "loopback STAC API",
            "conformsTo": CONFORMANCE,
            "links": [
                {"rel": "self", "href": base + "/", "type": "application/json"},
                {"rel": "root", "href": base + "/", "type": "application/json"},
                {"rel": "conformance", "href": base + "/conformance", "type": "application/json"},
                {"rel": "data", "href": base + "/collections", "type": "application/json"},
                {"rel": "search", "href": base + "/search", "type": "application/geo+json", "method": "GET"},
                {"rel": "search", "href": base + "/search", "type": "application/geo+json", "method": "POST"},
            ] + [{"rel": "child", "href": f"{base}/collections/{c}", "type": "application/json"}
                 for c in self.collections],
        }

    def collection(self, cid: str) -> dict:
        base = self.url.rstrip("/")
        return {
            "type": "Collection", "stac_version": "1.0.0", "id": cid, "description": cid, "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
            "links": [{"rel": "self", "href": f"{base}/collections/{cid}"},
                      {"rel": "root", "href": base + "/"},
                      {"rel": "items", "href": f"{base}/collections/{cid}/items"}],
        }

    def matches(self, q: dict) -> list[dict]:
        from shapely.geometry import box

        cols = q.get("collections")
        if isinstance(cols, str):
            cols = cols.split(",")
        ids = q.get("ids")
        if isinstance(ids, str):
            ids = ids.split(",")
        bbox = q.get("bbox")
        if isinstance(bbox, str):
            bbox = [float(v) for v in bbox.split(",")]
        inter = q.get("intersects")
        if isinstance(inter, str):
            inter = json.loads(inter)
        where = box(*bbox[:2], *bbox[-2:]) if bbox and len(bbox) == 4 else (box(bbox[0], bbox[1], bbox[3], bbox[4])
                                                                           if bbox else None)
        if inter:
            where = _geom(inter) if where is None else where.intersection(_geom(inter))
        query = q.get("query")
        if isinstance(query, str):
            query = json.loads(query)
        flt = q.get("filter")
        if isinstance(flt, str):
            flt = json.loads(flt)
        out = []
        for it in self.items:
            if cols and it.get("collection") not in cols:
                continue
            if ids and it.get("id") not in ids:
                continue
            if where is not None and not _item_geom(it).intersects(where):
                continue
            if q.get("datetime") and not _in_datetime(it, q["datetime"]):
                continue
            if query and not all(
                    (v := it.get("properties", {}).get(prop)) is not None
                    and all((v in arg) if op == "in" else _CMP[op](v, arg) for op, arg in conds.items())
                    for prop, conds in query.items()):
                continue
            if flt and not _cql(it, flt):
                continue
            out.append(it)
        return out

    def page(self, q: dict, method: str, path: str = "/search") -> dict:
        found = self.matches(q)
        limit = min(int(q.get("limit") or self.page_size), self.page_size)
        start = int(q.get("token") or 0)
        feats = found[start:start + limit]
        base = self.url.rstrip("/") + path
        links = []
        if start + limit < len(found):
            nxt = start + limit
            if method == "POST":
                links.append({"rel": "next", "href": base, "method": "POST", "merge": False,
                              "body": {**q, "token": str(nxt)}, "type": "application/geo+json"})
            else:
                params = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in q.items()}
                params["token"] = str(nxt)
                links.append({"rel": "next", "href": base + "?" + urllib.parse.urlencode(params),
                              "type": "application/geo+json"})
        return {"type": "FeatureCollection", "features": feats, "links": links,
                "numberMatched": len(found), "numberReturned": len(feats)}

    def __enter__(self) -> StacServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


def make_item(item_id: str, collection: str, bounds: tuple[float, float, float, float], *,
              datetime: str = "2020-06-01T00:00:00Z", assets: dict | None = None, **properties) -> dict:
    """A STAC Item dict with a rectangular footprint in degrees (west, south, east, north)."""
    w, s, e, n = bounds
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "bbox": [w, s, e, n], "properties": {"datetime": datetime, **properties},
        "assets": assets or {}, "links": [],
    }


SIGNED: list[str] = []  # the hrefs sign_for_tests signed (in this process)


def sign_for_tests(href: str) -> str:
    """A signing hook for the tests (``stac_server:sign_for_tests``): appends a fake token."""
    SIGNED.append(href)
    sep = "&" if "?" in href else "?"
    return f"{href}{sep}st=2020&sig=SECRET-TOKEN"
