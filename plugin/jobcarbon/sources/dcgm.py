"""A finished pod's GPU energy (and busy share) from dcgm-exporter, read from Prometheus.

dcgm-exporter (with Kubernetes pod mapping) exports
``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION``, the millijoules each GPU used since the
driver loaded, labelled with the GPU's ``UUID`` and the ``namespace``/``pod`` it
was assigned to. A pod's GPU energy is the counter's increase over the pod's run,
GPU by GPU, scaled from the span its samples cover to the whole run (scrapes start
and stop up to one interval inside the run).

The measurement is refused, with the reason, when it cannot be the pod's own:
a MIG slice or a GPU shared by time-slicing (the device counter covers the whole
GPU, and is repeated for every pod on it), a counter reset during the run, fewer
GPUs in the counter than the pod holds, samples covering less than
``dcgm_min_coverage`` of the run, or an average power no GPU draws. The pod is then
accounted with the estimate; nothing here raises for a bad answer.

Where the energy is the pod's own, so is ``DCGM_FI_DEV_GPU_UTIL`` (percent busy, a
gauge): its average over the run and the pod's GPUs becomes the job's GPU
utilisation, which the monthly e-mails' advice reads.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..records import Component, MeasuredEnergy

#: No GPU draws more than this on average; above it the counter is broken.
MAX_GPU_POWER_W = 2000.0
MJ_PER_J = 1000.0

log = logging.getLogger("jobcarbon.dcgm")

Fetch = Callable[[str, float], bytes]


def _fetch(url: str, timeout_s: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body: bytes = response.read()
        return body


@dataclass(frozen=True, slots=True)
class Measurement:
    """The pod's GPU energy, or why the estimate is used instead; its GPUs' busy share."""

    energy: MeasuredEnergy | None
    reason: str = ""
    gpu_utilization: float | None = None


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


class DcgmEnergy:
    """Queries a Prometheus (``kubernetes.prometheus_url``) for pods' GPU energy."""

    def __init__(
        self,
        url: str,
        metric: str = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        timeout_s: float = 10.0,
        min_coverage: float = 0.8,
        pod_labels: tuple[str, str] = ("namespace", "pod"),
        utilization_metric: str | None = "DCGM_FI_DEV_GPU_UTIL",
        fetch: Fetch = _fetch,
    ) -> None:
        self.utilization_metric = utilization_metric
        self.url = url.rstrip("/")
        self.namespace_label, self.pod_label = pod_labels
        self.metric = metric
        self.timeout_s = timeout_s
        self.min_coverage = min_coverage
        self.fetch = fetch

    def _query(self, promql: str, at: datetime) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": promql, "time": f"{at.timestamp():.3f}"})
        try:
            body = json.loads(self.fetch(f"{self.url}/api/v1/query?{params}", self.timeout_s))
        except (OSError, ValueError) as err:  # URLError and timeouts are OSErrors
            raise _Refused(f"Prometheus at {self.url} did not answer: {err}") from err
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else body
            raise _Refused(f"Prometheus at {self.url} refused the query: {error}")
        result = body["data"]["result"]
        return result if isinstance(result, list) else []

    def measure(
        self,
        namespace: str,
        pod: str,
        start: datetime,
        end: datetime,
        gpus: float,
        mig: bool,
    ) -> Measurement:
        """The GPU energy of pod ``namespace/pod`` over ``[start, end]``, holding ``gpus``."""
        try:
            energy = self._measure(namespace, pod, start, end, gpus, mig)
        except _Refused as refused:
            return Measurement(None, str(refused))
        return Measurement(energy, gpu_utilization=self._utilization(namespace, pod, start, end))

    def _selector(self, metric: str, namespace: str, pod: str) -> str:
        return (
            f'{metric}{{{self.namespace_label}="{_label_value(namespace)}",'
            f'{self.pod_label}="{_label_value(pod)}"}}'
        )

    def _utilization(
        self, namespace: str, pod: str, start: datetime, end: datetime
    ) -> float | None:
        """The pod's GPUs' average busy share over the run, 0..1; None if not known."""
        if self.utilization_metric is None:
            return None
        window = f"[{max(int((end - start).total_seconds()), 1)}s]"
        selector = self._selector(self.utilization_metric, namespace, pod)
        try:
            result = self._query(f"avg(avg_over_time({selector}{window}))", end)
        except _Refused as refused:
            log.info("pod %s/%s: no GPU utilisation: %s", namespace, pod, refused)
            return None
        if not result:
            return None
        share = float(result[0]["value"][1]) / 100.0
        return share if 0.0 <= share <= 1.0 else None

    def _measure(
        self, namespace: str, pod: str, start: datetime, end: datetime, gpus: float, mig: bool
    ) -> MeasuredEnergy:
        if mig:
            raise _Refused("a MIG slice: the device counter covers the whole GPU")
        run_s = (end - start).total_seconds()
        if run_s <= 0:
            raise _Refused("the pod did not run")
        window = f"[{max(int(run_s), 1)}s]"
        series = self._query(self._selector(self.metric, namespace, pod) + window, end)
        by_gpu: dict[str, list[tuple[float, float]]] = {}
        for item in series:
            uuid = item["metric"].get("UUID") or item["metric"].get("gpu", "?")
            samples = [(float(t), float(v)) for t, v in item.get("values", [])]
            by_gpu.setdefault(uuid, []).extend(samples)
        if len(by_gpu) != gpus:
            raise _Refused(
                f"{self.metric} has {len(by_gpu)} GPU(s) for the pod, which holds {gpus:g}"
            )
        shared = self._query(
            f"count by (UUID) (count by (UUID, {self.namespace_label}, {self.pod_label}) "
            f"(count_over_time({self.metric}"
            f'{{UUID=~"{"|".join(map(_regex_literal, by_gpu))}",{self.pod_label}!=""}}'
            f"{window})))",
            end,
        )
        for item in shared:
            if float(item["value"][1]) > 1:
                raise _Refused(
                    f"GPU {item['metric'].get('UUID')} served other pods during the run "
                    "(time-slicing): its counter is the whole device's"
                )
        energy_mj = 0.0
        for uuid, samples in by_gpu.items():
            samples.sort()
            if any(b[1] < a[1] for a, b in itertools.pairwise(samples)):
                raise _Refused(f"the counter of GPU {uuid} was reset during the run")
            span_s = samples[-1][0] - samples[0][0] if samples else 0.0
            if span_s < self.min_coverage * run_s:
                raise _Refused(
                    f"the samples of GPU {uuid} cover {span_s:.0f} s of the {run_s:.0f} s run "
                    f"(less than {self.min_coverage:.0%})"
                )
            power_w = (samples[-1][1] - samples[0][1]) / MJ_PER_J / span_s
            if power_w > MAX_GPU_POWER_W:
                raise _Refused(f"GPU {uuid} would have drawn {power_w:.0f} W on average")
            energy_mj += power_w * MJ_PER_J * run_s
        return MeasuredEnergy(energy_mj / MJ_PER_J, frozenset({Component.GPU}))


class _Refused(Exception):
    """The counter cannot be the pod's measurement; the message says why."""


def _regex_literal(text: str) -> str:
    """``text`` matched literally by a PromQL regex, inside a double-quoted string."""
    return _label_value(re.escape(text))
