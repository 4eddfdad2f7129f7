"""A real Prometheus on loopback that already holds history: GPU energy counters of
pods that ran in the past, as dcgm-exporter would have exposed them.

A finished pod's samples cannot be scraped any more, so they are backfilled: one
``promtool tsdb create-blocks-from openmetrics`` call turns all series into TSDB blocks
in a temporary data directory, then Debian's ``prometheus`` (2.42) starts on it with no
scrape targets, on 127.0.0.1 and a free port, and is used once ``/-/ready`` answers.
Both start in about 0.2 s.

What promtool 2.42 and Prometheus 2.42 were found to do (tests/test_prometheus_server.py
pins retention, ``time=``/``@``, the closed range and the lookback; the rest was tried by
hand):

- The input is OpenMetrics text: ``name{labels} value timestamp`` with the timestamp in
  seconds (decimals allowed; kept to the millisecond), ``# EOF`` at the end. A family's
  ``# TYPE`` may be ``counter`` even though the sample name lacks ``_total`` (2.42 does
  not check the suffix), but that is not valid OpenMetrics and the TSDB keeps no type
  anyway, so families are written as ``unknown``: the stored name is exactly
  ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION``, as a scrape of dcgm-exporter stores it.
- Time retention is measured from the newest *block*, not from the wall clock: with the
  default 15d, a block more than 15 days older than the newest one is deleted when
  Prometheus opens the directory. Retention here is ``100y``, so dates years back
  (2000-01-01 was tried), days back and even in the future all stay queryable.
- Queries reach the past with the API's ``time=`` (epoch seconds or RFC 3339) or the
  ``@`` modifier, which 2.42 enables by default. A range selector ``[3600s]`` evaluated
  at t is the *closed* interval [t-3600s, t] in 2.x; Prometheus 3 makes it left-open,
  (t-3600s, t], so a sample exactly at t-3600s is left out (``range_keeps_start``).
  ``increase()`` extrapolates to the range's start, so a steady counter's is the same
  in both; across a counter reset it is not (tests/test_prometheus_server.py).
  An instant selector finds a series only up to 5 minutes (the lookback delta) after
  its last sample: a finished pod needs a range selector or ``@``.

How dcgm-exporter labels ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` (NVIDIA/dcgm-exporter):

- It is ``counter, Total energy consumption since boot (in mJ)`` in
  ``etc/default-counters.csv`` and ``etc/dcp-metrics-included.csv``; it comes from NVML's
  ``nvmlDeviceGetTotalEnergyConsumption``, "in millijoules (mJ) since the driver was last
  reloaded": an integer that starts again from 0 when the driver reloads.
- ``internal/pkg/rendermetrics/render_metrics.go`` (GPU template) writes
  ``gpu="0"``, ``UUID="GPU-…"``, ``pci_bus_id="00000000:07:00.0"``, ``device="nvidia0"``,
  ``modelName="NVIDIA A100-SXM4-80GB"``, then for a MIG instance ``GPU_I_PROFILE``
  (e.g. ``1g.10gb``) and ``GPU_I_ID`` (NVML's GPU instance id), then ``Hostname``
  (omitted with ``-n``), then the "label" fields of the counters file —
  ``DCGM_FI_DRIVER_VERSION, label`` is in ``dcp-metrics-included.csv`` (which the Helm
  chart passes with ``-f``), not in every version of ``default-counters.csv`` — then the
  pod attributes. ``pci_bus_id`` is in the current template; older releases lack it.
  ``internal/pkg/collector/gpu_collector.go`` names the UUID label ``UUID`` (``uuid``
  with ``--use-old-namespace``); ``internal/pkg/hostname/hostname.go`` takes
  ``Hostname`` from ``$NODE_NAME`` (set under Kubernetes), else the host name.
- ``internal/pkg/transformation/const.go`` and ``kubernetes.go`` (``--kubernetes``)
  add ``pod``, ``namespace`` and ``container`` (``pod_name``, ``pod_namespace``,
  ``container_name`` with ``--use-old-namespace``) to the series of the device the pod
  holds, read from the kubelet's pod-resources socket while the pod runs.
- Time-slicing: without ``--kubernetes-virtual-gpus`` a device maps to one pod (the last
  one listed); with it each sharing container gets its own copy of the series, same
  value, with a ``vgpu`` label (the replica after ``::`` in the device id). A shared
  GPU is therefore several series with one UUID and one counter.
- MIG: device fields such as power and energy are reported on every GPU instance with
  the whole GPU's value (NVIDIA/dcgm-exporter issues #257 and #317): per-instance series
  carry ``GPU_I_PROFILE``/``GPU_I_ID`` but not per-instance energy.
- When Prometheus scrapes the exporter through a ServiceMonitor without
  ``honorLabels: true`` (the chart's ``serviceMonitor.honorLabels``), the target's own
  ``pod``/``namespace``/``container`` win and the exporter's become ``exported_pod``,
  ``exported_namespace``, ``exported_container`` (NVIDIA/dcgm-exporter issue #85).
  ``dcgm_energy_series(target_labels=..., honor_labels=False)`` produces that shape.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.support.net import free_port
from tests.support.prometheus_versions import PROMETHEUS_2, Prometheus

ENERGY_METRIC = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
MODEL_NAME = "NVIDIA A100-SXM4-80GB"
DRIVER_VERSION = "550.54.15"
# PCI bus ids of GPUs 0-7 in a DGX A100, as dcgm-exporter writes them.
BUS_IDS = ("07", "0F", "47", "4E", "87", "90", "B7", "BD")
# Three days at 100 W since the driver was loaded, in mJ: the counter is never 0 at a
# pod's start.
COUNTER_START_MJ = 25_920_000_000
RETENTION = "100y"
READY_TIMEOUT_S = 30.0

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Epoch seconds beyond this (year 5138) are milliseconds given by mistake.
_MAX_EPOCH_S = 1e11

Time = float | datetime


def epoch_s(moment: Time) -> float:
    """Epoch seconds of a timezone-aware datetime (or of epoch seconds)."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError(f"naive datetime {moment}: give a timezone (e.g. UTC)")
        return moment.timestamp()
    return float(moment)


@dataclass(frozen=True)
class Series:
    """One series to backfill: its labels (without ``__name__``), its samples as
    (epoch seconds, value) in increasing time, and its metric name."""

    labels: Mapping[str, str]
    samples: Sequence[tuple[float, float]]
    name: str = ENERGY_METRIC

    def __post_init__(self) -> None:
        if not _METRIC_NAME.fullmatch(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        for label in self.labels:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} (and __* are reserved)")
        if not self.samples:
            raise ValueError(f"{self.selector()}: no samples")
        previous = -math.inf
        for timestamp, _ in self.samples:
            if not 0 < timestamp < _MAX_EPOCH_S:
                raise ValueError(
                    f"{self.selector()}: timestamp {timestamp} is not epoch seconds"
                    " (milliseconds given?)"
                )
            if timestamp <= previous:
                raise ValueError(f"{self.selector()}: timestamps must increase ({timestamp})")
            previous = timestamp

    def selector(self) -> str:
        """The series as a PromQL selector, e.g. ``NAME{pod="a",namespace="ml"}``."""
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in self.labels.items())
        return f"{self.name}{{{inner}}}"

    def openmetrics(self) -> str:
        """The sample lines of this series."""
        selector = self.selector()
        return "".join(
            f"{selector} {_number(value)} {timestamp:.3f}\n" for timestamp, value in self.samples
        )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def openmetrics(series: Sequence[Series]) -> str:
    """All series as one OpenMetrics text, each family once (type ``unknown``)."""
    seen: set[tuple[str, frozenset[tuple[str, str]]]] = set()
    families: dict[str, list[Series]] = {}
    for one in series:
        key = (one.name, frozenset(one.labels.items()))
        if key in seen:
            raise ValueError(f"two series with the same labels: {one.selector()}")
        seen.add(key)
        families.setdefault(one.name, []).append(one)
    text = [
        f"# TYPE {name} unknown\n" + "".join(one.openmetrics() for one in members)
        for name, members in families.items()
    ]
    return "".join(text) + "# EOF\n"


def dcgm_energy_series(
    *,
    uuid: str,
    gpu: int,
    hostname: str,
    namespace: str,
    pod: str,
    container: str,
    start: Time,
    end: Time,
    watts: float,
    step_s: float = 30,
    counter_start_mj: float = COUNTER_START_MJ,
    reset_at: Time | None = None,
    mig_profile: str | None = None,
    gpu_instance_id: int | None = None,
    vgpu: str | None = None,
    model_name: str = MODEL_NAME,
    driver_version: str = DRIVER_VERSION,
    target_labels: Mapping[str, str] | None = None,
    honor_labels: bool = True,
) -> Series:
    """``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` of one GPU drawing ``watts`` while the pod
    ran, as dcgm-exporter with pod mapping exposed it and Prometheus stored it.

    Samples every ``step_s`` from ``start`` up to and including ``end`` (the last
    sample is the last one of the grid not after ``end``); the counter reads
    ``counter_start_mj`` at ``start`` and gains ``watts * step_s * 1000`` mJ a step.
    ``reset_at`` reloads the driver: the counter restarts from 0 there, so the samples
    at or after it read ``watts * 1000 * (t - reset_at)`` and the energy between the
    last sample before it and it is lost to any counter-based reading.

    Pods sharing a GPU (time-slicing with ``--kubernetes-virtual-gpus``): one call per
    pod with the same ``uuid``, ``gpu``, ``watts``, ``counter_start_mj`` and grid, and
    ``vgpu`` set. A MIG instance: ``mig_profile`` and ``gpu_instance_id``, and the
    whole GPU's ``watts``, as dcgm-exporter reports it. ``target_labels`` are added the
    way a scrape adds them; with ``honor_labels=False`` a clash renames the exporter's
    label to ``exported_<name>``.
    """
    first, last = epoch_s(start), epoch_s(end)
    if not last >= first:
        raise ValueError(f"end {end} is before start {start}")
    if step_s <= 0:
        raise ValueError(f"step_s must be positive, not {step_s}")
    if (mig_profile is None) != (gpu_instance_id is None):
        raise ValueError("give mig_profile and gpu_instance_id together")
    reset = None if reset_at is None else epoch_s(reset_at)
    if reset is not None and not first < reset <= last:
        raise ValueError(f"reset_at {reset_at} is not within ({start}, {end}]")

    labels = {
        "gpu": str(gpu),
        "UUID": uuid,
        "pci_bus_id": f"00000000:{BUS_IDS[gpu % len(BUS_IDS)]}:00.0",
        "device": f"nvidia{gpu}",
        "modelName": model_name,
    }
    if mig_profile is not None:
        labels |= {"GPU_I_PROFILE": mig_profile, "GPU_I_ID": str(gpu_instance_id)}
    labels |= {
        "Hostname": hostname,
        "DCGM_FI_DRIVER_VERSION": driver_version,
        "container": container,
        "namespace": namespace,
        "pod": pod,
    }
    if vgpu is not None:
        labels["vgpu"] = vgpu
    for name, target_value in (target_labels or {}).items():
        if name in labels and honor_labels:
            continue
        if name in labels:
            labels[f"exported_{name}"] = labels.pop(name)
        labels[name] = target_value

    samples = []
    steps = math.floor((last - first) / step_s + 1e-9)
    for k in range(steps + 1):
        at = first + k * step_s
        if reset is None or at < reset:
            value = counter_start_mj + watts * step_s * 1000 * k
        else:
            value = watts * 1000 * (at - reset)
        samples.append((at, value))
    return Series(labels, samples)


class PrometheusWithHistory:
    """Prometheus (2.42 unless ``version`` says otherwise: tests/support/prometheus_versions.py)
    on 127.0.0.1 whose TSDB holds ``series`` (backfilled by promtool).

    ``with PrometheusWithHistory(series) as prometheus:`` then ``prometheus.url``;
    skips the test when that version's ``prometheus`` or ``promtool`` is not there. With
    ``scrape_configs`` (Prometheus' own ``scrape_configs`` entries) it also scrapes
    them every ``scrape_interval_s``; ``series`` may then be empty (no history).
    """

    def __init__(
        self,
        series: Sequence[Series],
        *,
        retention: str = RETENTION,
        scrape_configs: Sequence[Mapping[str, Any]] = (),
        scrape_interval_s: float = 60,
        version: Prometheus = PROMETHEUS_2,
    ) -> None:
        self.prometheus, self.promtool = version.tool("prometheus"), version.tool("promtool")
        # a range [t-d, t] includes its start in 2.x; 3.x makes it left-open (t-d, t]
        self.range_keeps_start = version.major == 2
        self.text = openmetrics(series) if series else None  # validates before anything starts
        self.retention = retention
        self.global_config = {
            "evaluation_interval": "1m",
            "scrape_interval": f"{scrape_interval_s}s",
            "scrape_timeout": f"{min(scrape_interval_s, 10)}s",  # at most the interval
        }
        self.scrape_configs = [dict(job) for job in scrape_configs]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base = Path(tempfile.mkdtemp(prefix="jobcarbon-prom-"))
        self.data = self.base / "data"
        self.log = self.base / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _backfill(self, text: str) -> None:
        history = self.base / "history.om"
        history.write_text(text)
        backfill = ["tsdb", "create-blocks-from", "openmetrics", "--quiet", str(history)]
        blocks = subprocess.run(
            [self.promtool, *backfill, str(self.data)],
            capture_output=True,
            text=True,
            check=False,
        )
        if blocks.returncode != 0:
            self.stop()
            raise RuntimeError(f"promtool could not create blocks: {blocks.stderr.strip()}")

    def start(self) -> PrometheusWithHistory:
        if self.text is not None:
            self._backfill(self.text)
        self._launch()
        return self

    def add(self, series: Sequence[Series]) -> None:
        """More samples, as if they had come in late: backfilled into the same TSDB, then
        Prometheus restarted on the same port to read them (a running one loads new
        blocks only at its next compaction, up to a minute later). The blocks overlap
        the earlier ones in time, which 2.39 and later merge by default."""
        text = openmetrics(series)
        self._halt()
        self._backfill(text)
        self._launch()

    def _launch(self) -> None:
        config = self.base / "prometheus.yml"
        # no rules; targets only when scrape_configs are given
        config.write_text(
            yaml.safe_dump({"global": self.global_config, "scrape_configs": self.scrape_configs})
        )
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.data}",
                    f"--storage.tsdb.retention.time={self.retention}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log_text = self.log.read_text()
                self.stop()
                raise RuntimeError(f"prometheus did not become ready:\n{log_text}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return int(response.status) == 200
        except OSError:
            return False

    def stop(self) -> None:
        self._halt()
        shutil.rmtree(self.base, ignore_errors=True)

    def _halt(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def __enter__(self) -> PrometheusWithHistory:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def query(self, expr: str, at: Time | str | None = None) -> dict[str, Any]:
        """``/api/v1/query``'s ``data`` (``resultType`` and ``result``); ``at`` is the
        ``time=`` parameter: epoch seconds, an aware datetime or an RFC 3339 string."""
        params = {"query": expr}
        if at is not None:
            params["time"] = at if isinstance(at, str) else f"{epoch_s(at):.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as err:  # 400/422/503 carry the reason as JSON
            raise RuntimeError(f"{expr}: {err.read().decode(errors='replace')}") from err
        if body.get("status") != "success":
            raise RuntimeError(f"{expr}: {body}")
        return dict(body["data"])
