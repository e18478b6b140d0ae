"""The core's STAC client (als_datasets.stac) against the loopback STAC API (tests/stac_server.py)."""

from __future__ import annotations

import pytest
from stac_server import StacServer, make_item

from als_datasets import stac
from als_datasets.errors import InputError

COPC = "application/vnd.laszip+copc"


def _items():
    out = []
    for i in range(7):
        w = -100.0 + i
        out.append(make_item(
            f"tile-{i}", "3dep-lidar-copc", (w, 40.0, w + 1.0, 41.0),
            datetime=f"201{i}-06-01T00:00:00Z", **{"eo:cloud_cover": 10 * i, "3dep:project": f"P{i % 2}"},
            assets={"data": {"href": f"https://example.test/copc/tile-{i}.copc.laz", "type": COPC,
                             "roles": ["data"]},
                    "thumbnail": {"href": f"https://example.test/tile-{i}.png", "type": "image/png",
                                  "roles": ["thumbnail"]}}))
    out.append(make_item("scene-0", "sentinel-2-l2a", (-99.5, 40.2, -98.5, 40.8), **{"eo:cloud_cover": 5}))
    return out


@pytest.fixture(scope="module")
def api():
    with StacServer(_items(), page_size=2) as srv:
        yield srv


def test_search_pages_through_next_links_and_sorts(api):
    before = api.requests
    found = stac.search(api.url, collections=["3dep-lidar-copc"])
    assert [it.id for it in found] == [f"tile-{i}" for i in range(7)]
    # 7 items in pages of 2: 4 search pages (plus the landing page)
    assert sum("search" in p or p == "/search" for p in api.paths[before:]) >= 4
    assert all(it.collection == "3dep-lidar-copc" for it in found)


def test_search_by_bbox_intersects_datetime_query_filter(api):
    got = stac.search(api.url, collections="3dep-lidar-copc", bbox=[-97.5, 40.2, -96.5, 40.5])
    assert [it.id for it in got] == ["tile-2", "tile-3"]
    poly = {"type": "Polygon", "coordinates": [[[-99.5, 40.1], [-99.2, 40.1], [-99.2, 40.3], [-99.5, 40.3],
                                                [-99.5, 40.1]]]}
    got = stac.search(api.url, intersects=poly)
    assert sorted((it.collection, it.id) for it in got) == [("3dep-lidar-copc", "tile-0"), ("sentinel-2-l2a", "scene-0")]
    got = stac.search(api.url, collections=["3dep-lidar-copc"], datetime="2012-01-01T00:00:00Z/2014-12-31T00:00:00Z")
    assert [it.id for it in got] == ["tile-2", "tile-3", "tile-4"]
    got = stac.search(api.url, collections=["3dep-lidar-copc"], query={"eo:cloud_cover": {"lt": 25}})
    assert [it.id for it in got] == ["tile-0", "tile-1", "tile-2"]
    flt = {"op": "and", "args": [{"op": "=", "args": [{"property": "3dep:project"}, "P1"]},
                                 {"op": ">=", "args": [{"property": "eo:cloud_cover"}, 30]}]}
    got = stac.search(api.url, collections=["3dep-lidar-copc"], filter=flt)
    assert [it.id for it in got] == ["tile-3", "tile-5"]
    assert stac.search(api.url, collections=["3dep-lidar-copc"], max_items=3, limit=2)[-1].id == "tile-2"


def test_items_and_asset_hrefs(api):
    it = stac.search(api.url, collections=["3dep-lidar-copc"], bbox=[-99.9, 40.1, -99.8, 40.2])[0]
    assert it.id == "tile-0" and it.datetime.startswith("2010-06-01")
    assert it.footprint().bounds == (-100.0, 40.0, -99.0, 41.0)
    assert stac.asset_hrefs(it, media_types=stac.COPC_MEDIA_TYPES) == ["https://example.test/copc/tile-0.copc.laz"]
    assert stac.asset_hrefs(it, roles=["thumbnail"]) == ["https://example.test/tile-0.png"]
    assert stac.asset_hrefs(it, keys=["data", "missing"]) == ["https://example.test/copc/tile-0.copc.laz"]
    assert len(stac.asset_hrefs(it)) == 2


def test_retries_5xx_then_succeeds(api):
    api.fail_next(2, 503)
    assert len(stac.search(api.url, collections=["3dep-lidar-copc"], retries=3)) == 7


def test_persistent_failure_is_one_line_without_token(api):
    api.fail_next(50, 502)
    try:
        with pytest.raises(InputError) as ei:
            stac.search(api.url + "?token=SECRET-TOKEN", collections=["x"], retries=1)
    finally:
        api.fail_next(0)
    msg = str(ei.value)
    assert "\n" not in msg and "SECRET" not in msg and "127.0.0.1" in msg and "STAC search failed" in msg


def test_unreachable_api_is_one_line():
    with StacServer([]) as srv:
        url = srv.url
    with pytest.raises(InputError) as ei:
        stac.search(url + "?sig=SECRET", retries=0, timeout=2)
    assert "SECRET" not in str(ei.value) and "\n" not in str(ei.value)


def test_signing_hook_signs_late_and_errors_stay_clean():
    href = "https://example.test/a.copc.laz"
    signed = stac.sign(href, "stac_server:sign_for_tests")
    assert signed.startswith(href + "?") and "SECRET-TOKEN" in signed
    assert stac.sign(href, "stac_server.sign_for_tests") == signed
    assert stac.sign(href, None) == href
    with pytest.raises(InputError, match="cannot import"):
        stac.sign(href, "no_such_module_x:sign")
    with pytest.raises(InputError, match="has no"):
        stac.sign(href, "stac_server:nope")
    with pytest.raises(InputError, match="not a dotted name"):
        stac.load_signer("justaname")


def test_registered_signer_signs_only_its_prefix_when_fetched(monkeypatch):
    from als_datasets import remote

    monkeypatch.setattr(remote, "_SIGNERS", {})
    monkeypatch.setenv(remote.ENV_SIGNERS, "{}")  # restored (removed) after the test
    remote.register_signer("https://blob.example.test/", "stac_server:sign_for_tests")
    url = "https://blob.example.test/copc/a.copc.laz"
    assert "SECRET-TOKEN" in remote.signed(url) and remote.redact(remote.signed(url)) == url
    assert remote.signed("https://other.example.test/a.laz") == "https://other.example.test/a.laz"
    assert remote.ENV_SIGNERS in __import__("os").environ  # worker processes inherit it
    with pytest.raises(InputError, match="cannot import"):
        remote.register_signer("https://x.test/", "no_such_module_x:sign")
