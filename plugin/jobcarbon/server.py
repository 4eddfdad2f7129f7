"""The HTTP server of ``jobcarbon serve``: /metrics for Prometheus, /healthz for probes."""

from __future__ import annotations

import logging
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


def serve_metrics(exporter: Exporter, host: str, port: int) -> None:
    server = make_server(
        host,
        port,
        metrics_app(exporter),
        server_class=_ThreadingServer,
        handler_class=_QuietHandler,
    )
    log.info("serving metrics on http://%s:%d/metrics", host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
