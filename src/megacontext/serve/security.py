"""Who may reach the server and what a request may name.

- A conversation id is a plain name, never a path: it must match `CONVERSATION_ID` (no `.`, `..`,
  separators, NUL or leading dot) and its store must resolve to a direct child of `--stores`.
- `Guard`, an ASGI middleware, refuses before any route runs: a `Host` header that is not the bound
  address or an allowed name (400; stops DNS rebinding), an `Origin` of another site (403), a missing
  or wrong `Authorization: Bearer KEY` when the server has a key (401), and a body that is not
  `application/json` (415; a page on another site can send `text/plain` without a CORS preflight,
  never JSON).

The viewer page may take the key as `?key=KEY` in its URL (a browser can't set a header when opening a
link); the page then sends it as a Bearer header in its own requests. No other route reads `?key=`.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from megacontext.serve.protocol import ApiError

CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")  # fullmatch: a name, never `.`/`..`/hidden
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD = frozenset({"0.0.0.0", "::", ""})
VIEWER_PATH = re.compile(r"/viewer/[^/]+")  # fullmatch: the one route that also accepts the key as `?key=`
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def check_conversation_id(cid: object) -> str:
    """`cid` itself when it is a plain conversation name, else `ApiError` 400."""
    if not isinstance(cid, str) or not CONVERSATION_ID.fullmatch(cid):
        raise ApiError(400, f"conversation id {cid!r} is not a plain name: 1–64 characters of "
                            "A–Z a–z 0–9 _ . -, not starting with '.'")
    return cid


def conversation_path(root: Path, cid: object) -> Path:
    """The store directory of conversation `cid`: a direct child of `root` (resolved), else `ApiError` 400.

    The resolve check also refuses a name that is a symlink leading out of `root`.
    """
    check_conversation_id(cid)
    base = root.resolve()
    path = (base / cid).resolve()
    if path.parent != base:
        raise ApiError(400, f"conversation id {cid!r} does not name a store inside the stores folder")
    return path


def requested_conversation(header: str | None, body: object, default: str = "default") -> str:
    """The conversation a chat request names: the header, else the body's `conversation`, else `default`.

    A header or field that is present but empty is refused, not replaced by the default.
    """
    cid = header if header is not None else body.get("conversation") if isinstance(body, dict) else None
    return check_conversation_id(default if cid is None else cid)


def redact(message: str, root: Path) -> str:
    """`message` without the server's stores folder: a store path becomes its conversation id."""
    base = str(root.resolve())
    return message.replace(base + "/", "").replace(base, "--stores")


def host_name(value: str) -> str:
    """The host part of a `Host` header (`[::1]:8000` → `::1`, `LocalHost:80` → `localhost`)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else ""
    if value.count(":") == 1:
        value = value.split(":")[0]
    return value.rstrip(".")


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """The `Host` names accepted when bound to `bind` with `--allow-host` names `extra`; None: any.

    Loopback names are always accepted (a rebinding page can't make the browser send them); a
    wildcard bind (0.0.0.0, ::) accepts any name unless `extra` restricts it; `*` accepts any.
    """
    names = {host_name(h) for h in extra}
    if "*" in names or (host_name(bind) in WILDCARD and not names):
        return None
    bound = host_name(bind)
    return frozenset(LOOPBACK | names | ({bound} if bound not in WILDCARD else set()))


@dataclass(frozen=True)
class Access:
    """Who may call the server: the API key (None: anyone who reaches the port) and the `Host` names
    accepted (None: any; see `allowed_hosts`)."""

    api_key: str | None = None
    hosts: frozenset[str] | None = LOOPBACK

    def __post_init__(self) -> None:
        key = self.api_key
        if key is not None and (not key or key != key.strip() or not key.isascii() or not key.isprintable()):
            raise ValueError("--api-key must be non-empty printable ASCII without surrounding spaces")

    def refusal(self, method: str, path: str, headers: Headers, query: bytes = b"") -> ApiError | None:
        """Why this request is refused (an `ApiError` to send), or None to let it through."""
        host = host_name(headers.get("host", ""))
        if self.hosts is not None and host not in self.hosts:
            return ApiError(400, f"Host {host!r} is not served here (add it with --allow-host)", "invalid_host")
        origin = headers.get("origin")
        if origin is not None:
            try:
                name = urlsplit(origin).hostname if origin != "null" else None
            except ValueError:  # e.g. an unclosed IPv6 bracket
                name = None
            if name is None or (name != host and (self.hosts is None or name not in self.hosts)):
                return ApiError(403, f"requests from origin {origin!r} are not allowed", "invalid_origin")
        if self.api_key is not None and not self._has_key(method, path, headers, query):
            return ApiError(401, "missing or wrong API key: send `Authorization: Bearer KEY` with the server's "
                                 "--api-key", "invalid_api_key")
        if method in BODY_METHODS:
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return ApiError(415, f"Content-Type must be application/json, not {kind or 'none'!r}",
                                "unsupported_media_type")
        return None

    def _has_key(self, method: str, path: str, headers: Headers, query: bytes) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            token = ""
            if method == "GET" and VIEWER_PATH.fullmatch(path):
                token = (parse_qs(query.decode("latin-1")).get("key") or [""])[0]
        assert self.api_key is not None
        return bool(token) and hmac.compare_digest(token.strip().encode(), self.api_key.encode())


class Guard:
    """ASGI middleware: sends `Access.refusal` as an OpenAI-style JSON error before any route runs."""

    def __init__(self, app, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            error = self.access.refusal(scope["method"], scope["path"], Headers(scope=scope),
                                        scope.get("query_string", b""))
            if error is not None:
                headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
                await JSONResponse(error.body(), status_code=error.status, headers=headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)
