"""The pod watcher syncing its site's grid provider on a schedule: the real ``kubernetes``
client against the fake API server (tests/support/kube_api.py), the fake Electricity
Maps (tests/support/grid_fakes.py), both over real HTTP, and a real SQLite ledger.

Hand-worked figures: the fake's value for hour h of a day (UTC) is 100 + 24 h g/kWh. A
pod that ran from 07:30 to 10:30 UTC, its site synced at 10:40 (up to 10:00) while the
provider lacked 08:00: half of 07:00 (268 g/kWh), 08:00 and 10:00 at the fallback (200),
09:00 (316), half of 10:00 at 200: 134 + 200 + 316 + 100 = 750 g/kWh·h over 3 h, 250
g/kWh, pending. With 08:00 (292) and 10:00 (340) synced: 134 + 292 + 316 + 170 = 912
g/kWh·h, 304 g/kWh.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobcarbon.config import load_config
from jobcarbon.daemons.watcher import Watcher
from jobcarbon.ledger import Ledger
from jobcarbon.sources.kubernetes.api import KubeApi
from tests.sources.test_kubernetes import TOKEN, jobs, listed, watching
from tests.support.config import make_config
from tests.support.grid_fakes import FakeProvider, g_per_kwh, serving
from tests.support.kube_api import FakeApiServer, gpu_node, gpu_pod
from tests.support.net import wait_for

HOUR_S = 3600


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer(token=TOKEN).start()
    server.add_node(gpu_node("gpu-node-1"))
    yield server
    server.stop()


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    monkeypatch.setenv("EM_TOKEN", "s3cret")
    with serving(FakeProvider("electricitymaps")) as fake:
        yield fake


def _site(tmp_path: Path, api: FakeApiServer, fake: FakeProvider, interval_s: float) -> Path:
    """A config file, a kubeconfig beside it, for the fake API server and provider."""
    (tmp_path / "kubeconfig").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
                "users": [{"name": "watcher", "user": {"token": TOKEN}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "watcher"}}],
                "current-context": "fake",
            }
        )
    )
    grid = {
        "provider": {
            "name": "electricitymaps",
            "zone": "DE",
            "url": fake.url,
            "token_env": "EM_TOKEN",
            "fallback_g_per_kwh": 200,
        }
    }
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            make_config(
                site="dc",
                cluster="k8s",
                sites={"dc": {"pue": 1.5, "grid": grid}},
                ledger={"url": "sqlite:///ledger.db"},
                kubernetes={
                    "retry_first_s": 0.05,
                    "retry_max_s": 0.2,
                    "running_interval_s": 0.2,
                    "health_listen": None,
                    "grid_sync_interval_s": interval_s,
                },
            )
        )
    )
    return config


def _pod(name: str, started: datetime, hours: float) -> dict[str, Any]:
    return gpu_pod(
        name, "ml", phase="Succeeded", started=started, finished=started + timedelta(hours=hours)
    )


def test_once_syncs_first_and_a_later_sync_accounts_the_waiting_pod_again(
    tmp_path: Path, api: FakeApiServer, provider: FakeProvider
) -> None:
    day = datetime(2025, 3, 3, tzinfo=UTC)
    day_h = int(day.timestamp()) // HOUR_S
    provider.gap_hours = {day_h + 8}
    api.add_pod(_pod("train", day + timedelta(hours=7.5), 3))
    path = _site(tmp_path, api, provider, 3600)
    config = load_config(path)
    k8s = config.kubernetes
    now = [day.timestamp() + 10 * HOUR_S + 40 * 60]  # 10:40
    with Ledger(tmp_path / "ledger.db") as ledger:
        api_client = KubeApi(
            str(tmp_path / "kubeconfig"),
            None,
            k8s.list_page_size,
            k8s.watch_timeout_s,
            k8s.read_timeout_s,
        )
        watcher = Watcher(config, ledger, api_client, clock=lambda: now[0])
        synced = watcher.once()
        assert synced is not None and synced.errors == [] and watcher.report.written == 1
        train = jobs(path)["train"]
        assert train["intensity_pending"] == 1
        assert train["intensity_g_per_kwh"] == pytest.approx(250)
        assert train["co2e_g"] == pytest.approx(train["energy_facility_kwh"] * 250)

        # an hour later the provider has 08:00; the sync asks again from 07:00
        provider.gap_hours.clear()
        now[0] += HOUR_S
        asked = len(provider.requests)
        synced = watcher.once()
        assert synced is not None and synced.recomputed == 1
        (request,) = provider.requests[asked:]
        assert request.query["start"] == ["2025-03-03T07:00:00.000Z"]
        assert watcher.report.written == 1  # the pod was not accounted twice by the list
        train = jobs(path)["train"]
        assert train["intensity_pending"] == 0
        assert train["intensity_g_per_kwh"] == pytest.approx(304)


def test_the_watch_loop_syncs_in_the_background_and_the_waiting_pod_is_accounted_again(
    tmp_path: Path, api: FakeApiServer, provider: FakeProvider
) -> None:
    """The real loop on the real clock, a sync every second: a pod of the last hours
    whose middle hour the provider lacks waits until the provider has it."""
    hour = int(datetime.now(UTC).timestamp()) // HOUR_S * HOUR_S  # the current hour
    start = datetime.fromtimestamp(hour - 3 * HOUR_S + 1800, UTC)  # 2.5 h before it
    provider.gap_hours = {hour // HOUR_S - 2}
    api.add_pod(_pod("train", start, 2))
    path = _site(tmp_path, api, provider, 1)
    with watching(path) as watcher:
        listed(watcher, api)
        wait_for(
            "the pod accounted and a sync taken",
            lambda: "train" in jobs(path) and len(provider.requests) >= 3,
            10,
            0.05,
        )
        wait_for("the synced hours", lambda: bool(_hours(path)), 10, 0.05)
        assert jobs(path)["train"]["intensity_pending"] == 1
        provider.gap_hours.clear()
        wait_for(
            "the pod accounted again",
            lambda: not jobs(path)["train"]["intensity_pending"],
            10,
            0.05,
        )
    # half of each outer hour, the whole middle one, all three served now
    first_h = hour // HOUR_S - 3
    expected = (
        0.5 * g_per_kwh(first_h * HOUR_S)
        + g_per_kwh((first_h + 1) * HOUR_S)
        + 0.5 * g_per_kwh((first_h + 2) * HOUR_S)
    ) / 2
    assert jobs(path)["train"]["intensity_g_per_kwh"] == pytest.approx(expected)


def _hours(path: Path) -> list[int]:
    with Ledger(path.parent / "ledger.db") as ledger:
        return [h.hour for h in ledger.grid_hours("dc", 0, 2**40)]
