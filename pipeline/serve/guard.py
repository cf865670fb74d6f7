"""What the studio answers, before Gradio sees a request: an ASGI middleware (Starlette's
TrustedHostMiddleware and a CSRF origin check in one, written for a server on this machine).

- **Host names** (against DNS rebinding): a web page the user visits can point a host name of its
  own at 127.0.0.1 and drive a loopback-bound server through the user's browser; the request then
  names that host. Only requests addressed to a host the studio serves are answered: the loopback
  names by default, and those the user opens it under (`vq serve --host`, `--allowed-host`).
- **Cross-origin writes** (against CSRF): a browser sends `Origin` with every cross-origin POST,
  and a form or `fetch(..., {mode: "no-cors"})` from another page would reach the server even
  though that page could never read the answer. A request that can change anything (any method
  but GET, HEAD and OPTIONS) whose `Origin` is not the studio's own is refused; gradio_client
  and other programs send none and are served.
- **Request size**: Gradio caps each uploaded file; this caps a request's whole body, so several
  large files in one request are refused too: by its Content-Length before anything is read, or,
  for a chunked body, as soon as it passes the cap (what arrived until then is dropped).

Refusals are one plain-text line with a 4xx status."""

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from vq.pipeline.errors import VQError

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
ANY_ADDRESS = "*address*"  # among the served hosts: any IP address (a studio open to the network)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TooLarge(Exception):
    """A request body grew past the cap while it streamed in."""


def host_name(value: str) -> str:
    """'Example.org:7860' -> 'example.org'; '[::1]:7860' -> '::1' (a Host header or a URL's netloc)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,252}[a-z0-9])?|\[?[0-9a-f:.]+\]?", re.IGNORECASE)


def served_hosts(host: str, allowed: list[str] | tuple[str, ...] = ()) -> frozenset[str]:
    """The host names the studio answers to when it listens on `host`: the loopback names, the
    address itself, and for an address that opens it to the network (0.0.0.0, ::) this machine's
    names and addresses, and `ANY_ADDRESS` (any IP address: DNS rebinding needs a name, so a
    request addressed to an address is one the user typed); plus any names the user allows (a
    name of a proxy in front of it). A name that is no host name is refused in one line."""
    for name in allowed:
        if not HOST_NAME.fullmatch(name.strip()):
            raise VQError(f"--allowed-host {name[:60]!r} is no host name; give a name such as studio.example.org")
    names = set(LOOPBACK) | {host_name(a) for a in allowed} | {host_name(host)}
    if is_wildcard(host_name(host)):
        names.add(ANY_ADDRESS)
        for name in {socket.gethostname(), socket.getfqdn()}:
            names.add(name.lower())
            try:
                names.update(info[4][0] for info in socket.getaddrinfo(name, None))
            except OSError:
                pass
    return frozenset(n for n in names if n and not is_wildcard(n))


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def is_wildcard(name: str) -> bool:
    """0.0.0.0 or ::, an address that listens on every interface but names no host."""
    try:
        return ipaddress.ip_address(name).is_unspecified
    except ValueError:
        return False


class RequestGuard:
    """ASGI middleware: refuse requests to other host names, cross-origin writes, and bodies over
    `max_body` bytes (by Content-Length up front, or counted as a chunked body streams in)."""

    def __init__(self, app, hosts: frozenset[str], max_body: int):
        self.app, self.hosts, self.max_body = app, hosts, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            return await self.refuse(scope, send, *refusal)
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        received, started = 0, False

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise TooLarge
            return message

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except TooLarge:
            if not started:
                await self.refuse(scope, send, 413, self.too_large())

    def refusal(self, scope, headers: dict) -> tuple[int, str] | None:
        host = host_name(headers.get("host", ""))
        if not self.serves(host):
            return 421, (f"vq studio: this server does not answer to the host name '{host[:100]}'; open it as "
                         "http://127.0.0.1:PORT/ (or pass vq serve --allowed-host NAME)")
        origin = headers.get("origin")
        writes = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
        if writes and origin is not None and not self.same_origin(origin, headers.get("host", "")):
            return 403, "vq studio: requests from other web pages are refused"
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            return 413, self.too_large()
        return None

    def serves(self, host: str) -> bool:
        return host in self.hosts or (ANY_ADDRESS in self.hosts and is_address(host))

    def same_origin(self, origin: str, host_header: str) -> bool:
        """The page's own origin: a served host name and the very host:port the request went to."""
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host_header.strip().lower() \
            and self.serves(host_name(parts.netloc))

    def too_large(self) -> str:
        return f"vq studio: a request may carry at most {self.max_body / 2**20:.0f} MB of uploads in all"

    @staticmethod
    async def refuse(scope, send, status: int, message: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        body = (message + "\n").encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
