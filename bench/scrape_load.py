"""`jobcarbon serve` under load: 16 concurrent scrapers for 10 s over a 100k-job ledger
with 5,000 label sets, while a collector writes 100 jobs a second.

Usage: python bench/scrape_load.py [--jobs 100000] [--scrapers 16] [--seconds 10].
The exporter runs as its own process (`jobcarbon serve`, as deployed); the scrapers
are threads here, each scraping again as soon as it has its answer. Prints, with
gzip (as Prometheus asks) and without: scrapes/s, p50/p99 latency and the errors
(any answer but 200 with ``jobcarbon_ledger_up 1``); then gzip's size and time at
three levels; then what the ways of reading the ledger from request threads cost.
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from jobcarbon.exporter import Exporter, LedgerCollector
from jobcarbon.ledger import Ledger
from scrape import CONFIG, jobs

HEAD_BYTES = 65536
SITE = {
    "sites": {"s": {"pue": 1.3, "grid": {"intensity_g_per_kwh": 300}}},
    "clusters": {"bench": {"site": "s"}},
}


def scrape(port: int, compressed: bool) -> tuple[float, bool]:
    """One scrape: its latency in ms, and whether it answered 200 with ledger_up 1."""
    headers = {"Accept-Encoding": "gzip"} if compressed else {}
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/metrics", headers=headers)
        response = connection.getresponse()
        body = response.read()
    except OSError:
        return (time.perf_counter() - started) * 1000, False
    finally:
        connection.close()
    elapsed_ms = (time.perf_counter() - started) * 1000
    # ledger_up is in the first lines: unpack only those (the scrapers share this
    # process's CPU; unpacking all 6.8 MB would measure the client, not the exporter)
    head = body[:HEAD_BYTES]
    if response.getheader("Content-Encoding") == "gzip":
        head = zlib.decompressobj(wbits=31).decompress(body, HEAD_BYTES)
    return elapsed_ms, response.status == 200 and b"\njobcarbon_ledger_up 1.0\n" in head


def load(port: int, scrapers: int, seconds: float, compressed: bool) -> None:
    deadline = time.monotonic() + seconds

    def scraper() -> list[tuple[float, bool]]:
        results = []
        while time.monotonic() < deadline:
            results.append(scrape(port, compressed))
        return results

    with ThreadPoolExecutor(scrapers) as pool:
        futures = [pool.submit(scraper) for _ in range(scrapers)]
        results = [result for future in futures for result in future.result()]
    latencies = sorted(ms for ms, _ in results)
    errors = sum(not ok for _, ok in results)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"  {'gzip    ' if compressed else 'identity'}: {len(results) / seconds:6.1f} scrapes/s, "
        f"p50 {statistics.median(latencies):6.1f} ms, p99 {p99:6.1f} ms, "
        f"{len(results):,} scrapes, {errors} errors"
    )


def alone(port: int) -> None:
    for compressed in (True, False):
        latencies = [scrape(port, compressed)[0] for _ in range(20)]
        print(
            f"  one scraper alone, {'gzip' if compressed else 'identity'}: "
            f"median {statistics.median(latencies):.1f} ms"
        )


def with_idle_connections(port: int, idle: int = 200) -> None:
    """Scrapes while ``idle`` connections are open and silent (half a request each)."""
    connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(idle)]
    try:
        for connection in connections:
            connection.sendall(b"GET /metr")
        results = [scrape(port, True) for _ in range(20)]
        print(
            f"  one scraper, gzip, with {idle} idle half-open connections: median "
            f"{statistics.median(ms for ms, _ in results):.1f} ms, "
            f"{sum(not ok for _, ok in results)} errors"
        )
    finally:
        for connection in connections:
            connection.close()


def compression(body: bytes) -> None:
    print(f"gzip of one exposition ({len(body) / 1e6:.2f} MB):")
    for level in (1, 6, 9):
        times = []
        for _ in range(5):
            started = time.perf_counter()
            packed = gzip.compress(body, level, mtime=0)
            times.append((time.perf_counter() - started) * 1000)
        print(
            f"  level {level}: {len(packed) / 1e3:7.0f} kB ({len(body) / len(packed):4.1f}x "
            f"smaller), {statistics.median(times):5.1f} ms to compress"
        )


def reading_options(path: Path) -> None:
    """Per scrape: a connection of its own (open, read the version, close), or a call
    to the one reader thread that keeps its connection open."""
    opened = []
    for _ in range(50):
        started = time.perf_counter()
        with Ledger(path, migrate=False, busy_timeout_s=1.0) as ledger:
            ledger.data_version()
        opened.append((time.perf_counter() - started) * 1000)
    collector = LedgerCollector(path, CONFIG)
    collector.data_version()
    hopped = []
    for _ in range(50):
        started = time.perf_counter()
        collector.data_version()
        hopped.append((time.perf_counter() - started) * 1000)
    exporter = Exporter(LedgerCollector(path, CONFIG))
    started = time.perf_counter()
    exporter.render()
    full_ms = (time.perf_counter() - started) * 1000
    print(
        "reading the ledger from request threads, per scrape:\n"
        f"  a connection per scrape (or per request thread, one per connection): open + "
        f"version + close {statistics.median(opened):.2f} ms, and as PRAGMA data_version "
        f"compares only on one connection, a full render every scrape: {full_ms:.0f} ms\n"
        f"  one reader thread with its own connection (what serve does): "
        f"{statistics.median(hopped):.3f} ms a call, the cache kept"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--scrapers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        with Ledger(path) as ledger:
            for first in range(0, args.jobs, 10_000):
                ledger.write(jobs(first, min(10_000, args.jobs - first)))
            label_sets = len(ledger.aggregates())
        config = Path(tmp) / "site.yaml"
        config.write_text(yaml.safe_dump({**SITE, "ledger": {"url": f"sqlite:///{path}"}}))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "jobcarbon", "--config", str(config), "serve"),
                *("--listen", f"127.0.0.1:{port}"),
            ],
            stderr=subprocess.DEVNULL,
        )
        stop = threading.Event()

        def collector() -> None:  # 100 new jobs a second, as a collector writes them
            ids = iter(range(10**8, 10**9, 100))
            with Ledger(path) as ledger:
                while not stop.wait(1.0):
                    ledger.write(jobs(next(ids), 100))

        writer = threading.Thread(target=collector)
        try:
            while not scrape(port, True)[1]:  # listening, and the first render done
                time.sleep(0.1)
            print(
                f"{args.scrapers} scrapers for {args.seconds:g} s, {args.jobs:,} jobs in "
                f"{label_sets:,} label sets, 100 new jobs a second:"
            )
            writer.start()
            load(port, args.scrapers, args.seconds, compressed=True)
            load(port, args.scrapers, args.seconds, compressed=False)
            alone(port)
            with_idle_connections(port)
        finally:
            stop.set()
            if writer.is_alive():
                writer.join()
            server.terminate()
            server.wait()
        exporter = Exporter(LedgerCollector(path, CONFIG))
        compression(exporter.render())
        reading_options(path)


if __name__ == "__main__":
    main()
