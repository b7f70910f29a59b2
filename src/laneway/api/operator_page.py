"""The operator page at ``/ui``: static files shipped in the package.

The page needs no key, so that it can ask for one; it holds nothing secret, and
everything it shows it reads from the API with the key the operator gives it.
Its files are read once, when the app is made, and served from memory.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from laneway.api.exceptions import ApiError

PAGE_PATH = "/ui"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Everything the page loads comes from laneway itself, and nothing inline runs:
# a message that slipped into the page as markup could still neither run a
# script nor send anything elsewhere. No other site may frame the page.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on each load, so a page never runs against a newer server
    # with the scripts of an older one.
    "Cache-Control": "no-cache",
}


def _page_files() -> dict[str, tuple[bytes, str]]:
    """Each file of the page by name: its bytes and media type."""
    files: dict[str, tuple[bytes, str]] = {}
    for entry in (resources.files("laneway") / "ui").iterdir():
        media_type = MEDIA_TYPES.get("." + entry.name.rpartition(".")[2])
        if media_type is not None and entry.is_file():
            files[entry.name] = (entry.read_bytes(), media_type)
    return files


def page_routes() -> list[BaseRoute]:
    files = _page_files()

    def serve(name: str) -> Response:
        found = files.get(name)
        if found is None:
            raise ApiError(404, "the operator page has no such file")
        body, media_type = found
        return Response(body, media_type=media_type, headers=PAGE_HEADERS)

    async def index(request: Request) -> Response:
        return serve("index.html")

    async def page_file(request: Request) -> Response:
        return serve(request.path_params["name"])

    return [
        Route(PAGE_PATH, index, methods=["GET"], include_in_schema=False),
        Route(PAGE_PATH + "/", index, methods=["GET"], include_in_schema=False),
        Route(PAGE_PATH + "/{name}", page_file, methods=["GET"], include_in_schema=False),
    ]
