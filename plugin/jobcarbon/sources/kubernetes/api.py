"""The Kubernetes API server, as the pod watcher needs it: pods listed in pages and
watched from a resourceVersion, and nodes' labels; through the official client.

Failures are ``ApiError``: ``Expired`` (410 Gone, list again), ``Disconnected`` (the
watch was cut or stayed silent), or another status (with the server's Retry-After).
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ...errors import ConfigError, SourceError, TemporaryError


class ApiError(SourceError, TemporaryError):
    """A call to the API server failed, retried (every status: RBAC may be applied
    meanwhile); ``delay_s`` when the server said when (Retry-After)."""

    def __init__(self, message: str, status: int | None = None, delay_s: float = 0.0):
        super().__init__(message, delay_s)
        self.status = status


class Expired(ApiError):
    """410 Gone: the resourceVersion (or list continue token) is too old; re-list."""


class Disconnected(ApiError):
    """The watch connection was cut, or stayed silent past ``read_timeout_s``."""


@dataclass(frozen=True, slots=True)
class PodPage:
    items: list[dict[str, Any]]
    resource_version: str
    continue_token: str | None


class PodApi(Protocol):
    """What the watcher asks of the API server (``KubeApi``, or a test's)."""

    def list_pods(self, continue_token: str | None) -> PodPage: ...

    def watch_pods(self, resource_version: str) -> Iterator[str]:
        """The watch's lines, one JSON event each, until the server ends it."""
        ...

    def node_labels(self, name: str) -> dict[str, str]:
        """A node's labels; {} for a node that no longer exists."""
        ...


def _client() -> Any:
    try:
        return importlib.import_module("kubernetes")
    except ImportError as err:
        raise ConfigError(
            [
                f"the Kubernetes watcher needs the kubernetes client: pip install "
                f"'jobcarbon[kubernetes]' ({err})"
            ]
        ) from err


class KubeApi:
    """The official ``kubernetes`` client, in-cluster or from a kubeconfig; pods as dicts.

    Objects are not turned into the client's model classes: the watcher reads a
    handful of fields, and skipping the models makes an event ~20 times cheaper.
    """

    def __init__(
        self,
        kubeconfig: str | None,
        namespace: str | None,
        page_size: int,
        watch_timeout_s: int,
        read_timeout_s: float,
    ) -> None:
        kubernetes = _client()
        configuration = kubernetes.client.Configuration()
        try:
            if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            else:
                kubernetes.config.load_kube_config(
                    config_file=kubeconfig, client_configuration=configuration
                )
        except (kubernetes.config.ConfigException, OSError) as err:
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise ConfigError(
                [f"cannot load the Kubernetes client config ({where}, or in-cluster): {err}"]
            ) from err
        self.host = configuration.host
        self.core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
        self.api_exception = kubernetes.client.exceptions.ApiException
        self.namespace = namespace
        self.page_size = page_size
        self.watch_timeout_s = watch_timeout_s
        self.read_timeout_s = read_timeout_s
        self.iter_lines = importlib.import_module("kubernetes.watch.watch").iter_resp_lines

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except self.api_exception as err:
            raise self._error(what, err) from err
        except Exception as err:  # urllib3's and the socket's: the server is unreachable
            raise ApiError(f"{what} on {self.host}: {err.__class__.__name__}: {err}") from err

    def _error(self, what: str, err: Any) -> ApiError:
        status = int(err.status or 0)
        try:
            message = json.loads(err.body).get("message") or err.reason
        except (TypeError, ValueError, AttributeError):
            message = err.reason
        text = f"{what} on {self.host}: {status} {message}"
        if status in (401, 403):  # retried all the same: RBAC may be applied meanwhile
            text += (
                " (the watcher needs get, list and watch on pods and nodes: "
                "k8s_manifests/rbac.yaml; outside the cluster, check the kubeconfig's user)"
            )
        if status == 410:
            return Expired(text, status)
        retry_after = (err.headers or {}).get("Retry-After") if err.headers else None
        try:
            wait = float(retry_after) if retry_after else 0.0
        except ValueError:
            wait = 0.0
        return ApiError(text, status, wait)

    def _pods_call(self) -> Callable[..., Any]:
        if self.namespace:
            namespace = self.namespace
            return lambda **kw: self.core.list_namespaced_pod(namespace, **kw)
        return lambda **kw: self.core.list_pod_for_all_namespaces(**kw)

    def list_pods(self, continue_token: str | None) -> PodPage:
        call = self._pods_call()
        extra = {"_continue": continue_token} if continue_token else {}
        response = self._call(
            "listing pods",
            lambda: call(
                limit=self.page_size,
                _preload_content=False,
                _request_timeout=(10, self.read_timeout_s),
                **extra,
            ),
        )
        body = json.loads(response.data)
        metadata = body.get("metadata") or {}
        return PodPage(
            body.get("items") or [],
            str(metadata.get("resourceVersion") or ""),
            metadata.get("continue") or None,
        )

    def watch_pods(self, resource_version: str) -> Iterator[str]:
        call = self._pods_call()
        response = self._call(
            "watching pods",
            lambda: call(
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout_s,
                _preload_content=False,
                _request_timeout=(10, self.read_timeout_s),
            ),
        )
        return self._lines(response)

    def _lines(self, response: Any) -> Iterator[str]:
        try:
            yield from self.iter_lines(response)
        except Exception as err:
            raise Disconnected(
                f"the watch on {self.host} was cut: {err.__class__.__name__}: {err}"
            ) from err
        finally:
            response.release_conn()

    def node_labels(self, name: str) -> dict[str, str]:
        try:
            response = self._call(
                f"reading node {name}",
                lambda: self.core.read_node(
                    name, _preload_content=False, _request_timeout=(10, self.read_timeout_s)
                ),
            )
        except ApiError as err:
            if err.status == 404:
                return {}
            raise
        labels = (json.loads(response.data).get("metadata") or {}).get("labels") or {}
        return {str(k): str(v) for k, v in labels.items()}


#: What ``read_in_thread``'s queue ends with when the server ended the watch.
END = object()


def read_in_thread(lines: Iterator[str]) -> queue.Queue[object]:
    """The watch's lines, read in a thread and handed over a queue (so that the reader
    never waits for the ledger): each line, then ``END`` or the exception that stopped
    the reading."""
    events: queue.Queue[object] = queue.Queue(maxsize=10_000)

    def read() -> None:
        try:
            for line in lines:
                events.put(line)
            events.put(END)
        except BaseException as err:  # handed to the accounting thread
            events.put(err)

    threading.Thread(target=read, name="jobcarbon-watch", daemon=True).start()
    return events
