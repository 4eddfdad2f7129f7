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
    ]
    return "\n".join(lines)
