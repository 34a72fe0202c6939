"""The web page and the audio route through a real `indexer serve` process, over the indexed
test catalog, in a real browser (headless Chromium from Debian, driven by selenium)."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.indexer.api.browser import chromium, need_chromium
from tests.indexer.api.test_api import KEY, Server, env_for, serving
from tests.indexer.conftest import SearchCatalog

PAGE_FILES = ("/", "/static/app.js", "/static/app.css", "/static/icon.svg")
FOCUSABLE = (
    "a[href], button, input, select, textarea, summary, audio[controls], "
    "[tabindex]:not([tabindex='-1'])"
)


@pytest.fixture(scope="module")
def server(search_catalog: SearchCatalog) -> Iterator[Server]:
    env = env_for(search_catalog.settings.data_dir, INDEXER_API_KEY=KEY)
    with serving(env) as srv:
        yield srv


def fetch(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


# ---- the browser --------------------------------------------------------------------------------


def until(driver: Any, check: Callable[[Any], Any], timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(check)


def dialog_open(driver: Any) -> bool:
    return bool(driver.execute_script("return document.getElementById('key-dialog').open"))


def give_key(driver: Any, key: str) -> None:
    until(driver, dialog_open)
    field = driver.find_element("id", "key")
    field.clear()
    field.send_keys(key + "\n")


def hits(driver: Any) -> list[Any]:
    return list(driver.find_elements("css selector", "#hits > li[data-track-id]"))


def hit_ids(driver: Any) -> list[str]:
    return [li.get_attribute("data-track-id") for li in hits(driver)]


def wait_for_hits(driver: Any, first: str | None = None) -> list[str]:
    def ready(d: Any) -> list[str] | None:
        ids = hit_ids(d)
        return ids if ids and (first is None or ids[0] == first) else None

    result: list[str] = until(driver, ready)
    return result


def audio_state(driver: Any) -> dict[str, Any]:
    state: dict[str, Any] = driver.execute_script(
        "const a = document.getElementById('audio');"
        "return {time: a.currentTime, ready: a.readyState, error: a.error && a.error.code,"
        " src: a.currentSrc || a.src, track: a.dataset.trackId || null};"
    )
    return state


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    """One Chromium for the module, with the key given once."""
    need_chromium()
    with chromium() as driver:
        driver.get(server.url + "/")
        give_key(driver, KEY)
        until(driver, lambda d: not dialog_open(d))
        yield driver


def search_for(driver: Any, server: Server, text: str) -> list[str]:
    driver.get(server.url + "/")
    box = until(driver, lambda d: d.find_element("id", "q"))
    box.send_keys(text + "\n")
    return wait_for_hits(driver)


def test_a_search_shows_the_described_song_with_its_timeline(
    browser: Any, server: Server, search_catalog: SearchCatalog
) -> None:
    song = search_catalog.songs[5]
    ids = search_for(browser, server, song["queries"][0])
    assert ids[0] == search_catalog.ids["song5"]
    assert len(ids) == 11  # the whole catalog: 8 songs, 2 tagged files, a duplicate
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(browser.current_url).query)
    assert query["q"] == [song["queries"][0]]  # the search is a link
    first = hits(browser)[0]
    assert first.find_element("css selector", ".title").text == Path(song["audio"]).stem
    segments = first.find_elements("css selector", ".timeline .segment")
    assert 1 <= len(segments) <= 3
    strip = first.find_element("css selector", ".strip").value_of_css_property("background-image")
    assert strip.startswith("linear-gradient")
    # the shading follows the clips: a colour band (two stops) for each of the track's clips
    status, track = server.call("GET", f"/tracks/{ids[0]}")
    assert status == 200 and len(re.findall(r"rgba?\(", strip)) == 2 * track["n_clips"]
    # segments sit where the API says they are, along the bar of the track's duration
    _, body = server.call("POST", "/search", {"query": song["queries"][0], "limit": 1})
    api_first = body["hits"][0]["segments"][0]
    bar = first.find_element("css selector", ".timeline").rect
    box = segments[0].rect
    expected = bar["x"] + bar["width"] * api_first["start"] / body["hits"][0]["duration"]
    assert abs(box["x"] - expected) <= 2 + 1  # the bar's 1 px border, rounding
    assert float(segments[0].get_attribute("data-start")) == api_first["start"]


def test_a_segment_click_plays_the_track_from_the_segment_start(
    browser: Any, server: Server, search_catalog: SearchCatalog
) -> None:
    search_for(browser, server, search_catalog.songs[3]["queries"][0])
    hit = hits(browser)[0]
    segment = hit.find_elements("css selector", ".segment")[-1]
    start_at = float(segment.get_attribute("data-start"))
    segment.click()
    state = until(browser, lambda d: (s := audio_state(d))["ready"] >= 1 and s)
    assert state["error"] is None
    assert state["src"].endswith(f"/tracks/{hit.get_attribute('data-track-id')}/audio")
    assert start_at <= state["time"] < start_at + 5  # it may have played on a little
    assert "playing" in hit.get_attribute("class")
    # the keyboard does the same: Enter on another segment (or on Play, the best one)
    other = hits(browser)[1]
    target = other.find_elements("css selector", ".segment")[0]
    from selenium.webdriver.common.keys import Keys

    target.send_keys(Keys.ENTER)
    start_at = float(target.get_attribute("data-start"))
    state = until(
        browser,
        lambda d: (
            (s := audio_state(d))["track"] == other.get_attribute("data-track-id")
            and s["ready"] >= 1
            and s
        ),
    )
    assert state["error"] is None and start_at <= state["time"] < start_at + 5


def test_a_query_url_renders_that_search(
    browser: Any, server: Server, search_catalog: SearchCatalog
) -> None:
    folder = str(search_catalog.root / "tagged")
    params = urllib.parse.urlencode({"q": "music", "folder": folder, "year_min": "2000"})
    browser.get(f"{server.url}/?{params}")
    assert wait_for_hits(browser) == [search_catalog.ids["bob"]]
    assert browser.find_element("id", "q").get_attribute("value") == "music"
    assert browser.execute_script("return document.getElementById('filters').open")
    field = browser.find_element("css selector", "input[name=folder]")
    assert field.get_attribute("value") == folder
    # a bad filter in the URL is said, not sent
    browser.get(f"{server.url}/?q=music&year_min=later")
    until(browser, lambda d: "year" in d.find_element("id", "status").text)
    assert hits(browser) == []


def test_similar_lists_the_near_duplicate_first(
    browser: Any, server: Server, search_catalog: SearchCatalog
) -> None:
    ids = search_catalog.ids
    search_for(browser, server, search_catalog.songs[3]["caption"])
    item = browser.find_element("css selector", f"#hits > li[data-track-id='{ids['song3']}']")
    item.find_element("css selector", ".similar").click()
    assert wait_for_hits(browser, first=ids["dup3"])[0] == ids["dup3"]
    assert ids["song3"] not in hit_ids(browser)
    assert browser.find_element("id", "heading").text.startswith("Tracks like")
    assert f"similar={ids['song3']}" in browser.current_url
    browser.back()  # back to the search, re-rendered from the URL
    until(browser, lambda d: ids["song3"] in hit_ids(d) and "similar" not in d.current_url)


def test_every_element_is_reachable_by_keyboard(
    browser: Any, server: Server, search_catalog: SearchCatalog
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    search_for(browser, server, "piano")
    hits(browser)[0].find_element("css selector", ".play").click()  # shows the player
    until(browser, lambda d: d.find_element("id", "player").is_displayed())
    browser.execute_script("document.getElementById('filters').open = true")
    wanted = browser.execute_script(
        "const all = [...document.querySelectorAll(arguments[0])]"
        "  .filter((e) => !e.disabled && e.getClientRects().length);"
        "all.forEach((e, i) => e.dataset.kb = i);"
        "return all.length;",
        FOCUSABLE,
    )
    assert wanted > 40  # the form, 11 results with their segments and actions, the player
    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    reached: set[str] = set()
    actions = ActionChains(browser)
    for _ in range(wanted + 20):  # the player's own controls take a few stops
        actions.send_keys(Keys.TAB).perform()
        index = browser.execute_script("return document.activeElement.dataset.kb ?? null")
        if index is not None:
            reached.add(index)
    missing = browser.execute_script(
        "return [...document.querySelectorAll('[data-kb]')]"
        "  .filter((e) => !arguments[0].includes(e.dataset.kb))"
        "  .map((e) => e.outerHTML.slice(0, 80));",
        sorted(reached),
    )
    assert missing == []
    # "/" jumps back to the search box from anywhere but a text field
    browser.find_element("css selector", ".similar").send_keys("/")
    assert browser.execute_script("return document.activeElement.id") == "q"


def test_the_page_fits_a_phone(server: Server, search_catalog: SearchCatalog) -> None:
    need_chromium()
    with chromium() as driver:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True},
        )
        params = urllib.parse.urlencode({"q": search_catalog.songs[0]["caption"]})
        driver.get(f"{server.url}/?{params}")
        give_key(driver, KEY)
        wait_for_hits(driver)
        layout = driver.execute_script(
            "const bar = document.querySelector('.timeline').getBoundingClientRect();"
            "return {page: document.documentElement.scrollWidth, view: window.innerWidth,"
            " bar: bar.width, font: getComputedStyle(document.getElementById('q')).fontSize};"
        )
        assert layout["view"] == 390
        assert layout["page"] <= layout["view"]  # nothing wider than the screen
        assert layout["bar"] > 300  # the timeline takes the width it has
        assert layout["font"] == "16px"  # phones do not zoom into the search box


def test_the_key_is_asked_once_and_never_in_a_url(
    server: Server, search_catalog: SearchCatalog
) -> None:
    need_chromium()
    query = search_catalog.songs[5]["queries"][0]
    with chromium() as driver:
        driver.get(server.url + "/?" + urllib.parse.urlencode({"q": query}))
        give_key(driver, "not-the-key")
        until(driver, lambda d: "does not take" in d.find_element("id", "key-error").text)
        assert dialog_open(driver) and hits(driver) == []
        give_key(driver, KEY)
        assert wait_for_hits(driver)[0] == search_catalog.ids["song5"]
        assert not dialog_open(driver)
        # asked once: further searches and a reload of the tab go without asking
        driver.get(server.url + "/?q=drums")
        wait_for_hits(driver)
        assert not dialog_open(driver)
        hits(driver)[0].find_element("css selector", ".segment").click()
        until(driver, lambda d: audio_state(d)["ready"] >= 1)
        assert audio_state(driver)["error"] is None  # the audio element got in (its cookie)
        urls = driver.execute_script(
            "return [location.href, ...performance.getEntries().map((e) => e.name)]"
        )
        assert urls and not [u for u in urls if KEY in urllib.parse.unquote(u)]
        stored = driver.execute_script(
            "return [sessionStorage.getItem('indexer-api-key'), localStorage.length]"
        )
        assert stored == [KEY, 0]  # this tab only, unless "remember" is ticked


def test_nothing_works_without_the_key(server: Server, search_catalog: SearchCatalog) -> None:
    need_chromium()
    with chromium() as driver:
        driver.get(server.url + "/?q=piano")
        until(driver, dialog_open)
        driver.find_element("id", "key-cancel").click()
        status = until(driver, lambda d: d.find_element("id", "status").text)
        assert "needs its API key" in status and hits(driver) == []
        driver.find_element("css selector", "#status button").click()  # asks again
        give_key(driver, KEY)
        wait_for_hits(driver)
    tid = search_catalog.ids["song0"]
    assert fetch(f"{server.url}/tracks/{tid}/audio")[0] == 401
    assert fetch(f"{server.url}/session", method="POST")[0] == 401
    forged = {"Cookie": f"indexer_audio={int(time.time()) + 999}.{'0' * 64}"}
    assert fetch(f"{server.url}/tracks/{tid}/audio", forged)[0] == 401


def test_page_weight_and_nothing_from_elsewhere(browser: Any, server: Server) -> None:
    total = 0
    for route in PAGE_FILES:
        status, headers, body = fetch(server.url + route)
        assert status == 200, route
        total += len(body)
    assert total <= 100_000  # bytes, uncompressed
    _, headers, _ = fetch(server.url + "/")
    assert "default-src 'none'" in headers["content-security-policy"]
    search_for(browser, server, "piano")
    loaded = browser.execute_script(
        "return [...performance.getEntriesByType('navigation'),"
        " ...performance.getEntriesByType('resource')].map((e) => e.name)"
    )
    assert loaded and all(u.startswith(server.url + "/") for u in loaded), loaded
    # the page itself is served without a key; the data is not
    assert fetch(server.url + "/static/app.js")[0] == 200
    assert fetch(server.url + "/static/index.html")[0] == 404  # only the page's named files
    assert fetch(server.url + "/static/..%2Fapp.py")[0] == 404


# ---- the audio route ----------------------------------------------------------------------------


def test_audio_streams_the_indexed_file_with_ranges(
    server: Server, search_catalog: SearchCatalog
) -> None:
    key = {"X-API-Key": KEY}
    song = Path(search_catalog.songs[2]["audio"])
    url = f"{server.url}/tracks/{search_catalog.ids['song2']}/audio"
    status, headers, body = fetch(url, key)
    assert status == 200 and body == song.read_bytes()
    assert headers["content-type"] == "audio/flac" and headers["accept-ranges"] == "bytes"
    size = song.stat().st_size
    status, headers, body = fetch(url, {**key, "Range": "bytes=1000-1999"})
    assert status == 206 and body == song.read_bytes()[1000:2000]
    assert headers["content-range"] == f"bytes 1000-1999/{size}"
    status, _, body = fetch(url, {**key, "Range": "bytes=-100"})
    assert status == 206 and body == song.read_bytes()[-100:]
    assert fetch(url, {**key, "Range": f"bytes={size + 10}-"})[0] == 416
    status, headers, _ = fetch(
        f"{server.url}/tracks/{search_catalog.ids['bob']}/audio", {**key, "Range": "bytes=0-9"}
    )
    assert status == 206 and headers["content-type"] == "audio/mpeg"


def test_audio_by_id_only(server: Server) -> None:
    key = {"X-API-Key": KEY}
    unknown = "00000000-0000-0000-0000-000000000000"
    status, _, body = fetch(f"{server.url}/tracks/{unknown}/audio", key)
    assert status == 404 and "no track" in json.loads(body)["detail"]
    assert fetch(f"{server.url}/tracks/..%2F..%2Fetc%2Fpasswd/audio", key)[0] in (404, 422)
    assert fetch(f"{server.url}/tracks/not-an-id/audio", key)[0] == 422
    assert fetch(f"{server.url}/tracks/{unknown}/audio?path=/etc/passwd", key)[0] == 404
