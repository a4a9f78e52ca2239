"""The web UI (README, "Web UI"): the single-page app built from frontend/ui/ (Preact, Vite) into
frontend/ui/dist/, served by the HTTP API's port at `/` beside the JSON API under /api/v1/.

The app is static files that talk only to /api/v1/ of the same origin; it loads nothing from
elsewhere (no fonts, no CDNs), which the Content-Security-Policy of every page here enforces.
When the app was not built (a source checkout without `make install`), `/` says how to build it.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

UI_DIR = Path(__file__).resolve().parent / "ui" / "dist"

# Only this origin; inline style attributes (the timeline's bar positions) are allowed.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

NOT_BUILT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Legato</title></head>
<body><h1>Legato</h1><p>The web UI has not been built in this installation ({where} is missing).
From a source checkout run <code>make install</code> (it runs <code>npm ci &amp;&amp; npm run build</code> in
frontend/ui/). The JSON API is served at <a href="/api/v1/openapi.json">/api/v1/</a>.</p></body></html>
"""


def add_routes(app: web.Application, ui_dir: Path) -> None:
    """`/` (the app's index.html) and `/assets/...` (its scripts and styles, named by content
    hash, so they may be cached for good)."""

    async def index(request: web.Request) -> web.Response:
        page = ui_dir / "index.html"
        if not page.is_file():
            return web.Response(text=NOT_BUILT.format(where=ui_dir), content_type="text/html", status=503,
                                headers=HEADERS)
        return web.Response(body=page.read_bytes(), content_type="text/html",
                            headers={**HEADERS, "Cache-Control": "no-cache"})

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = (ui_dir / "assets" / name).resolve()
        if "/" in name or not path.is_file() or path.parent != (ui_dir / "assets").resolve():
            raise web.HTTPNotFound()
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return web.Response(body=path.read_bytes(), content_type=kind,
                            headers={**HEADERS, "Cache-Control": "public, max-age=31536000, immutable"})

    app.router.add_get("/", index)
    app.router.add_get("/index.html", index)
    app.router.add_get("/assets/{name}", asset)
