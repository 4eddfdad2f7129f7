"""tests/support/prometheus_server.py: dcgm-exporter's energy counter of finished pods,
backfilled into a real Prometheus (2.42 and 3.x) and read back over its HTTP API, the
way the Kubernetes watcher reads it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.prometheus_server import (
    COUNTER_START_MJ,
    ENERGY_METRIC,
    PrometheusWithHistory,
    Series,
    dcgm_energy_series,
    epoch_s,
    openmetrics,
)
from tests.support.prometheus_versions import VERSIONS

# Pods of a day ago (whole hours, so that the 30 s grid has no remainder) ...
END = (int(time.time()) // 3600) * 3600 - 86400
START = END - 3600
# ... three days ago, and on a fixed date months back.
RESET_START = END - 2 * 86400
FIXED_START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FIXED_END = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

UUID_A = "GPU-5c3e8f2a-1b7d-4e09-9a61-0d2f3c4b5a69"
UUID_B = "GPU-8d5053b3-9280-7d1a-751b-4fd2fdd547c5"
UUID_SHARED = "GPU-265c9814-6156-355b-e589-ff2064894f16"
UUID_RESET = "GPU-a6158b59-2c1e-1e63-0068-9178c4298abd"
UUID_MIG = "GPU-2d20791a-b4a6-ba59-97f1-e95b99fe5b49"
UUID_EXPORTED = "GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"

# One A100 at 250 W for 3600 s, worked by hand:
#   250 W × 3600 s = 900,000 J = 900,000,000 mJ over the pod's hour;
#   a 30 s step adds 250 W × 30 s = 7,500 J = 7,500,000 mJ, and 3600 s / 30 s = 120 steps
#   (121 samples, both ends included): 120 × 7,500,000 = 900,000,000 mJ.
TRAIN_ABC_MJ = 900_000_000
STEP_MJ = 7_500_000


def _on_node1(pod: str, uuid: str, gpu: int, watts: float, **more: Any) -> Series:
    """A pod of namespace "ml", container "train", on node-1, in the hour before END."""
    fields: dict[str, Any] = {"hostname": "node-1", "namespace": "ml", "container": "train"}
    fields |= {"start": START, "end": END} | more
    return dcgm_energy_series(uuid=uuid, gpu=gpu, pod=pod, watts=watts, **fields)


def _sharing(pod: str, vgpu: str) -> Series:
    """Time-slicing with --kubernetes-virtual-gpus: one counter, one series per pod."""
    return dcgm_energy_series(
        uuid=UUID_SHARED,
        gpu=2,
        hostname="node-2",
        namespace="inference",
        pod=pod,
        container="server",
        start=FIXED_START,
        end=FIXED_END,
        watts=100,
        vgpu=vgpu,
    )


def _pods() -> list[Series]:
    return [
        _on_node1("train-abc", UUID_A, 0, 250),
        _on_node1("train-def", UUID_B, 1, 300),
        _sharing("share-a", "0"),
        _sharing("share-b", "1"),
        # the driver reloads half-way through
        _on_node1(
            "flaky",
            UUID_RESET,
            3,
            200,
            start=RESET_START,
            end=RESET_START + 3600,
            reset_at=RESET_START + 1800,
        ),
        dcgm_energy_series(
            uuid=UUID_MIG,
            gpu=4,
            hostname="node-2",
            namespace="ml",
            pod="mig-job",
            container="train",
            start=FIXED_START,
            end=FIXED_END,
            watts=400,  # the whole GPU's, as dcgm-exporter reports it on each instance
            mig_profile="1g.10gb",
            gpu_instance_id=9,
        ),
        # scraped through a ServiceMonitor without honorLabels: the exporter pod's
        # labels win, the workload's become exported_*
        _on_node1(
            "train-xyz",
            UUID_EXPORTED,
            5,
            250,
            target_labels={
                "job": "nvidia-dcgm-exporter",
                "instance": "10.0.3.7:9400",
                "namespace": "gpu-operator",
                "pod": "nvidia-dcgm-exporter-x7k2p",
                "container": "nvidia-dcgm-exporter",
            },
            honor_labels=False,
        ),
    ]


@pytest.fixture(scope="module", params=VERSIONS)
def prometheus(request: pytest.FixtureRequest) -> Iterator[PrometheusWithHistory]:
    with PrometheusWithHistory(_pods(), version=request.param) as server:
        yield server


def _matrix(data: dict[str, Any]) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    assert data["resultType"] == "matrix", data
    return [
        (series["metric"], [(float(t), float(v)) for t, v in series["values"]])
        for series in sorted(data["result"], key=lambda s: sorted(s["metric"].items()))
    ]


def _value(data: dict[str, Any]) -> float:
    (sample,) = data["result"]
    return float(sample["value"][1])


@pytest.mark.integration
def test_range_selector_at_the_end_returns_the_pods_counter(
    prometheus: PrometheusWithHistory,
) -> None:
    data = prometheus.query(f'{ENERGY_METRIC}{{namespace="ml",pod="train-abc"}}[3600s]', END)
    ((labels, samples),) = _matrix(data)
    assert labels == {
        "__name__": "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "gpu": "0",
        "UUID": UUID_A,
        "pci_bus_id": "00000000:07:00.0",
        "device": "nvidia0",
        "modelName": "NVIDIA A100-SXM4-80GB",
        "Hostname": "node-1",
        "DCGM_FI_DRIVER_VERSION": "550.54.15",
        "container": "train",
        "namespace": "ml",
        "pod": "train-abc",
    }
    # 2.x: [t-3600s, t] includes both ends, so all 121 samples; 3.x: (t-3600s, t], the
    # first is out and the other 120 span 119 steps
    first = 0 if prometheus.range_keeps_start else 1
    assert samples == [(START + 30 * k, COUNTER_START_MJ + STEP_MJ * k) for k in range(first, 121)]
    assert samples[-1][1] - samples[0][1] == TRAIN_ABC_MJ - first * STEP_MJ
    increase = f'increase({ENERGY_METRIC}{{namespace="ml",pod="train-abc"}}[3600s])'
    assert _value(prometheus.query(increase, END)) == TRAIN_ABC_MJ


@pytest.mark.integration
def test_an_instant_selector_loses_a_pod_five_minutes_after_it_ended(
    prometheus: PrometheusWithHistory,
) -> None:
    selector = f'{ENERGY_METRIC}{{pod="train-abc"}}'
    assert _value(prometheus.query(selector, END + 299)) == COUNTER_START_MJ + TRAIN_ABC_MJ
    assert prometheus.query(selector, END + 301)["result"] == []  # the 5 min lookback


@pytest.mark.integration
def test_time_parameter_and_at_modifier_reach_a_date_months_back(
    prometheus: PrometheusWithHistory,
) -> None:
    selector = f'{ENERGY_METRIC}{{pod="share-a"}}[3600s]'
    by_epoch = prometheus.query(selector, FIXED_END)
    by_rfc3339 = prometheus.query(selector, "2026-03-02T10:00:00Z")
    by_at = prometheus.query(f"{selector} @ {epoch_s(FIXED_END):.0f}")  # evaluated now
    assert by_epoch == by_rfc3339 == by_at
    ((_, samples),) = _matrix(by_at)
    # 100 W × 3600 s = 360,000,000 mJ; without the start's sample (3.x) 100 W × 3570 s
    # = 357,000,000 mJ
    if prometheus.range_keeps_start:
        assert (samples[0][0], samples[-1][1] - samples[0][1]) == (
            epoch_s(FIXED_START),
            360_000_000,
        )
    else:
        assert (samples[0][0], samples[-1][1] - samples[0][1]) == (
            epoch_s(FIXED_START) + 30,
            357_000_000,
        )
    assert samples[-1][0] == epoch_s(FIXED_END)


@pytest.mark.integration
def test_pods_sharing_a_gpu_are_series_of_one_counter(prometheus: PrometheusWithHistory) -> None:
    data = prometheus.query(f'{ENERGY_METRIC}{{UUID="{UUID_SHARED}"}}[3600s]', FIXED_END)
    (a_labels, a_samples), (b_labels, b_samples) = _matrix(data)
    assert (a_labels["pod"], a_labels["vgpu"]) == ("share-a", "0")
    assert (b_labels["pod"], b_labels["vgpu"]) == ("share-b", "1")
    assert a_samples == b_samples
    assert {k: v for k, v in a_labels.items() if k not in ("pod", "vgpu")} == {
        k: v for k, v in b_labels.items() if k not in ("pod", "vgpu")
    }


@pytest.mark.integration
def test_a_counter_reset_is_a_drop(prometheus: PrometheusWithHistory) -> None:
    end = RESET_START + 3600
    data = prometheus.query(f'{ENERGY_METRIC}{{pod="flaky"}}[3600s]', end)
    ((_, samples),) = _matrix(data)
    # step k's sample (3.x leaves out step 0, at the range's start)
    values = {round((t - RESET_START) / 30): value for t, value in samples}
    assert min(values) == (0 if prometheus.range_keeps_start else 1)
    # 200 W: 6,000,000 mJ a step; the reload at step 60 restarts the counter from 0
    assert values[59] == COUNTER_START_MJ + 59 * 6_000_000
    assert values[60] == 0
    assert values[120] == 200 * 1800 * 1000  # 360,000,000 mJ since the reload
    assert _value(prometheus.query(f'resets({ENERGY_METRIC}{{pod="flaky"}}[3600s])', end)) == 1
    # 59 steps before the reload and 360,000,000 mJ after it: the step into the reload
    # is lost, 714,000,000 of the 720,000,000 mJ drawn
    # (2.x). 3.x has steps 1..120: 58 steps and 360,000,000 mJ = 708,000,000 mJ over
    # 3570 s, extrapolated to the range's 3600 s: 708,000,000 × 3600 / 3570.
    increase = f'increase({ENERGY_METRIC}{{pod="flaky"}}[3600s])'
    expected_mj = 714_000_000 if prometheus.range_keeps_start else 708_000_000 * 3600 / 3570
    assert _value(prometheus.query(increase, end)) == pytest.approx(expected_mj)


@pytest.mark.integration
def test_a_mig_instance_carries_its_profile_and_instance_id(
    prometheus: PrometheusWithHistory,
) -> None:
    data = prometheus.query(f'{ENERGY_METRIC}{{pod="mig-job"}}[3600s]', FIXED_END)
    ((labels, _),) = _matrix(data)
    assert (labels["GPU_I_PROFILE"], labels["GPU_I_ID"], labels["UUID"]) == (
        "1g.10gb",
        "9",
        UUID_MIG,
    )


@pytest.mark.integration
def test_without_honor_labels_the_pod_is_in_exported_labels(
    prometheus: PrometheusWithHistory,
) -> None:
    selector = f'{ENERGY_METRIC}{{exported_namespace="ml",exported_pod="train-xyz"}}[3600s]'
    ((labels, samples),) = _matrix(prometheus.query(selector, END))
    first = 0 if prometheus.range_keeps_start else 1
    assert labels["pod"] == "nvidia-dcgm-exporter-x7k2p"
    assert labels["namespace"] == "gpu-operator"
    assert labels["exported_container"] == "train"
    assert (labels["job"], labels["instance"]) == ("nvidia-dcgm-exporter", "10.0.3.7:9400")
    assert samples[-1][1] - samples[0][1] == TRAIN_ABC_MJ - first * STEP_MJ


@pytest.mark.integration
def test_the_default_retention_deletes_blocks_15_days_older_than_the_newest() -> None:
    # why PrometheusWithHistory sets a long retention: 2.42 measures it from the newest
    # block, so even on the first start an old block goes
    recent = Series({"pod": "recent"}, [(START, 1.0), (END, 2.0)])
    old = Series({"pod": "old"}, [(epoch_s(FIXED_START), 1.0), (epoch_s(FIXED_END), 2.0)])
    assert epoch_s(FIXED_END) < START - 15 * 86400
    with PrometheusWithHistory([recent, old], retention="15d") as server:
        assert server.query(f'{ENERGY_METRIC}{{pod="recent"}}[3600s]', END)["result"]
        assert not server.query(f'{ENERGY_METRIC}{{pod="old"}}[3600s]', FIXED_END)["result"]


def test_the_builder_adds_watts_times_step_each_step() -> None:
    series = dcgm_energy_series(
        uuid=UUID_A,
        gpu=0,
        hostname="node-1",
        namespace="ml",
        pod="train-abc",
        container="train",
        start=START,
        end=END + 29,  # not on the grid: the last sample is at END
        watts=250,
        counter_start_mj=1000,
    )
    assert series.name == ENERGY_METRIC
    assert len(series.samples) == 121
    assert series.samples[1] == (START + 30, 1000 + STEP_MJ)
    assert series.samples[-1] == (END, 1000 + TRAIN_ABC_MJ)


def test_the_openmetrics_text_declares_each_family_once() -> None:
    energy = [
        Series({"pod": 'a"b'}, [(100.0, 1.0), (130.5, 2.5)]),
        Series({"pod": "c"}, [(100.0, 3.0)]),
    ]
    other = Series({"gpu": "0"}, [(100.0, float("nan"))], name="DCGM_FI_DEV_POWER_USAGE")
    assert openmetrics([energy[0], other, energy[1]]) == (
        "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION unknown\n"
        'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{pod="a\\"b"} 1.0 100.000\n'
        'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{pod="a\\"b"} 2.5 130.500\n'
        'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{pod="c"} 3.0 100.000\n'
        "# TYPE DCGM_FI_DEV_POWER_USAGE unknown\n"
        'DCGM_FI_DEV_POWER_USAGE{gpu="0"} NaN 100.000\n'
        "# EOF\n"
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Series({"pod": "a"}, [(1.7e12, 1.0)]), "milliseconds"),
        (lambda: Series({"pod": "a"}, [(200.0, 1.0), (100.0, 2.0)]), "must increase"),
        (lambda: Series({"__name__": "x"}, [(100.0, 1.0)]), "invalid label name"),
        (lambda: openmetrics([Series({}, [(1.0, 1.0)])] * 2), "same labels"),
        (lambda: epoch_s(datetime(2026, 3, 2)), "naive datetime"),
        (
            lambda: dcgm_energy_series(
                uuid=UUID_MIG,
                gpu=0,
                hostname="node-1",
                namespace="ml",
                pod="p",
                container="c",
                start=START,
                end=END,
                watts=1,
                mig_profile="1g.10gb",
            ),
            "together",
        ),
    ],
)
def test_bad_input_fails_before_anything_starts(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()
