"""A year of hourly grid intensity for 10 sites, fetched from the fake providers.

Usage: python bench/grid_sync.py. Two sites per provider (Electricity Maps, WattTime,
NESO, ENTSO-E, EIA), each fetching 2025 whole: 8,760 hours a site, in the windows its
provider allows (Electricity Maps 37 requests of 240 h, WattTime 13 of 30 days of
5-minute values, NESO 27 of 14 days of half hours, ENTSO-E one year of XML, EIA 13
months of 5,000-row pages). The fakes (tests/support/grid_fakes.py) run in their own process,
as a provider is on its own machine, over loopback HTTP; the time runs from the first
request to the last hour written: each site's hours go into a SQLite ledger's grid
table window by window as ``jobcarbon grid sync`` writes them (``daemons.gridsync``),
first one site after another, then all ten at once into a fresh ledger (a thread and
a connection a site, as a sync waiting on ten providers' networks would). Figures
only; nothing is asserted. The issue's target: the whole sync in under 10 s.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fakes live with the tests

from tests.support.grid_fakes import FakeProvider, serving  # noqa: E402

from jobcarbon.daemons.gridsync import sync_site  # noqa: E402
from jobcarbon.ledger import Ledger  # noqa: E402
from jobcarbon.sources.grid import Http, ProviderSettings, client  # noqa: E402

SINCE, UNTIL = datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
SITES = [
    ("electricitymaps", "DE"),
    ("electricitymaps", "FR"),
    ("watttime", "CAISO_NORTH"),
    ("watttime", "PJM_DC"),
    ("uk-carbon-intensity", "national"),
    ("uk-carbon-intensity", "13"),
    ("entsoe", "10YBE----------2"),
    ("entsoe", "10YNL----------L"),
    ("eia", "CISO"),
    ("eia", "ERCO"),
]
CREDENTIALS = {"watttime": "bench:s3cret"}


def serve(kinds: list[str], conn: multiprocessing.connection.Connection) -> None:
    with ExitStack() as stack:
        urls = {}
        for kind in kinds:
            fake = FakeProvider(kind, credential=CREDENTIALS.get(kind, "s3cret"))
            urls[kind] = stack.enter_context(serving(fake)).url
        conn.send(urls)
        conn.recv()  # until the bench is done


def main() -> None:
    kinds = sorted({kind for kind, _ in SITES})
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(kinds, child), daemon=True)
    server.start()
    urls: dict[str, str] = parent.recv()
    print(f"python {sys.version.split()[0]}; a year ({SINCE:%Y}) of hours for {len(SITES)} sites")
    for kind in kinds:
        os.environ[f"BENCH_{kind.upper().replace('-', '_')}"] = CREDENTIALS.get(kind, "s3cret")

    workdir = Path(tempfile.mkdtemp(prefix="jobcarbon-bench-"))
    ledger_path = workdir / "sequential.db"

    def sync(site: tuple[str, str]) -> tuple[int, float]:
        kind, zone = site
        env = f"BENCH_{kind.upper().replace('-', '_')}"
        settings = ProviderSettings(kind, zone, urls[kind], token_env=env)
        t0 = time.perf_counter()
        with Ledger(ledger_path) as ledger:
            result = sync_site(ledger, f"{kind}:{zone}", client(settings, Http(kind)), SINCE, UNTIL)
        if result.error is not None:
            raise SystemExit(f"{kind} {zone}: {result.error}")
        return result.hours_written, time.perf_counter() - t0

    Ledger(ledger_path).close()  # created (migrated) before the clock starts

    t_all = time.perf_counter()
    total = 0
    for kind, zone in SITES:
        hours, seconds = sync((kind, zone))
        total += hours
        print(f"  {kind:<20} {zone:<18} {hours:>6,} hours in {seconds:6.2f} s")
    print(f"one site after another: {total:,} hours in {time.perf_counter() - t_all:.2f} s")
    ledger_path = workdir / "concurrent.db"
    Ledger(ledger_path).close()
    t_all = time.perf_counter()
    with ThreadPoolExecutor(len(SITES)) as pool:
        total = sum(hours for hours, _ in pool.map(sync, SITES))
    elapsed = time.perf_counter() - t_all
    print(f"all sites at once: {total:,} hours in {elapsed:.2f} s (target: under 10 s)")
    parent.send("done")
    server.join(timeout=10)
    shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
