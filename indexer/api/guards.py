"""What the app does around every route: read request bodies strictly, write errors safely,
and count every answer under bounded labels.

These are app-wide (ASGI middleware and exception handlers installed by `install`), so a route
added later, in app.py or on an APIRouter the app includes, gets them without doing anything:

- `StrictJSON` refuses (422) JSON bodies that Python's json module reads but JSON does not
  allow: NaN, Infinity, numbers beyond float range (1e999 reads as inf) and lone UTF-16
  surrogate escapes ("\\ud800": no UTF-8 text can hold one). Validators then never compare a
  NaN, Qdrant Edge never sees one (a NaN range panics in it), and no handler is handed text
  it cannot write back.
- The error handlers make every error body JSON that can be written: the 422 of a request
  validation echoes the offending input, which may be bytes that are not UTF-8 (a text/plain
  body), a non-finite float or a lone surrogate; FastAPI's own handler then failed while
  writing it and the client got a 500.
- `Measure` labels requests by method (one of HTTP's, else "other"), route template (the
  app's routes, else "other") and status, outside every other middleware, so it counts the
  413s of the body limit and the 500s of errors nobody handled; labels taken from the raw
  request let made-up methods grow /metrics without bound.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from http import HTTPMethod
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OTHER = "other"  # the label of any method or route the app does not know
METHODS = frozenset(m.value for m in HTTPMethod)
_INPUT_CHARS = 1000  # echoed input is cut here: an error body need not repeat a megabyte


class Refused(ValueError):
    """A request body holds a value JSON has no way to write."""


def install(app: FastAPI, body_limit: int, observe: Callable[[str, str, str, float], None]) -> None:
    """Strict JSON bodies, the body limit, JSON-safe error bodies and the request metrics, for
    every route of `app`.

    `observe(method, route, status, seconds)` records one answered request. Middleware runs
    outermost first: Measure (sees every answer), BodyLimit (bounds what StrictJSON reads),
    StrictJSON, then FastAPI's exception handling and the routes. Middleware an app adds
    after this runs outside Measure, uncounted.
    """
    app.add_middleware(StrictJSON)
    app.add_middleware(BodyLimit, limit=body_limit)
    app.add_middleware(Measure, routes=lambda: app.routes, observe=observe)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]


def problem(status: int, detail: Any) -> JSONResponse:
    """An error answer `{"detail": ...}` that can always be written."""
    return JSONResponse({"detail": json_safe(detail)}, status_code=status)


class BodyLimit:
    """Refuse request bodies above `limit` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit
        self.message = f"the request body is over {limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        # a length of thousands of digits is refused before int() would refuse to read it
        if declared is not None and (
            not declared.isdigit() or len(declared) > 18 or int(declared) > self.limit
        ):
            await problem(413, self.message)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await problem(413, self.message)(scope, receive, send)


class _TooLarge(Exception):
    pass


class StrictJSON:
    """Refuse JSON request bodies with values JSON has not got (see the module docstring).

    Bodies that are not JSON at all go on untouched: FastAPI answers them (400 or 422). A
    body is read whole before the app sees it; the body limit outside this bounds it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _json_content(scope):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = refusal(body) if body else None
        if problem is not None:
            detail = [{"type": "json_invalid", "loc": ["body"], "msg": problem}]
            await JSONResponse({"detail": detail}, status_code=422)(scope, receive, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _json_content(scope: Scope) -> bool:
    """FastAPI reads a body as JSON when it says so, or says nothing."""
    for name, value in scope.get("headers") or []:
        if name == b"content-type":
            kind = value.split(b";")[0].strip().lower()
            return kind == b"application/json" or (
                kind.startswith(b"application/") and kind.endswith(b"+json")
            )
    return True


def refusal(body: bytes | str) -> str | None:
    """Why a JSON text holds a value JSON has not got, or None (also when it is not JSON)."""
    try:
        data = json.loads(body, parse_constant=_constant, parse_float=_finite)
    except Refused as err:
        return str(err)
    except (ValueError, RecursionError):  # not JSON (or too deep): FastAPI answers it
        return None
    for text in _strings(data):
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return (
                    "a string holds a lone UTF-16 surrogate escape (such as \\ud800), "
                    "which is no character"
                )
    return None


def _constant(name: str) -> float:
    raise Refused(f"{name} is not a JSON value: numbers must be finite")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Refused(f"{text[:40]} is beyond the range of a number (finite, below 1e308)")
    return value


def _strings(data: Any) -> Iterator[str]:
    """Every string in a parsed JSON value, keys included (iteratively: no depth limit)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def json_safe(value: Any) -> Any:
    """A value JSON can carry and UTF-8 can write: text with lone surrogates or bytes that are
    not UTF-8 is escaped (backslashes), non-finite floats become their names, anything else
    that is not JSON becomes its str()."""
    match value:
        case None | bool() | int():
            return value
        case float():
            return value if math.isfinite(value) else str(value)
        case str():
            return _text(value)
        case bytes():
            return _text(value.decode("utf-8", errors="backslashreplace"))
        case dict():
            return {str(json_safe(k)): json_safe(v) for k, v in value.items()}
        case list() | tuple():
            return [json_safe(v) for v in value]
        case _:
            return _text(str(value))


def _text(text: str) -> str:
    if not text.isascii():
        text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text


async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    errors = []
    for e in err.errors():
        e = dict(e)
        if isinstance(e.get("input"), str | bytes) and len(e["input"]) > _INPUT_CHARS:
            e["input"] = e["input"][:_INPUT_CHARS]
        e.pop("url", None)
        errors.append(json_safe(e))
    return JSONResponse({"detail": errors}, status_code=422)


async def _http_error(request: Request, err: HTTPException) -> Response:
    err.detail = json_safe(err.detail)
    return await http_exception_handler(request, err)


class Measure:
    """Count and time every request the app answers, by bounded labels (outermost)."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Callable[[], Sequence[BaseRoute]],
        observe: Callable[[str, str, str, float], None],
    ) -> None:
        self.app, self.routes, self.observe = app, routes, observe
        self._templates: list[tuple[str, re.Pattern[str]]] = []
        self._seen = -1  # how many top-level routes the templates were built from

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the client gets when the app raises before it answers

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope["method"] if scope["method"] in METHODS else OTHER
            code = str(status) if 100 <= status <= 599 else OTHER
            self.observe(method, self._route(scope), code, time.perf_counter() - began)

    def _route(self, scope: Scope) -> str:
        """The template of the first route whose path matches (whatever the method), else
        "other". Matched here rather than read from what the router set, so requests answered
        before routing (413, strict JSON's 422) get their route too."""
        routes = self.routes()
        if len(routes) != self._seen:  # routes are added while the app is built
            self._templates = [(t, compile_path(t)[0]) for t, _ in leaf_routes(routes)]
            self._seen = len(routes)
        path = scope.get("path", "")
        return next((t for t, regex in self._templates if regex.match(path)), OTHER)


def leaf_routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """Every route with its full path template, in routing order, also those of included
    routers (FastAPI keeps an included router as one entry of app.routes, with no path)."""
    for route in routes:
        path = getattr(route, "path", None)
        if isinstance(path, str):
            yield prefix + path, route
            continue
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from leaf_routes(inner.routes, prefix + str(getattr(context, "prefix", "")))
