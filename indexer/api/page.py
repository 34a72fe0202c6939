"""The web page: `GET /` and its static files (indexer/api/static: HTML, CSS, one JS module).

No build step and nothing from elsewhere: the files are served as they are in the package, and
the page's Content-Security-Policy lets it load nothing but them and talk to nothing but this
server. The page holds no data; it calls the API (POST /search, /similar, GET /tracks/{id}/audio)
with the key the user gives it, so it is served without a key, like the health checks.
`/?q=TEXT` and the filters as query parameters are read by the page, which runs that search.

No `from __future__ import annotations`: FastAPI reads the handlers' annotations.
"""

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).with_name("static")
# the files the page is made of, by the name in its URL (nothing else under STATIC is served)
FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
PAGE = "index.html"
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "media-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
# revalidated on every load (ETag), so an upgraded server's page is used at once
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
PAGE_HEADERS = {**HEADERS, "Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer"}


def router() -> APIRouter:
    routes = APIRouter(include_in_schema=False)

    @routes.get("/")
    def page() -> FileResponse:
        """The search page."""
        return FileResponse(
            STATIC / PAGE, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS
        )

    @routes.get("/static/{name}")
    def static(name: str) -> FileResponse:
        """One of the page's files, by name."""
        kind = FILES.get(name)
        if kind is None:
            raise HTTPException(404, "no such file")
        return FileResponse(STATIC / name, media_type=kind, headers=HEADERS)

    return routes
