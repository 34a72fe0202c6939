"""The app-wide guards (indexer/api/guards.py) on a small app of their own, served by uvicorn:
what any route gets without doing anything. test_api.py checks the real app's routes."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from indexer.api import guards

LIMIT = 2048


class Body(BaseModel):
    x: float
    name: str = "a"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[int, list[tuple[str, str, str]]]]:
    seen: list[tuple[str, str, str]] = []
    app = FastAPI()
    guards.install(
        app, LIMIT, lambda method, route, status, _: seen.append((method, route, status))
    )

    @app.post("/echo")
    def echo(body: Body) -> dict[str, Any]:
        return body.model_dump()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug nobody handled")

    included = APIRouter()

    @included.post("/items/{n}")
    def item(n: str, body: Body) -> dict[str, Any]:
        return {"n": n}

    app.include_router(included, prefix="/r")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield port, seen
    server.should_exit = True
    thread.join(timeout=10)


def call(
    port: int, method: str, path: str, body: bytes | None = None, kind: str = "application/json"
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": kind} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        status, raw = response.status, response.read()
    finally:
        conn.close()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


@pytest.mark.parametrize(
    "body",
    [
        b'{"x": NaN}',
        b'{"x": Infinity}',
        b'{"x": -Infinity}',
        b'{"x": 1e999}',
        b'{"x": 1, "name": "\\ud800"}',
        b'{"x": 1, "name": "a\\udfffb"}',
        b'{"x": 1, "\\ud800": 2}',
        b'"\\ud800"',
        b"[NaN]",
    ],
)
def test_values_json_has_not_got_are_422(served: Any, body: bytes) -> None:
    port, _ = served
    status, detail = call(port, "POST", "/echo", body)
    assert status == 422, detail
    assert detail["detail"][0]["type"] == "json_invalid"


def test_good_bodies_pass_untouched(served: Any) -> None:
    port, _ = served
    emoji = b'{"x": 1.5e300, "name": "\\ud83c\\udfb9 piano"}'  # a surrogate *pair*
    assert call(port, "POST", "/echo", emoji) == (200, {"x": 1.5e300, "name": "\U0001f3b9 piano"})
    assert (
        call(port, "POST", "/echo", b'{"x": 2}', kind="application/json; charset=utf-8")[0] == 200
    )


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"\xff\xfe not utf-8", "text/plain"),  # validated as bytes, echoed in the 422
        (b'{"x": "\xff"}', "application/json"),
        (b"{not json", "application/json"),
        (b"[" * 100_0 + b"]" * 100_0, "application/json"),
        (b'{"x": 1' + b"0" * 1500 + b"}", "application/json"),  # beyond int() digits
    ],
)
def test_bodies_that_are_not_json_are_4xx(served: Any, body: bytes, kind: str) -> None:
    port, _ = served
    status, detail = call(port, "POST", "/echo", body, kind=kind)
    assert 400 <= status < 500, detail


def test_every_answer_is_counted_under_bounded_labels(served: Any) -> None:
    port, seen = served
    drain(seen)
    for i in range(50):
        call(port, f"MADEUP{i}", "/echo")
        call(port, "GET", f"/no/such/route/{i}")
    settle(seen, 100)
    assert set(seen) == {("other", "/echo", "405"), ("GET", "other", "404")}
    drain(seen)
    assert call(port, "GET", "/boom")[0] == 500
    assert call(port, "POST", "/echo", b'{"x": 1, "name": "' + b"a" * LIMIT + b'"}')[0] == 413
    assert call(port, "POST", "/echo", b'{"x": NaN}')[0] == 422
    assert call(port, "POST", "/echo", b'{"x": 1}')[0] == 200
    assert call(port, "POST", "/r/items/7", b'{"x": 1}')[0] == 200  # an included router's
    assert call(port, "POST", "/r/items/8", b'{"x": NaN}')[0] == 422
    settle(seen, 6)
    assert seen == [
        ("GET", "/boom", "500"),  # the error no handler took
        ("POST", "/echo", "413"),  # the body limit's answer
        ("POST", "/echo", "422"),
        ("POST", "/echo", "200"),
        ("POST", "/r/items/{n}", "200"),
        ("POST", "/r/items/{n}", "422"),  # answered before routing, labelled all the same
    ]


def settle(seen: list[Any], n: int) -> None:
    """Wait for the server thread: it records a request once the answer is sent."""
    deadline = time.monotonic() + 10
    while len(seen) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(seen) == n


def drain(seen: list[Any]) -> None:
    """Forget what earlier requests recorded, once the last of them has."""
    n = -1
    while n != len(seen):
        n = len(seen)
        time.sleep(0.1)
    seen.clear()


def test_a_declared_length_too_long_to_read_is_413(served: Any) -> None:
    port, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", "/echo")
        conn.putheader("Content-Length", "9" * 19)
        conn.endheaders()
        assert conn.getresponse().status == 413
    finally:
        conn.close()


def test_json_safe() -> None:
    assert guards.json_safe({"a": [float("nan"), float("-inf"), 1.5], "b": "x\ud800y"}) == {
        "a": ["nan", "-inf", 1.5],
        "b": "x\\ud800y",
    }
    assert guards.json_safe(b"\xffok") == "\\xffok"
    assert guards.json_safe(ValueError("no")) == "no"
    assert guards.refusal(b'{"a": [1, 2.5, "\\u00e9"]}') is None
    assert guards.refusal(b"{broken") is None  # not JSON: left to FastAPI
