"""The metrics reference (docs/metrics.md), generated from the metric list."""

from __future__ import annotations

from .spec import METRICS


def metrics_reference() -> str:
    """The metrics reference (docs/metrics.md), generated from ``METRICS``."""
    lines = [
        "# jobcarbon metrics",
        "",
        "Generated from `plugin/jobcarbon/exporter/spec.py` by `jobcarbon metrics --docs`; "
        "do not edit.",
        "",
        "| metric | type | unit | labels | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in METRICS:
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "none"
        lines.append(f"| `{spec.name}` | {spec.type} | {spec.unit} | {labels} | {spec.help} |")
    lines += [
        "",
        "Label values: `state` is the job's final state (completed, failed, "
        "cancelled, timeout, out_of_memory, node_fail, preempted, requeued, boot_fail, "
        "deadline); `method` is measured, mixed or estimated; `gpu_model` is empty for "
        "jobs without GPUs. With `exporter.drop_user_label: true` every `user` label is "
        "empty (its series summed). A job belongs to the series of its final labels; a "
        "re-accounted job moves between series.",
        "",
        "## Counters that never go down",
        "",
        "The ledger's totals change when `jobcarbon ledger recompute` lowers a footprint "
        "or a re-accounted job moves to other labels. So that no counter ever decreases "
        "(Prometheus would take it for a reset and count the whole series again in "
        "`increase()` and `rate()`), each per-job counter counts only what was added, and "
        "its twin `..._removed_..._total` (same labels) what was taken away. The ledger "
        "keeps both per label set, a batch at a time: it nets the batch's change (new "
        "rows minus the rows they replace) per label set, then adds its rise to the "
        "counter and its fall to the twin. A label set that no longer holds any job keeps "
        "being served with its last values.",
        "",
        "- The ledger's change over a window `w`: "
        "`increase(jobcarbon_co2e_grams_total[w]) - "
        "increase(jobcarbon_co2e_removed_grams_total[w])` (likewise `rate()`).",
        "- What the ledger holds now: `jobcarbon_co2e_grams_total - "
        "jobcarbon_co2e_removed_grams_total` (the sum over jobs rows, as `jobcarbon "
        "summary` prints it).",
        "- `jobcarbon_co2e_grams_total` is location-based Scope 2 (the grid's average); "
        "`jobcarbon_co2e_market_grams_total` is market-based (the sites' contracts).",
        "",
    ]
    return "\n".join(lines)
