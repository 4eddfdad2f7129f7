"""HTTP servers: ``jobcarbon serve``'s /metrics for Prometheus and /healthz, and the pod
watcher's /healthz and /readyz for the kubelet's probes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST

from .exporter import Exporter

log = logging.getLogger("jobcarbon.server")


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


def metrics_app(exporter: Exporter) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            body = exporter.render()
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [body]
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"jobcarbon: metrics are at /metrics\n"]

    return app


Probe = Callable[[], tuple[bool, str]]


def probe_app(probes: dict[str, Probe]) -> Callable[..., Iterable[bytes]]:
    """Each path answers 200 when its probe holds, 503 when not, with the probe's words."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        probe = probes.get(environ.get("PATH_INFO", "/"))
        if probe is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [f"jobcarbon: probes are at {', '.join(probes)}\n".encode()]
        ok, words = probe()
        start_response(
            "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
        )
        return [f"{'ok' if ok else 'failing'}: {words}\n".encode()]

    return app


def _make(app: Callable[..., Iterable[bytes]], host: str, port: int) -> WSGIServer:
    return make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)


def serve_in_thread(app: Callable[..., Iterable[bytes]], host: str, port: int) -> WSGIServer:
    """Serve ``app`` from a daemon thread; ``shutdown()`` the result to stop."""
    server = _make(app, host, port)
    threading.Thread(target=server.serve_forever, name="jobcarbon-http", daemon=True).start()
    return server


def serve_metrics(exporter: Exporter, host: str, port: int) -> None:
    server = _make(metrics_app(exporter), host, port)
    log.info("serving metrics on http://%s:%d/metrics", host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
