"""Measured GPU energy from dcgm-exporter's counter in a real Prometheus (Debian's 2.42),
filled with the pods' history by promtool (tests/support/prometheus_server.py).

Hand-worked: a GPU drawing 250 W for an hour adds 250 × 3600 = 900,000 J to its
counter (900,000,000 mJ); one at 300 W, 1,080,000 J. A pod holding both used
1,980,000 J = 0.55 kWh. Its GPUs busy 80 % and 40 % of the time: 0.6 on average.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from jobcarbon.records import Component
from jobcarbon.sources.dcgm import DcgmEnergy, Measurement
from tests.support.kube_api import BASE_TIME
from tests.support.net import free_port
from tests.support.prometheus_server import PrometheusWithHistory, Series, dcgm_energy_series
from tests.support.prometheus_versions import VERSIONS

START = BASE_TIME + timedelta(seconds=5)
END = START + timedelta(hours=1)
UTIL = "DCGM_FI_DEV_GPU_UTIL"


def gpu(uuid: str, index: int, pod: str, watts: float, **kwargs: object) -> Series:
    return dcgm_energy_series(
        uuid=uuid,
        gpu=index,
        hostname="gpu-node-1",
        namespace="ml",
        pod=pod,
        container="main",
        start=kwargs.pop("start", START),
        end=kwargs.pop("end", END),
        watts=watts,
        **kwargs,  # type: ignore[arg-type]
    )


def busy(energy: Series, percent: float) -> Series:
    """``DCGM_FI_DEV_GPU_UTIL`` of the same GPU and pod, at the same scrapes."""
    return Series(energy.labels, [(t, percent) for t, _ in energy.samples], UTIL)


@pytest.fixture(scope="module", params=VERSIONS)
def prometheus(request: pytest.FixtureRequest) -> Iterator[PrometheusWithHistory]:
    train = [gpu("GPU-a", 0, "train", 250), gpu("GPU-b", 1, "train", 300)]
    history = [
        *train,
        busy(train[0], 80),
        busy(train[1], 40),
        gpu("GPU-g", 6, "no-util", 250),
        gpu("GPU-c", 2, "reloaded", 200, reset_at=START + timedelta(minutes=30)),
        gpu("GPU-d", 3, "shared-1", 150, vgpu="0"),
        gpu("GPU-d", 3, "shared-2", 150, vgpu="1"),
        gpu("GPU-e", 4, "short-lived", 250, end=START + timedelta(minutes=30)),
    ]
    with PrometheusWithHistory(history, version=request.param) as server:
        yield server


def measure(
    prometheus: PrometheusWithHistory, pod: str, gpus: float = 1, mig: bool = False
) -> Measurement:
    return DcgmEnergy(prometheus.url).measure("ml", pod, START, END, gpus, mig)


def test_a_pods_gpus_are_summed(prometheus: PrometheusWithHistory) -> None:
    measured = measure(prometheus, "train", gpus=2)
    assert measured.reason == ""
    assert measured.energy is not None
    assert measured.energy.energy_j == pytest.approx(1_980_000)
    assert measured.energy.covers == frozenset({Component.GPU})
    assert measured.gpu_utilization == pytest.approx(0.6)  # (80 % + 40 %) / 2


def test_no_utilisation_series_leaves_it_unknown(prometheus: PrometheusWithHistory) -> None:
    measured = measure(prometheus, "no-util")
    assert measured.energy is not None and measured.energy.energy_j == pytest.approx(900_000)
    assert measured.gpu_utilization is None


@pytest.mark.parametrize(
    ("pod", "gpus", "mig", "reason"),
    [
        ("reloaded", 1, False, "the counter of GPU GPU-c was reset during the run"),
        ("shared-1", 1, False, "GPU GPU-d served other jobs during the run (shared, time-slicing)"),
        # 1800 s under 3.x too: the reader's range starts a second before the run, so
        # Prometheus 3's left-open range still holds the sample at the start
        ("short-lived", 1, False, "the samples of GPU GPU-e cover 1800 s of the 3600 s run"),
        ("train", 3, False, "has 2 GPU(s) for the job, which holds 3"),
        ("absent", 1, False, "has 0 GPU(s) for the job, which holds 1"),
        ("train", 3 / 7, True, "a MIG slice: the device counter covers the whole GPU"),
    ],
)
def test_the_estimate_is_kept_and_why(
    prometheus: PrometheusWithHistory, pod: str, gpus: float, mig: bool, reason: str
) -> None:
    measured = measure(prometheus, pod, gpus, mig)
    assert measured.energy is None
    assert reason in measured.reason
    assert measured.gpu_utilization is None  # a shared device's busy share is not the pod's


def test_renamed_pod_labels() -> None:
    # a scrape that did not honour the exporter's labels: exported_namespace, exported_pod
    renamed = gpu(
        "GPU-f",
        0,
        "train",
        250,
        target_labels={"namespace": "gpu-operator", "pod": "dcgm-x"},
        honor_labels=False,
    )
    with PrometheusWithHistory([renamed]) as server:
        plain = DcgmEnergy(server.url).measure("ml", "train", START, END, 1, False)
        assert plain.energy is None
        energy = DcgmEnergy(server.url, job_labels=("exported_namespace", "exported_pod"))
        measured = energy.measure("ml", "train", START, END, 1, False)
    assert measured.energy is not None and measured.energy.energy_j == pytest.approx(900_000)


def test_prometheus_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    measured = DcgmEnergy(url, timeout_s=2).measure("ml", "train", START, END, 1, False)
    assert measured.energy is None
    assert measured.reason.startswith(f"Prometheus at {url} did not answer")
