"""SIGHUP's config reload in the pod watcher (the collector's: tests/sources/test_collector.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from jobcarbon.config import load_config
from jobcarbon.daemons.reload import Reloader
from jobcarbon.daemons.watcher import Watcher
from jobcarbon.ledger import Ledger
from tests.support.config import make_config


def write_config(path: Path, rules: list[dict[str, Any]], **extra: Any) -> Path:
    path.write_text(
        yaml.safe_dump(
            make_config(
                cluster="k8s",
                clusters={"k8s": {"hardware": rules}},
                ledger={"url": "sqlite:///ledger.db"},
                **extra,
            )
        )
    )
    return path


def test_the_watcher_takes_a_new_config_and_refuses_a_broken_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(tmp_path / "config.yaml", [])
    with Ledger(tmp_path / "ledger.db") as ledger:
        watcher = Watcher(load_config(path), ledger, api=None)  # type: ignore[arg-type]
        reloader = Reloader(lambda: load_config(path))
        rule = {"match": {"node_label": {"gpu": "a100"}}, "gpu_model": "A100 SXM4 80 GB"}
        write_config(path, [rule])
        reloader.request()
        assert reloader.take(watcher.reload)
        assert watcher.config.clusters["k8s"].hardware[0].gpu_model == "A100 SXM4 80 GB"
        assert watcher.grid.accountant.config is watcher.config
        kept = watcher.config
        write_config(path, [rule], kubernetes={"cluster": "elsewhere"})
        reloader.request()
        assert not reloader.take(watcher.reload)
        assert watcher.config is kept
    assert "kubernetes.cluster: unknown cluster 'elsewhere'" in caplog.text
    assert "config not reloaded, still using the one before" in caplog.text
