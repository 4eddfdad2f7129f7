"""A fake Kubernetes API server on loopback for the pod watcher's tests.

There is no real API server in the test environment, and mocking the ``kubernetes``
client deep inside would test our guesses about it rather than the watcher. So this
server speaks the real HTTP protocol (HTTP/1.1, JSON, chunked watch streams) and the
real client talks to it unchanged. What it models follows the Kubernetes API concepts
page (https://kubernetes.io/docs/reference/using-api/api-concepts/): a global,
monotonically increasing ``resourceVersion``; lists paged with ``limit``/``continue``
over a consistent snapshot, whose continue tokens expire (410 ``Expired``); watches
that replay every event after a ``resourceVersion``, send ``BOOKMARK`` events, end
cleanly at ``timeoutSeconds``, and answer a compacted ``resourceVersion`` with HTTP
200 and one ``ERROR`` event holding a 410 Status, as the API server's watch cache does.

Tests drive it through plain methods: change pods and nodes (each change takes the
next resourceVersion and lands in the event log), ``compact()`` the log, send
bookmarks, cut watch connections mid-stream, make the next requests fail, stop and
start it on the same port, and read back every request it received.

The builders ``gpu_pod`` and ``gpu_node`` make objects shaped like real ones: the
Kubernetes API reference v1.32 (Pod, PodSpec, PodStatus, ContainerStatus, Node) and
``kubectl get pod -o json`` / ``kubectl get node -o json`` output from a kubelet 1.32
node running the NVIDIA GPU operator (GPU feature discovery labels). The tests check
them against the v1.32 OpenAPI schemas with kubernetes_validate.

Run on its own to try it with curl: ``python -m tests.support.kube_api``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import hashlib
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.support.net import free_port, wait_for

if TYPE_CHECKING:
    from kubernetes import client

Obj = dict[str, Any]

KUBERNETES_VERSION = "v1.32.0"
BASE_TIME = datetime(2025, 3, 3, 9, 0, 0, tzinfo=UTC)

# The API server's words for the statuses a test may inject (k8s.io/apimachinery errors).
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue token "
    "in this response to retrieve the remainder of the results. Continuing with the "
    "provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may "
    "show up in the list."
)
TRUE_VALUES = {"1", "t", "T", "true", "TRUE", "True"}  # Go's strconv.ParseBool


def rfc3339(moment: datetime) -> str:
    """A timestamp as the API server writes it: RFC 3339, UTC, whole seconds, "Z"."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: give it a timezone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_object(
    code: int,
    message: str,
    reason: str | None = None,
    details: Obj | None = None,
    continue_token: str | None = None,
) -> Obj:
    """A v1 Status, the body of every API error (and of a watch's ERROR event)."""
    status: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {"continue": continue_token} if continue_token else {},
        "status": "Failure",
        "message": message,
        "reason": reason if reason is not None else REASONS.get(code, ""),
    }
    if details is not None:
        status["details"] = details
    status["code"] = code
    return status


def bookmark_object(kind: str, resource_version: int, initial_events_end: bool = False) -> Obj:
    """The object of a BOOKMARK event: the zero value of ``kind`` with only a version.

    The shape is what a real API server sends (Go's zero value serialized, hence the
    nulls), as quoted by the kube-rs maintainers from a live server; the api-concepts
    page abbreviates it to ``{"kind", "apiVersion", "metadata": {"resourceVersion"}}``.
    """
    metadata: Obj = {"resourceVersion": str(resource_version), "creationTimestamp": None}
    if initial_events_end:
        metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
    spec: Obj = {"containers": None} if kind == "Pod" else {}
    return {"kind": kind, "apiVersion": "v1", "metadata": metadata, "spec": spec, "status": {}}


@dataclass
class Request:
    """One request as the server saw it; ``status`` is the HTTP status it answered."""

    method: str
    path: str
    query: dict[str, str]
    kind: str  # "list", "watch", "get" or "other"
    resource: str  # "pods", "nodes" or "" (anything else)
    namespace: str | None
    authorization: str | None
    status: int = 0

    @property
    def resource_version(self) -> str | None:
        return self.query.get("resourceVersion")


@dataclass(frozen=True)
class Event:
    """One entry of the event log: what a watch from an older version replays."""

    type: str  # ADDED, MODIFIED or DELETED
    resource_version: int
    resource: str  # "pods" or "nodes"
    object: Obj


@dataclass
class _Failure:
    remaining: int
    status: int
    kind: str | None
    retry_after: int | None
    message: str
    text: bool


@dataclass(eq=False)
class _Watch:
    resource: str
    namespace: str | None
    matches: Callable[[Obj], bool]
    bookmarks: bool
    pending: deque[tuple[str, Obj]] = field(default_factory=deque)
    cut: bool = False


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread
    block_on_close = True
    allow_reuse_address = True  # restart on the same port while old sockets linger

    def __init__(self, api: FakeApiServer) -> None:
        self.api = api
        super().__init__(("127.0.0.1", api.port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.api._cond:
            self.api._sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.api._cond:
            self.api._sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client that went away; a bug in the fake still prints
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def do_GET(self) -> None:
        self.server.api._serve(self)

    def do_POST(self) -> None:
        self.server.api._serve(self)

    do_PUT = do_PATCH = do_DELETE = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is FakeApiServer.requests


class FakeApiServer:
    """An API server for pods and nodes on 127.0.0.1, in a thread; ``start()`` it.

    ``token``: when set, requests need ``Authorization: Bearer <token>`` or get 401.
    ``bookmark_interval``: seconds between the BOOKMARK events a watch with
    ``allowWatchBookmarks=true`` gets unasked (the real server sends one about every
    minute); None sends them only on ``send_bookmark()``.
    ``default_watch_timeout``: how long a watch without ``timeoutSeconds`` lasts (the
    real server picks 30-60 minutes); ``stop()`` ends every watch anyway.
    The store survives ``stop()``/``start()``, like etcd behind a restarted API server.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        token: str | None = None,
        first_resource_version: int = 1000,
        bookmark_interval: float | None = None,
        default_watch_timeout: float = 1800.0,
    ) -> None:
        self.port = port or free_port()
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.on_request: Callable[[Request], None] | None = None
        self._cond = threading.Condition()
        self._rv = first_resource_version
        self._compacted_rv = first_resource_version
        self._objects: dict[str, dict[str, Obj]] = {"pods": {}, "nodes": {}}
        self._events: list[Event] = []
        self._snapshots: dict[tuple[str, int], list[tuple[str, Obj]]] = {}
        self._watches: set[_Watch] = set()
        self._failures: list[_Failure] = []
        self._requests: list[Request] = []
        self._sockets: set[socket.socket] = set()
        self._stopping = False
        self._http: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._http is not None

    def start(self) -> FakeApiServer:
        if self._http is not None:
            raise RuntimeError("the fake API server is already running")
        self._stopping = False
        self._http = _HttpServer(self)
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-kube-api-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go away like a crashed API server: cut every watch, close every connection,
        join every thread. The store stays; ``start()`` serves it again on the same
        port. (A real restart also rebuilds the watch cache, so old versions may then
        be too old: call ``compact()`` to model that.)"""
        http, thread = self._http, self._thread
        if http is None or thread is None:
            return
        with self._cond:
            self._stopping = True  # also stops a watch that registers from now on
            self._cond.notify_all()
        http.shutdown()  # no new connections
        with self._cond:
            sockets = list(self._sockets)
        for sock in sockets:  # idle keep-alive connections would hold their threads
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        http.server_close()  # joins the handler threads
        thread.join()
        self._http = self._thread = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def configuration(self) -> client.Configuration:
        """A ``kubernetes.client.Configuration`` for this server (with the token, if any)."""
        from kubernetes import client

        config = client.Configuration(host=self.url)
        if self.token is not None:
            config.api_key = {"authorization": self.token}
            config.api_key_prefix = {"authorization": "Bearer"}
        return config

    # -- the store -----------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion (of the last change), as the API writes it."""
        with self._cond:
            return str(self._rv)

    def add_pod(self, pod: Obj) -> Obj:
        return self._change("pods", "ADDED", pod)

    def update_pod(self, pod: Obj) -> Obj:
        """Replace a stored pod (same namespace and name): a MODIFIED event."""
        return self._change("pods", "MODIFIED", pod)

    def delete_pod(
        self, namespace: str, name: str, *, grace_period_seconds: int | None = None
    ) -> Obj:
        """Delete a pod: one DELETED event, after a MODIFIED one setting deletionTimestamp
        when ``grace_period_seconds`` is given (a graceful delete, as kubectl does)."""
        pod = self.pod(namespace, name)
        if pod is None:
            raise KeyError(f"no pod {namespace}/{name}")
        if grace_period_seconds is not None:
            deadline = datetime.now(UTC) + timedelta(seconds=grace_period_seconds)
            pod["metadata"]["deletionTimestamp"] = rfc3339(deadline)
            pod["metadata"]["deletionGracePeriodSeconds"] = grace_period_seconds
            pod = self._change("pods", "MODIFIED", pod)
        return self._change("pods", "DELETED", pod)

    def pod(self, namespace: str, name: str) -> Obj | None:
        """A copy of the stored pod, or None."""
        with self._cond:
            pod = self._objects["pods"].get(f"{namespace}/{name}")
            return copy.deepcopy(pod) if pod is not None else None

    def pods(self) -> list[Obj]:
        with self._cond:
            return [copy.deepcopy(o) for _, o in sorted(self._objects["pods"].items())]

    def add_node(self, node: Obj) -> Obj:
        return self._change("nodes", "ADDED", node)

    def update_node(self, node: Obj) -> Obj:
        return self._change("nodes", "MODIFIED", node)

    def delete_node(self, name: str) -> Obj:
        node = self.node(name)
        if node is None:
            raise KeyError(f"no node {name}")
        return self._change("nodes", "DELETED", node)

    def node(self, name: str) -> Obj | None:
        with self._cond:
            node = self._objects["nodes"].get(name)
            return copy.deepcopy(node) if node is not None else None

    def nodes(self) -> list[Obj]:
        with self._cond:
            return [copy.deepcopy(o) for _, o in sorted(self._objects["nodes"].items())]

    def events(self) -> list[Event]:
        """The retained event log, oldest first (``compact()`` empties it)."""
        with self._cond:
            return copy.deepcopy(self._events)

    def compact(self) -> int:
        """Forget every event so far, as etcd compaction (or a watch cache that has
        rolled over) does: a watch from an older version then gets a 410 ERROR event,
        and continue tokens of older lists expire. Returns the oldest version one may
        still watch from (the current one)."""
        with self._cond:
            self._compacted_rv = self._rv
            self._events.clear()
            for key in [k for k in self._snapshots if k[1] < self._rv]:
                del self._snapshots[key]
            return self._compacted_rv

    def expire_continue_tokens(self) -> None:
        """Make every continue token handed out so far answer 410 Expired."""
        with self._cond:
            self._snapshots.clear()

    def _change(self, resource: str, type_: str, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        metadata = obj.setdefault("metadata", {})
        key = _key(resource, obj)
        with self._cond:
            store = self._objects[resource]
            old = store.get(key)
            if type_ == "ADDED" and old is not None:
                raise ValueError(f"{resource} {key} already exists")
            if type_ != "ADDED" and old is None:
                raise KeyError(f"no {resource} {key}")
            if old is not None:  # the server keeps what the client may not change
                metadata["uid"] = old["metadata"]["uid"]
                metadata["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault("creationTimestamp", rfc3339(datetime.now(UTC)))
            self._rv += 1
            metadata["resourceVersion"] = str(self._rv)
            if type_ == "DELETED":
                del store[key]
            else:
                store[key] = obj
            self._events.append(Event(type_, self._rv, resource, obj))
            for watch in self._watches:
                if watch.resource == resource and watch.matches(obj):
                    watch.pending.append((type_, obj))
            self._cond.notify_all()
        return copy.deepcopy(obj)

    # -- watches -------------------------------------------------------------------

    @property
    def active_watches(self) -> int:
        """How many watch responses are streaming right now."""
        with self._cond:
            return len(self._watches)

    def wait_for_watches(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` watches are streaming (so no change is missed
        by a test that makes changes right after starting its watcher)."""
        wait_for(f"{count} watch(es)", lambda: self.active_watches >= count, timeout, 0.01)

    def send_bookmark(self, *, initial_events_end: bool = False) -> str:
        """A BOOKMARK at the current version to every watch that allowed bookmarks,
        after any event already queued for it. Returns that version."""
        with self._cond:
            for watch in self._watches:
                if watch.bookmarks:
                    kind = "Pod" if watch.resource == "pods" else "Node"
                    obj = bookmark_object(kind, self._rv, initial_events_end)
                    watch.pending.append(("BOOKMARK", obj))
            self._cond.notify_all()
            return str(self._rv)

    def cut_watches(self, timeout: float = 5.0) -> int:
        """Close every streaming watch's connection without the chunked terminator,
        as a dropped connection or a load balancer's idle cut does; waits until they
        are gone and returns how many there were. The client's read of the stream
        then fails (urllib3 raises ``ProtocolError``: the chunked body ended early)."""
        with self._cond:
            cut = list(self._watches)
            for watch in cut:
                watch.cut = True
            self._cond.notify_all()
        wait_for(
            "watches to close", lambda: not any(w in self._watches for w in cut), timeout, 0.01
        )
        return len(cut)

    # -- failures and the request log ----------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        *,
        kind: str | None = None,
        retry_after: int | None = None,
        message: str | None = None,
        text: bool = False,
    ) -> None:
        """Answer the next ``count`` requests (of ``kind`` "list", "watch" or "get" only,
        if given) with HTTP ``status`` and a v1 Status body, plus a ``Retry-After``
        header when ``retry_after`` is set. ``text=True`` sends the message as
        text/plain instead, as the API server's priority-and-fairness 429 does.

        Note: urllib3 (under the kubernetes client) itself retries a 413, 429 or 503
        that carries Retry-After, up to 3 times, sleeping as told, before the caller
        sees anything; a 500 is never retried.
        """
        if kind not in (None, "list", "watch", "get"):
            raise ValueError(f"kind {kind!r}: use list, watch, get or None")
        default = {
            429: "Too many requests, please try again later.",
            500: "Internal error occurred: injected by the test",
            503: "The service is unavailable.",
        }.get(status, f"injected failure {status}")
        with self._cond:
            self._failures.append(
                _Failure(count, status, kind, retry_after, message or default, text)
            )

    @property
    def requests(self) -> list[Request]:
        """Every request received (since ``clear_requests()``), in order."""
        with self._cond:
            return list(self._requests)

    def lists(self, resource: str = "pods") -> list[Request]:
        return [r for r in self.requests if r.kind == "list" and r.resource == resource]

    def watches(self, resource: str = "pods") -> list[Request]:
        return [r for r in self.requests if r.kind == "watch" and r.resource == resource]

    def clear_requests(self) -> None:
        with self._cond:
            self._requests.clear()

    # -- serving -------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        route = _route(parts.path)
        resource, namespace, name = route if route else ("", None, None)
        if route is None or handler.command != "GET":
            kind = "other"
        elif name is not None:
            kind = "get"
        else:
            kind = "watch" if query.get("watch") in TRUE_VALUES else "list"
        request = Request(
            handler.command,
            parts.path,
            query,
            kind,
            resource,
            namespace,
            handler.headers.get("Authorization"),
        )
        with self._cond:
            self._requests.append(request)
        if self.on_request is not None:
            self.on_request(request)

        if self.token is not None and request.authorization != f"Bearer {self.token}":
            return self._status(handler, request, status_object(401, "Unauthorized"))
        failure = self._take_failure(kind)
        if failure is not None:
            retry_after = failure.retry_after
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            if failure.text:
                body = (failure.message + "\n").encode()
                return self._send(handler, request, failure.status, body, "text/plain", headers)
            status = status_object(failure.status, failure.message)
            if retry_after is not None:
                status["details"] = {"retryAfterSeconds": retry_after}
            return self._status(handler, request, status, headers)
        if parts.path == "/version":
            return self._json(handler, request, 200, _version())
        if route is None:
            message = "the server could not find the requested resource"
            return self._status(handler, request, status_object(404, message, details={}))
        if handler.command != "GET":
            message = f"{handler.command} is not supported by the fake API server"
            return self._status(handler, request, status_object(405, message))
        try:
            if kind == "get":
                assert name is not None
                return self._get(handler, request, resource, namespace, name)
            selector = _selector(query.get("labelSelector", ""), query.get("fieldSelector", ""))
            if kind == "watch":
                return self._watch(handler, request, resource, namespace, query, selector)
            return self._list(handler, request, resource, namespace, query, selector)
        except _BadRequest as err:
            return self._status(handler, request, status_object(400, str(err)))

    def _take_failure(self, kind: str) -> _Failure | None:
        with self._cond:
            for failure in self._failures:
                if failure.kind in (None, kind):
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.remove(failure)
                    return failure
        return None

    def _get(
        self, h: _Handler, request: Request, resource: str, namespace: str | None, name: str
    ) -> None:
        key = f"{namespace}/{name}" if resource == "pods" else name
        with self._cond:
            obj = self._objects[resource].get(key)
        if obj is None:
            message = f'{resource} "{name}" not found'
            details = {"name": name, "kind": resource}
            return self._status(h, request, status_object(404, message, details=details))
        return self._json(h, request, 200, obj)

    def _list(
        self,
        h: _Handler,
        request: Request,
        resource: str,
        namespace: str | None,
        query: Mapping[str, str],
        selector: Callable[[Obj], bool] | None,
    ) -> None:
        limit = _integer(query, "limit")
        token = query.get("continue")
        with self._cond:
            if token:
                list_rv, start = _decode_continue(token)
                if list_rv == -1:  # the inconsistent continuation handed out with a 410
                    items = self._current(resource)
                    list_rv = self._rv
                elif (resource, list_rv) in self._snapshots:
                    items = self._snapshots[resource, list_rv]
                elif list_rv <= self._rv:
                    fresh = _encode_continue(-1, start)
                    status = status_object(410, CONTINUE_EXPIRED, continue_token=fresh)
                    return self._status(h, request, status)
                else:
                    raise _BadRequest(f"continue key is not valid: version {list_rv} is unknown")
            else:
                items, list_rv, start = self._current(resource), self._rv, ""
            chosen = [
                (key, obj)
                for key, obj in items
                if key >= start
                and (namespace is None or obj["metadata"].get("namespace") == namespace)
                and (selector is None or selector(obj))
            ]
            metadata: Obj = {"resourceVersion": str(list_rv)}
            if limit and len(chosen) > limit:
                self._snapshots[resource, list_rv] = items
                metadata["continue"] = _encode_continue(list_rv, chosen[limit - 1][0] + "\x00")
                if selector is None:
                    metadata["remainingItemCount"] = len(chosen) - limit
                chosen = chosen[:limit]
        body = {
            "kind": "PodList" if resource == "pods" else "NodeList",
            "apiVersion": "v1",
            "metadata": metadata,
            # list items carry no kind or apiVersion on the wire (kubectl adds them)
            "items": [
                {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
                for _, obj in chosen
            ],
        }
        return self._json(h, request, 200, body)

    def _current(self, resource: str) -> list[tuple[str, Obj]]:
        return sorted(self._objects[resource].items())  # etcd's key order

    def _watch(
        self,
        h: _Handler,
        request: Request,
        resource: str,
        namespace: str | None,
        query: Mapping[str, str],
        selector: Callable[[Obj], bool] | None,
    ) -> None:
        timeout = _integer(query, "timeoutSeconds") or self.default_watch_timeout
        deadline = time.monotonic() + timeout
        rv_text = query.get("resourceVersion", "")
        if rv_text not in ("", "0") and not rv_text.isdigit():
            raise _BadRequest(f'invalid resource version "{rv_text}"')

        def matches(obj: Obj) -> bool:
            in_namespace = namespace is None or obj["metadata"].get("namespace") == namespace
            return in_namespace and (selector is None or selector(obj))

        bookmarks = query.get("allowWatchBookmarks") in TRUE_VALUES
        watch = _Watch(resource, namespace, matches, bookmarks)
        expired: Obj | None = None
        with self._cond:
            if rv_text in ("", "0"):  # start at the current state: synthetic ADDED events
                for _, obj in self._current(resource):
                    if matches(obj):
                        watch.pending.append(("ADDED", obj))
            elif int(rv_text) < self._compacted_rv:
                message = f"too old resource version: {rv_text} ({self._compacted_rv})"
                expired = status_object(410, message)
            else:
                for event in self._events:
                    if (
                        event.resource_version > int(rv_text)
                        and event.resource == resource
                        and matches(event.object)
                    ):
                        watch.pending.append((event.type, event.object))
            if expired is None:
                self._watches.add(watch)
        request.status = 200
        try:
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Cache-Control", "no-cache, private")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            if expired is not None:
                _chunk(h, {"type": "ERROR", "object": expired})
                h.wfile.write(b"0\r\n\r\n")
                return
            last_bookmark = time.monotonic()
            while True:
                with self._cond:
                    while not (watch.pending or watch.cut or self._stopping):
                        now = time.monotonic()
                        wake = deadline
                        if watch.bookmarks and self.bookmark_interval is not None:
                            if now - last_bookmark >= self.bookmark_interval:
                                kind = "Pod" if resource == "pods" else "Node"
                                watch.pending.append(("BOOKMARK", bookmark_object(kind, self._rv)))
                                last_bookmark = now
                                continue
                            wake = min(deadline, last_bookmark + self.bookmark_interval)
                        if now >= deadline:
                            break
                        self._cond.wait(wake - now)
                    if watch.cut or self._stopping:
                        break
                    events = list(watch.pending)
                    watch.pending.clear()
                if not events:  # timeoutSeconds passed: end the stream cleanly
                    h.wfile.write(b"0\r\n\r\n")
                    return
                for type_, obj in events:
                    _chunk(h, {"type": type_, "object": obj})
            # cut: close the connection without the terminating chunk
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:  # the client went away
            h.close_connection = True
        finally:
            with self._cond:
                self._watches.discard(watch)
                self._cond.notify_all()

    def _status(
        self, h: _Handler, request: Request, status: Obj, headers: Mapping[str, str] = {}
    ) -> None:
        self._json(h, request, status["code"], status, headers)

    def _json(
        self, h: _Handler, request: Request, code: int, body: Obj, headers: Mapping[str, str] = {}
    ) -> None:
        data = json.dumps(body, separators=(",", ":")).encode() + b"\n"
        self._send(h, request, code, data, "application/json", headers)

    def _send(
        self,
        h: _Handler,
        request: Request,
        code: int,
        data: bytes,
        content_type: str,
        headers: Mapping[str, str],
    ) -> None:
        request.status = code
        try:
            h.send_response(code)
            h.send_header("Audit-Id", str(uuid.uuid4()))
            h.send_header("Cache-Control", "no-cache, private")
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(data)
        except OSError:
            h.close_connection = True


class _BadRequest(Exception):
    pass


def _route(path: str) -> tuple[str, str | None, str | None] | None:
    """(resource, namespace, name) for the paths served, else None."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    match parts:
        case ["api", "v1", "pods"]:
            return "pods", None, None
        case ["api", "v1", "namespaces", namespace, "pods"]:
            return "pods", namespace, None
        case ["api", "v1", "namespaces", namespace, "pods", name]:
            return "pods", namespace, name
        case ["api", "v1", "nodes"]:
            return "nodes", None, None
        case ["api", "v1", "nodes", name]:
            return "nodes", None, name
    return None


def _key(resource: str, obj: Obj) -> str:
    metadata = obj["metadata"]
    if resource == "nodes":
        return str(metadata["name"])
    return f"{metadata.get('namespace', 'default')}/{metadata['name']}"


def _integer(query: Mapping[str, str], name: str) -> int:
    text = query.get(name, "")
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise _BadRequest(f'{name}: invalid value "{text}"') from None


def _encode_continue(resource_version: int, start: str) -> str:
    """A continue token as the API server makes one (base64url of a small JSON)."""
    token = {"v": "meta.k8s.io/v1", "rv": resource_version, "start": start}
    raw = json.dumps(token, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = json.loads(raw)
        return int(decoded["rv"]), str(decoded["start"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise _BadRequest(f"continue key is not valid: {token!r}") from None


def _chunk(h: _Handler, event: Obj) -> None:
    """One watch event as one chunk: the JSON object and a newline, like the real server."""
    data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
    h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


def _version() -> Obj:
    return {
        "major": "1",
        "minor": KUBERNETES_VERSION.split(".")[1],
        "gitVersion": KUBERNETES_VERSION,
        "gitCommit": "70d3cc986aa8221cd1dfb1121852688902d3bf53",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T17:59:15Z",
        "goVersion": "go1.23.3",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|!=|=)\s*(?P<value>[A-Za-z0-9_.-]*)"
    r"|\s(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)
_FIELDS: dict[str, Callable[[Obj], str]] = {
    "metadata.name": lambda o: str(o["metadata"].get("name", "")),
    "metadata.namespace": lambda o: str(o["metadata"].get("namespace", "")),
    "spec.nodeName": lambda o: str(o.get("spec", {}).get("nodeName", "")),
    "status.phase": lambda o: str(o.get("status", {}).get("phase", "")),
}


def _selector(labels: str, fields: str) -> Callable[[Obj], bool] | None:
    """A predicate for ``labelSelector`` and ``fieldSelector``, or None for both empty.

    Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``,
    ``k notin (a,b)``. Field selectors: =, == and != on metadata.name,
    metadata.namespace, spec.nodeName and status.phase.
    """
    tests: list[Callable[[Obj], bool]] = []
    for requirement in re.split(r",(?![^()]*\))", labels) if labels.strip() else []:
        tests.append(_label_test(requirement))
    for requirement in fields.split(",") if fields.strip() else []:
        found = re.match(r"^\s*([A-Za-z.]+)\s*(==|!=|=)\s*(.*?)\s*$", requirement)
        if not found or found[1] not in _FIELDS:
            raise _BadRequest(f'field label not supported: "{requirement}"')
        tests.append(_field_test(_FIELDS[found[1]], found[3], negate=found[2] == "!="))
    if not tests:
        return None
    return lambda obj: all(test(obj) for test in tests)


def _field_test(getter: Callable[[Obj], str], value: str, negate: bool) -> Callable[[Obj], bool]:
    return lambda obj: (getter(obj) == value) != negate


def _label_test(requirement: str) -> Callable[[Obj], bool]:
    found = _REQUIREMENT.match(requirement)
    if not found or (found["neg"] and (found["op"] or found["setop"])):
        raise _BadRequest(f'unable to parse requirement: "{requirement}"')
    key = found["key"]

    def labels(obj: Obj) -> Mapping[str, str]:
        return obj["metadata"].get("labels") or {}

    if found["neg"]:
        return lambda o: key not in labels(o)
    if found["op"]:
        value, negate = found["value"], found["op"] == "!="
        return lambda o: (labels(o).get(key) == value) != negate
    if found["setop"]:
        values = {v.strip() for v in found["values"].split(",")}
        if found["setop"] == "in":
            return lambda o: labels(o).get(key) in values
        return lambda o: labels(o).get(key) not in values
    return lambda o: key in labels(o)


# -- builders ---------------------------------------------------------------------------


@dataclass
class Container:
    """One container of ``gpu_pod``: its spec, and its status unless derived from the
    pod's phase (any field left None is derived).

    ``requests``/``limits`` replace the defaults built from ``gpus``, ``cpu`` and
    ``memory``. ``state`` is "waiting", "running" or "terminated"; ``reason`` is the
    terminated reason (Completed, Error, OOMKilled, ...) or the waiting one
    (ContainerCreating, PodInitializing, CrashLoopBackOff, ...). With ``restarts`` > 0,
    ``lastState`` holds the previous run, terminated with ``last_exit_code`` and
    ``last_reason``.
    """

    name: str = "main"
    image: str = "nvcr.io/nvidia/pytorch:24.08-py3"
    gpus: int = 1
    cpu: str = "8"
    memory: str = "64Gi"
    requests: Mapping[str, str] | None = None
    limits: Mapping[str, str] | None = None
    command: Sequence[str] | None = None
    state: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    restarts: int | None = None
    last_exit_code: int | None = None
    last_reason: str | None = None

    def resources(self) -> Obj:
        requests = dict(self.requests) if self.requests is not None else None
        limits = dict(self.limits) if self.limits is not None else None
        if requests is None:
            requests = {"cpu": self.cpu, "memory": self.memory}
            if self.gpus:
                requests["nvidia.com/gpu"] = str(self.gpus)
        if limits is None:
            limits = {"memory": self.memory}
            if self.gpus:
                limits["nvidia.com/gpu"] = str(self.gpus)
        resources: Obj = {}
        if limits:
            resources["limits"] = limits
        if requests:
            resources["requests"] = requests
        return resources


PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
SERVICE_ACCOUNT_VOLUME = "kube-api-access-9xk2p"


def _hex(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def gpu_pod(
    name: str,
    namespace: str = "default",
    *,
    phase: str = "Running",
    node_name: str | None = "gpu-node-1",
    gpus: int = 1,
    containers: Sequence[Container] | None = None,
    init_containers: Sequence[Container] = (),
    created: datetime = BASE_TIME,
    started: datetime | None = None,
    finished: datetime | None = None,
    exit_code: int | None = None,
    reason: str | None = None,
    restarts: int = 0,
    restart_policy: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    job_name: str | None = None,
    uid: str | None = None,
    resource_version: str | None = None,
    deletion_timestamp: datetime | None = None,
    pod_reason: str | None = None,
    pod_message: str | None = None,
    host_ip: str = "10.0.0.11",
    pod_ip: str = "10.244.1.23",
) -> Obj:
    """A v1 Pod asking for GPUs, as the API server returns it (see the module docstring).

    Without ``containers``, one container "main" asks for ``gpus`` GPUs. The pod-level
    ``started``, ``finished``, ``exit_code``, ``reason`` and ``restarts`` are defaults
    for every container that leaves its own None. The containers' states follow
    ``phase``: Pending without ``node_name`` is unscheduled (no statuses); Pending on a
    node has init containers running / containers waiting; Running has them running
    since ``started`` (default: 5 s after ``created``, after the init containers);
    Succeeded has them terminated with 0 "Completed"; Failed with ``exit_code``
    (default 1) and ``reason`` (default "Error"), at ``finished`` (default: an hour
    after the start). ``job_name`` adds the labels, owner reference and finalizer the
    Job controller puts on its pods. ``uid`` defaults to one derived from the name, so
    successive versions of one pod keep it.
    """
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r}: use one of {', '.join(PHASES)}")
    if restart_policy is None:
        any_restarts = restarts or any(c.restarts for c in containers or ())
        restart_policy = "OnFailure" if any_restarts else "Never"
    if restart_policy not in ("Always", "OnFailure", "Never"):
        raise ValueError(f"restart_policy {restart_policy!r}: use Always, OnFailure or Never")
    mains = list(containers) if containers is not None else [Container(gpus=gpus)]
    if not mains:
        raise ValueError("a pod needs at least one container")
    inits = list(init_containers)
    uid = uid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"pod/{namespace}/{name}"))
    scheduled = node_name is not None
    start_time = created + timedelta(seconds=2)

    metadata: Obj = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "resourceVersion": resource_version or "1",
        "creationTimestamp": rfc3339(created),
    }
    pod_labels: dict[str, str] = {}
    if job_name is not None:
        job_uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"job/{namespace}/{job_name}"))
        metadata["generateName"] = f"{job_name}-"
        pod_labels.update(
            {
                "batch.kubernetes.io/controller-uid": job_uid,
                "batch.kubernetes.io/job-name": job_name,
                "controller-uid": job_uid,
                "job-name": job_name,
            }
        )
        metadata["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job_name,
                "uid": job_uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        if phase in ("Pending", "Running"):
            metadata["finalizers"] = ["batch.kubernetes.io/job-tracking"]
    pod_labels.update(labels or {})
    if pod_labels:
        metadata["labels"] = pod_labels
    if annotations:
        metadata["annotations"] = dict(annotations)
    if deletion_timestamp is not None:
        metadata["deletionTimestamp"] = rfc3339(deletion_timestamp)
        metadata["deletionGracePeriodSeconds"] = 30

    spec: Obj = {
        "containers": [_container_spec(c) for c in mains],
        "dnsPolicy": "ClusterFirst",
        "enableServiceLinks": True,
    }
    if inits:
        spec["initContainers"] = [_container_spec(c) for c in inits]
    if scheduled:
        spec["nodeName"] = node_name
    spec.update(
        {
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "restartPolicy": restart_policy,
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "serviceAccount": "default",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
            "tolerations": [
                {"effect": "NoExecute", "key": key, "operator": "Exists", "tolerationSeconds": 300}
                for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
            ]
            + [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}],
            "volumes": [_service_account_volume()],
        }
    )

    status: Obj = {"phase": phase}
    if pod_reason is not None:
        status["reason"] = pod_reason
    if pod_message is not None:
        status["message"] = pod_message
    qos = _qos_class(mains + inits)
    if not scheduled:
        status["conditions"] = [
            _condition(
                "PodScheduled",
                False,
                created,
                "Unschedulable",
                "0/4 nodes are available: 4 Insufficient nvidia.com/gpu. preemption: 0/4 "
                "nodes are available: 4 No preemption victims found for incoming pod.",
            )
        ]
        status["qosClass"] = qos
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": metadata,
            "spec": spec,
            "status": status,
        }

    # When each container ran: init containers one after another, then the main ones.
    clock = start_time + timedelta(seconds=1)
    init_statuses = []
    for index, c in enumerate(inits):
        if phase == "Pending":
            default_state = "running" if index == 0 else "waiting"
        else:
            default_state = "terminated"
        c_started = c.started_at or clock
        c_finished = c.finished_at or c_started + timedelta(seconds=10)
        clock = c_finished + timedelta(seconds=1)
        init_reason = "Completed" if default_state == "terminated" else "PodInitializing"
        state = c.state or default_state
        init_statuses.append(
            _container_status(
                c, namespace, name, state, c_started, c_finished, 0, init_reason, restarts=0
            )
        )
    main_start = started or (clock if inits else created + timedelta(seconds=5))
    main_statuses = []
    for c in mains:
        default_state = {
            "Pending": "waiting",
            "Running": "running",
            "Unknown": "running",
            "Succeeded": "terminated",
            "Failed": "terminated",
        }[phase]
        c_started = c.started_at or main_start
        c_finished = c.finished_at or finished or c_started + timedelta(hours=1)
        if phase == "Succeeded":
            default_code, default_reason = 0, "Completed"
        elif phase == "Failed":
            default_code = exit_code if exit_code is not None else 1
            default_reason = reason or ("Completed" if default_code == 0 else "Error")
        else:
            default_code = exit_code if exit_code is not None else 0
            default_reason = reason or ("PodInitializing" if inits else "ContainerCreating")
        state = c.state or default_state
        main_statuses.append(
            _container_status(
                c,
                namespace,
                name,
                state,
                c_started,
                c_finished,
                default_code,
                default_reason,
                restarts=restarts,
            )
        )

    initialized = all("terminated" in s["state"] for s in init_statuses)
    ready = all(s["ready"] for s in main_statuses)
    terminal = phase in ("Succeeded", "Failed")
    done_reason = "PodCompleted" if phase == "Succeeded" else "PodFailed"
    unready = [s["name"] for s in main_statuses if not s["ready"]]
    not_ready_message = f"containers with unready status: [{' '.join(unready)}]"
    last_change = c_finished if terminal else main_start
    incomplete = [s["name"] for s in init_statuses if "terminated" not in s["state"]]
    if terminal:
        ready_reason: tuple[str | None, str | None] = (done_reason, None)
    elif ready:
        ready_reason = (None, None)
    else:
        ready_reason = ("ContainersNotReady", not_ready_message)
    status["conditions"] = [
        _condition("PodReadyToStartContainers", not terminal and phase != "Pending", start_time),
        _condition(
            "Initialized",
            initialized,
            clock if inits else start_time,
            *(
                (None, None)
                if initialized
                else (
                    "ContainersNotInitialized",
                    f"containers with incomplete status: [{' '.join(incomplete)}]",
                )
            ),
        ),
        _condition("Ready", ready and not terminal, last_change, *ready_reason),
        _condition("ContainersReady", ready and not terminal, last_change, *ready_reason),
        _condition("PodScheduled", True, created),
    ]
    if terminal:  # the kubelet marks a finished pod's Initialized with the end reason
        status["conditions"][1]["reason"] = done_reason
    status.update(
        {
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": rfc3339(start_time),
        }
    )
    if phase == "Pending" and not inits:
        del status["podIP"], status["podIPs"]
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    status["containerStatuses"] = main_statuses
    status["qosClass"] = qos
    return {"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": spec, "status": status}


def _container_spec(c: Container) -> Obj:
    spec: Obj = {"name": c.name, "image": c.image}
    if c.command is not None:
        spec["command"] = list(c.command)
    spec.update(
        {
            "imagePullPolicy": "IfNotPresent",
            "resources": c.resources(),
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "volumeMounts": [
                {
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                    "name": SERVICE_ACCOUNT_VOLUME,
                    "readOnly": True,
                }
            ],
        }
    )
    return spec


def _container_status(
    c: Container,
    namespace: str,
    pod: str,
    state: str,
    started: datetime,
    finished: datetime,
    exit_code: int,
    reason: str,
    *,
    restarts: int,
) -> Obj:
    if state not in ("waiting", "running", "terminated"):
        raise ValueError(f"container {c.name} state {state!r}: use waiting, running, terminated")
    restart_count = c.restarts if c.restarts is not None else restarts
    container_id = f"containerd://{_hex(namespace, pod, c.name, restart_count)}"
    repository = c.image.rsplit(":", 1)[0] if ":" in c.image.rsplit("/", 1)[-1] else c.image
    status: Obj = {"name": c.name}
    if state == "waiting":
        status["state"] = {"waiting": {"reason": c.reason or reason}}
    elif state == "running":
        status["state"] = {"running": {"startedAt": rfc3339(started)}}
    else:
        code = c.exit_code if c.exit_code is not None else exit_code
        status["state"] = {
            "terminated": {
                "containerID": container_id,
                "exitCode": code,
                "finishedAt": rfc3339(finished),
                "reason": c.reason or (reason if reason not in _WAITING else "Completed"),
                "startedAt": rfc3339(started),
            }
        }
    status["lastState"] = {}
    if restart_count:
        last_code = c.last_exit_code if c.last_exit_code is not None else 1
        last_finished = started - timedelta(seconds=10)
        status["lastState"] = {
            "terminated": {
                "containerID": f"containerd://{_hex(namespace, pod, c.name, restart_count - 1)}",
                "exitCode": last_code,
                "finishedAt": rfc3339(last_finished),
                "reason": c.last_reason or ("OOMKilled" if last_code == 137 else "Error"),
                "startedAt": rfc3339(last_finished - timedelta(minutes=20)),
            }
        }
    status["ready"] = state == "running"
    status["restartCount"] = restart_count
    status["image"] = c.image
    status["imageID"] = "" if state == "waiting" else f"{repository}@sha256:{_hex(c.image)}"
    if state != "waiting":
        status["containerID"] = container_id
    status["started"] = state == "running"
    status["volumeMounts"] = [
        {
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            "name": SERVICE_ACCOUNT_VOLUME,
            "readOnly": True,
            "recursiveReadOnly": "Disabled",
        }
    ]
    return status


_WAITING = {"ContainerCreating", "PodInitializing", "CrashLoopBackOff", "ImagePullBackOff"}


def _condition(
    type_: str,
    true: bool,
    moment: datetime,
    reason: str | None = None,
    message: str | None = None,
) -> Obj:
    condition: Obj = {"lastProbeTime": None, "lastTransitionTime": rfc3339(moment)}
    if message is not None:
        condition["message"] = message
    if reason is not None:
        condition["reason"] = reason
    condition["status"] = "True" if true else "False"
    condition["type"] = type_
    return condition


def _qos_class(containers: Iterable[Container]) -> str:
    """Guaranteed, Burstable or BestEffort, by the kubelet's rule on cpu and memory."""
    resources = [c.resources() for c in containers]
    asked = [
        r.get(kind, {}).get(res)
        for r in resources
        for kind in ("requests", "limits")
        for res in ("cpu", "memory")
    ]
    if not any(asked):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits", {}), r.get("requests", {})
        for res in ("cpu", "memory"):
            if res not in limits or requests.get(res, limits[res]) != limits[res]:
                return "Burstable"
    return "Guaranteed"


def _service_account_volume() -> Obj:
    return {
        "name": SERVICE_ACCOUNT_VOLUME,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        "name": "kube-root-ca.crt",
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                "path": "namespace",
                            }
                        ]
                    }
                },
            ],
        },
    }


# GPU feature discovery's facts per product: family, compute capability, memory (MiB).
GPU_PRODUCTS: dict[str, tuple[str, int, int, int]] = {
    "NVIDIA-A100-SXM4-80GB": ("ampere", 8, 0, 81920),
    "NVIDIA-A100-SXM4-40GB": ("ampere", 8, 0, 40960),
    "NVIDIA-H100-80GB-HBM3": ("hopper", 9, 0, 81559),
    "NVIDIA-L40S": ("ada-lovelace", 8, 9, 46068),
    "Tesla-V100-SXM2-32GB": ("volta", 7, 0, 32768),
}


def gpu_node(
    name: str,
    labels: Mapping[str, str] | None = None,
    *,
    gpus: int = 8,
    product: str = "NVIDIA-A100-SXM4-80GB",
    created: datetime = BASE_TIME - timedelta(days=30),
    ready: bool = True,
    taints: Sequence[Mapping[str, str]] = (),
    internal_ip: str = "10.0.0.11",
    cpu: str = "256",
    memory: str = "2113389100Ki",
    uid: str | None = None,
    resource_version: str | None = None,
) -> Obj:
    """A v1 Node with ``gpus`` GPUs labelled by NVIDIA GPU feature discovery (as the GPU
    operator deploys it), like ``kubectl get node -o json`` shows a DGX A100 (by
    default; ``product`` is one of GPU_PRODUCTS). ``labels`` are added last, so they
    can override any default label."""
    if product not in GPU_PRODUCTS:
        raise ValueError(f"product {product!r}: use one of {', '.join(GPU_PRODUCTS)}")
    family, major, minor, memory_mib = GPU_PRODUCTS[product]
    mig = family in ("ampere", "hopper") and product != "NVIDIA-L40S"
    node_labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "feature.node.kubernetes.io/pci-10de.present": "true",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "nvidia.com/cuda.driver-version.full": "550.90.07",
        "nvidia.com/cuda.driver-version.major": "550",
        "nvidia.com/cuda.driver-version.minor": "90",
        "nvidia.com/cuda.driver-version.revision": "07",
        "nvidia.com/cuda.driver.major": "550",
        "nvidia.com/cuda.driver.minor": "90",
        "nvidia.com/cuda.driver.rev": "07",
        "nvidia.com/cuda.runtime-version.full": "12.4",
        "nvidia.com/cuda.runtime-version.major": "12",
        "nvidia.com/cuda.runtime-version.minor": "4",
        "nvidia.com/cuda.runtime.major": "12",
        "nvidia.com/cuda.runtime.minor": "4",
        "nvidia.com/gfd.timestamp": str(int(created.timestamp())),
        "nvidia.com/gpu.compute.major": str(major),
        "nvidia.com/gpu.compute.minor": str(minor),
        "nvidia.com/gpu.count": str(gpus),
        "nvidia.com/gpu.deploy.container-toolkit": "true",
        "nvidia.com/gpu.deploy.device-plugin": "true",
        "nvidia.com/gpu.deploy.driver": "true",
        "nvidia.com/gpu.deploy.gpu-feature-discovery": "true",
        "nvidia.com/gpu.family": family,
        "nvidia.com/gpu.machine": "DGXA100-920-23687-2530-000",
        "nvidia.com/gpu.memory": str(memory_mib),
        "nvidia.com/gpu.mode": "compute",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/mig.capable": "true" if mig else "false",
        "nvidia.com/mps.capable": "false",
        "nvidia.com/vgpu.present": "false",
        "node.kubernetes.io/instance-type": "dgxa100.80g.8.norm",
    }
    node_labels.update(labels or {})
    uid = uid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"node/{name}"))
    heartbeat = rfc3339(BASE_TIME)
    since = rfc3339(created)
    pressure = [
        ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ]
    conditions = [
        {
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": since,
            "message": message,
            "reason": reason,
            "status": "False",
            "type": type_,
        }
        for type_, reason, message in pressure
    ]
    if ready:
        state = ("True", "KubeletReady", "kubelet is posting ready status")
    else:
        state = ("Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
    conditions.append(
        {
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": since,
            "message": state[2],
            "reason": state[1],
            "status": state[0],
            "type": "Ready",
        }
    )
    capacity = {
        "cpu": cpu,
        "ephemeral-storage": "1843269236Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": memory,
        "nvidia.com/gpu": str(gpus),
        "pods": "110",
    }
    allocatable = {**capacity, "ephemeral-storage": "1698756925036"}
    if memory.endswith("Ki"):  # the kubelet reserves 100 MiB for eviction
        allocatable["memory"] = f"{int(memory[:-2]) - 102400}Ki"
    spec: Obj = {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": uid,
            "resourceVersion": resource_version or "1",
            "creationTimestamp": rfc3339(created),
            "labels": node_labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "nvidia.com/gpu-driver-upgrade-enabled": "true",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": spec,
        "status": {
            "addresses": [
                {"address": internal_ip, "type": "InternalIP"},
                {"address": name, "type": "Hostname"},
            ],
            "allocatable": allocatable,
            "capacity": capacity,
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"boot/{name}")),
                "containerRuntimeVersion": "containerd://1.7.24",
                "kernelVersion": "5.15.0-1063-nvidia",
                "kubeProxyVersion": KUBERNETES_VERSION,
                "kubeletVersion": KUBERNETES_VERSION,
                "machineID": _hex("machine", name)[:32],
                "operatingSystem": "linux",
                "osImage": "Ubuntu 22.04.5 LTS",
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"system/{name}")).upper(),
            },
            "runtimeHandlers": [
                {"features": {"recursiveReadOnlyMounts": True, "userNamespaces": True}, "name": n}
                for n in ("nvidia", "runc", "")
            ],
        },
    }


if __name__ == "__main__":  # pragma: no cover - a manual try-out
    with FakeApiServer(port=8001) as api:
        api.add_node(gpu_node("gpu-node-1"))
        api.add_pod(gpu_pod("train-0", "ml", job_name="train"))
        print(f"serving on {api.url}: curl '{api.url}/api/v1/pods?watch=1&resourceVersion=0'")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
