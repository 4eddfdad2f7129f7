"""HTTP servers: ``jobcarbon serve``'s /metrics for Prometheus and /healthz, and the pod
watcher's /healthz and /readyz for the kubelet's probes.

Each connection is served on a thread of its own, and with TLS its handshake happens
there too, so a slow, silent or half-open client holds only its own thread (until
``REQUEST_TIMEOUT_S``) and never the accepting one. With TLS a plain HTTP request is
answered 400 in plain words (no password is asked for over a clear connection).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST

from .exposition import Exporter
from .webconfig import BasicAuth

log = logging.getLogger("jobcarbon.server")

REQUEST_TIMEOUT_S = 30.0  # a connection silent this long is closed
TLS_HANDSHAKE = b"\x16"  # the first byte of a TLS client's first record
PLAIN_HTTP_TO_TLS = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
    b"Client sent an HTTP request to an HTTPS server.\n"
)
App = Callable[..., Iterable[bytes]]
Probe = Callable[[], tuple[bool, str]]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 256  # the listen backlog: scrapers and probes arriving at once
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(REQUEST_TIMEOUT_S)
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            first = request.recv(1, socket.MSG_PEEK)
            if first != TLS_HANDSHAKE:  # plain HTTP: say so, as Go's servers do
                if first:
                    request.recv(65536)  # the request, read so that closing does not reset
                    request.sendall(PLAIN_HTTP_TO_TLS)
                return
            secure = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as err:  # a bad client, a timeout
            log.debug("TLS handshake with %s failed: %s", client_address[0], err)
            return
        try:
            super().finish_request(secure, client_address)
        finally:
            self.shutdown_request(secure)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address[0], exc_info=True)


class _QuietHandler(WSGIRequestHandler):
    # a request line too short to carry a version is answered as HTTP/1.0 (a status
    # line, 400), not HTTP/0.9 (a bare page)
    default_request_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (``gzip`` or ``*``, q > 0)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        name, _, q = params.strip().partition("=")
        try:
            return name.strip() != "q" or float(q) > 0
        except ValueError:
            return False
    return False


def metrics_app(exporter: Exporter, auth: BasicAuth | None = None) -> App:
    """/metrics (gzip-compressed when the scraper accepts it) and /healthz, which fails
    while scrapes fail. With ``auth`` /metrics wants a user's password; /healthz does
    not (the kubelet's probes have none) and tells only whether scrapes work."""
    health = probe_app({"/healthz": exporter.health})

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return health(environ, start_response)
        if auth is not None and not auth.allows(environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Basic realm="jobcarbon"')],
            )
            return [b"jobcarbon: a user and password are wanted\n"]
        if path == "/metrics":
            headers = [("Content-Type", CONTENT_TYPE_LATEST), ("Vary", "Accept-Encoding")]
            if accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING", "")):
                body = exporter.render_gzip()
                headers.append(("Content-Encoding", "gzip"))
            else:
                body = exporter.render()
            start_response("200 OK", headers)
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"jobcarbon: metrics are at /metrics\n"]

    return app


def probe_app(probes: dict[str, Probe]) -> App:
    """Each path answers 200 when its probe holds, 503 when not, with the probe's words."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        probe = probes.get(environ.get("PATH_INFO", "/"))
        if probe is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [f"jobcarbon: probes are at {', '.join(probes)}\n".encode()]
        try:
            ok, words = probe()
        except Exception as err:  # a probe that cannot even answer is failing
            log.exception("probe %s failed", environ.get("PATH_INFO"))
            ok, words = False, f"{type(err).__name__}: {err}"
        start_response(
            "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
        )
        return [f"{'ok' if ok else 'failing'}: {words}\n".encode()]

    return app


def _make(app: App, host: str, port: int, tls: ssl.SSLContext | None) -> WSGIServer:
    server = make_server(
        host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    assert isinstance(server, _ThreadingServer)
    server.tls = tls
    return server


def serve_in_thread(
    app: App, host: str, port: int, tls: ssl.SSLContext | None = None
) -> WSGIServer:
    """Serve ``app`` from a daemon thread; ``shutdown()`` the result to stop."""
    server = _make(app, host, port, tls)
    threading.Thread(target=server.serve_forever, name="jobcarbon-http", daemon=True).start()
    return server


def serve_metrics(
    exporter: Exporter,
    host: str,
    port: int,
    tls: ssl.SSLContext | None = None,
    auth: BasicAuth | None = None,
) -> None:
    server = _make(metrics_app(exporter, auth), host, port, tls)
    scheme = "https" if tls is not None else "http"
    log.info(
        "serving metrics on %s://%s:%d/metrics%s",
        scheme,
        host,
        server.server_port,
        " (basic auth)" if auth is not None else "",
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
