"""Generate the Grafana dashboards in dashboards/ (run `make dashboards`; commit the result).

Three dashboards share one layout grammar: a cluster overview, a project dashboard and a
user dashboard. They are built with Grafana's own typed builders (grafana-foundation-sdk),
so a panel, a query or a variable that Grafana's schema does not know fails here, in
mypy, not in an admin's Grafana. Each has a ``datasource`` variable (no hard-coded UIDs)
and ``cluster``, ``project`` and ``user`` variables from ``label_values``. The test suite
checks that the committed JSON is what this script makes, and runs every expression
against a real Prometheus.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from grafana_foundation_sdk.builders import bargauge, common, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models

DS = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
CO2E = "jobcarbon_co2e_grams_total"
ENERGY = "jobcarbon_energy_joules_total"
GPU_S = "jobcarbon_gpu_seconds_total"
MARKET = "jobcarbon_co2e_market_grams_total"
JOBS = "jobcarbon_jobs_total"
# each counter's twin of what the ledger removed (docs/metrics.md): a change over a
# window is the one's increase less the other's
REMOVED = {
    CO2E: "jobcarbon_co2e_removed_grams_total",
    ENERGY: "jobcarbon_energy_removed_joules_total",
    GPU_S: "jobcarbon_gpu_removed_seconds_total",
    MARKET: "jobcarbon_co2e_market_removed_grams_total",
    JOBS: "jobcarbon_jobs_removed_total",
}
UNSUCCESSFUL = 'state!="completed"'

Kind = Literal["stat", "timeseries", "bargauge"]
Panel = stat.Panel | timeseries.Panel | bargauge.Panel


def variable(name: str, query: str, multi: bool) -> board.QueryVariable:
    return (
        board.QueryVariable(name)
        .label(name)
        .datasource(DS)
        .query(query)
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .include_all(multi)
        .multi(multi)
        .all_value(".*")
        .sort(models.VariableSort.ALPHABETICAL_ASC)
    )


def panel(
    title: str,
    kind: Kind,
    targets: list[tuple[str, str]],
    unit: str,
    pos: tuple[int, int, int, int],
    description: str = "",
) -> Panel:
    x, y, w, h = pos
    instant = kind != "timeseries"  # a stat or a bar is one value per series
    result: Panel
    last_value = common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
    if kind == "stat":
        result = (
            stat.Panel().reduce_options(last_value).graph_mode(common_models.BigValueGraphMode.NONE)
        )
    elif kind == "timeseries":
        result = (
            timeseries.Panel()
            .legend(
                common.VizLegendOptions()
                .show_legend(True)
                .display_mode(common_models.LegendDisplayMode.LIST)
                .placement(common_models.LegendPlacement.BOTTOM)
            )
            .tooltip(
                common.VizTooltipOptions()
                .mode(common_models.TooltipDisplayMode.MULTI)
                .sort(common_models.SortOrder.DESCENDING)
            )
        )
    else:
        result = (
            bargauge.Panel()
            .orientation(common_models.VizOrientation.HORIZONTAL)
            .display_mode(common_models.BarGaugeDisplayMode.BASIC)
            .reduce_options(last_value)
        )
    result.title(title).description(description).datasource(DS).unit(unit)
    result.grid_pos(models.GridPos(x=x, y=y, w=w, h=h))
    for i, (expr, legend) in enumerate(targets):
        query = (
            prometheus.Dataquery()
            .ref_id(chr(65 + i))
            .datasource(DS)
            .expr(expr)
            .legend_format(legend)
        )
        result.with_target(query.instant() if instant else query.range())
    return result


def dashboard(uid: str, title: str, variables: list[str], panels: list[Panel]) -> board.Dashboard:
    queries = {
        "cluster": "label_values(jobcarbon_jobs_total, cluster)",
        "project": 'label_values(jobcarbon_jobs_total{cluster=~"$cluster"}, project)',
        "user": 'label_values(jobcarbon_jobs_total{cluster=~"$cluster", '
        'project=~"$project"}, user)',
    }
    result = (
        board.Dashboard(title)
        .uid(uid)
        .description("jobcarbon: energy and emissions of the jobs in the ledger")
        .tags(["jobcarbon"])
        .timezone("utc")
        .editable()
        .refresh("5m")
        .time("now-30d", "now")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            board.DatasourceVariable("datasource").label("data source").type("prometheus")
        )
    )
    for name in variables:
        result.with_variable(variable(name, queries[name], multi=name == "cluster"))
    for i, item in enumerate(panels):
        result.with_panel(item.id(i + 1))
    return result


def scoped(selector: str) -> dict[str, str]:
    """Expressions for one scope (a label selector), shared by the three dashboards."""

    def inc(metric: str, extra: str = "", window: str = "$__range") -> str:
        """The ledger's change of ``metric`` over ``window``: added less removed."""
        labels = ", ".join(filter(None, [selector, extra]))
        removed = REMOVED[metric]
        return (
            f"(increase({metric}{{{labels}}}[{window}]) - "
            f"increase({removed}{{{labels}}}[{window}]))"
        )

    return {
        "co2e_kg_per_day": f"sum by (cluster) ({inc(CO2E, window='1d')}) / 1000",
        "co2e_kg_per_day_by_project": f"sum by (project) ({inc(CO2E, window='1d')}) / 1000",
        "co2e_kg_per_day_by_partition": f"sum by (partition) ({inc(CO2E, window='1d')}) / 1000",
        "energy_kwh_per_day": f"sum by (component) ({inc(ENERGY, window='1d')}) / 3.6e6",
        "co2e_kg": f"sum({inc(CO2E)}) / 1000",
        "co2e_market_kg": f"sum({inc(MARKET)}) / 1000",
        "co2e_market_kg_per_day": f"sum by (cluster) ({inc(MARKET, window='1d')}) / 1000",
        "energy_kwh": f"sum({inc(ENERGY)}) / 3.6e6",
        "gpu_hours": f"sum({inc(GPU_S)}) / 3600",
        "g_per_gpu_hour": f"sum({inc(CO2E)}) / (sum({inc(GPU_S)}) / 3600)",
        # "or vector(0)": a scope without unsuccessful jobs shows 0 %, not "no data"
        "failed_share": f"(sum({inc(ENERGY, UNSUCCESSFUL)}) or vector(0)) / sum({inc(ENERGY)})",
        "by_project": f"sort_desc(sum by (project) ({inc(CO2E)})) / 1000",
        "by_partition": f"sort_desc(sum by (partition) ({inc(CO2E)})) / 1000",
        "by_gpu_model": f"sort_desc(sum by (gpu_model) ({inc(GPU_S)})) / 3600",
        "top_users": f"topk(10, sum by (user) ({inc(CO2E)})) / 1000",
        "by_state": f"sum by (state) ({inc(ENERGY)}) / 3.6e6",
        "jobs": f"sum by (state) ({inc(JOBS)})",
        # jobs still running (pods): their usage so far, written by the watcher
        "running_gpus": f"sum(jobcarbon_running_gpus{{{selector}}}) or vector(0)",
        "running_co2e_kg": f"sum(jobcarbon_running_co2e_grams{{{selector}}}) / 1000 or vector(0)",
    }


def common_panels(q: dict[str, str], y: int) -> list[Panel]:
    return [
        panel(
            "Emissions",
            "stat",
            [(q["co2e_kg"], "location-based"), (q["co2e_market_kg"], "market-based")],
            "none",
            (0, y, 4, 4),
            "kg CO2e of the jobs that ended in the time range: Scope 2 location-based "
            "(the grid's average) and market-based (the sites' contracts)",
        ),
        panel("Energy", "stat", [(q["energy_kwh"], "kWh")], "kwatth", (4, y, 4, 4)),
        panel("GPU-hours", "stat", [(q["gpu_hours"], "GPU-h")], "none", (8, y, 4, 4)),
        panel(
            "gCO2e per GPU-hour", "stat", [(q["g_per_gpu_hour"], "g/GPU-h")], "none", (12, y, 4, 4)
        ),
        panel(
            "Energy on unsuccessful jobs",
            "stat",
            [(q["failed_share"], "share")],
            "percentunit",
            (16, y, 8, 4),
            "failed, timed-out, cancelled ... jobs",
        ),
        panel(
            "Emissions per day",
            "timeseries",
            [
                (q["co2e_kg_per_day"], "{{cluster}} location-based"),
                (q["co2e_market_kg_per_day"], "{{cluster}} market-based"),
            ],
            "none",
            (0, y + 4, 12, 8),
            "kg CO2e per day, Scope 2 location-based and market-based",
        ),
        panel(
            "Energy per day by component",
            "timeseries",
            [(q["energy_kwh_per_day"], "{{component}}")],
            "kwatth",
            (12, y + 4, 12, 8),
        ),
        panel(
            "GPUs held by running jobs",
            "timeseries",
            [(q["running_gpus"], "GPUs")],
            "none",
            (0, 38, 12, 6),
            "pods still running (the watcher writes them every running_interval_s)",
        ),
        panel(
            "Emissions so far of running jobs",
            "timeseries",
            [(q["running_co2e_kg"], "kg CO2e")],
            "none",
            (12, 38, 12, 6),
            "estimated; a job's final figure lands in the panels above when it ends",
        ),
    ]


def cluster_dashboard() -> board.Dashboard:
    q = scoped('cluster=~"$cluster"')
    panels = [
        *common_panels(q, 0),
        panel(
            "Emissions per day by project",
            "timeseries",
            [(q["co2e_kg_per_day_by_project"], "{{project}}")],
            "none",
            (0, 30, 12, 8),
            "kg CO2e per day",
        ),
        panel(
            "Emissions per day by partition",
            "timeseries",
            [(q["co2e_kg_per_day_by_partition"], "{{partition}}")],
            "none",
            (12, 30, 12, 8),
            "kg CO2e per day",
        ),
        panel(
            "Emissions by project (kg)",
            "bargauge",
            [(q["by_project"], "{{project}}")],
            "none",
            (0, 12, 8, 10),
        ),
        panel(
            "Emissions by partition (kg)",
            "bargauge",
            [(q["by_partition"], "{{partition}}")],
            "none",
            (8, 12, 8, 10),
        ),
        panel(
            "Top users (kg)", "bargauge", [(q["top_users"], "{{user}}")], "none", (16, 12, 8, 10)
        ),
        panel(
            "GPU-hours by GPU model",
            "bargauge",
            [(q["by_gpu_model"], "{{gpu_model}}")],
            "none",
            (0, 22, 8, 8),
        ),
        panel(
            "PUE in use",
            "stat",
            [('jobcarbon_pue_ratio{cluster=~"$cluster"}', "{{cluster}} ({{site}})")],
            "none",
            (8, 22, 4, 4),
        ),
        panel(
            "Grid intensity in use",
            "stat",
            [
                (
                    'jobcarbon_grid_intensity_grams_per_kilowatt_hour{cluster=~"$cluster"}',
                    "{{cluster}} ({{site}})",
                )
            ],
            "none",
            (12, 22, 4, 4),
            "gCO2e/kWh",
        ),
        panel(
            "Minutes since the last job was accounted",
            "stat",
            [
                (
                    "(time() - max by (cluster) "
                    '(jobcarbon_last_job_end_timestamp_seconds{cluster=~"$cluster"})) / 60',
                    "{{cluster}}",
                )
            ],
            "none",
            (16, 22, 4, 4),
        ),
        panel(
            "Ingest errors",
            "stat",
            [("sum by (stage) (increase(jobcarbon_ingest_errors_total[$__range]))", "{{stage}}")],
            "none",
            (20, 22, 4, 4),
        ),
        panel(
            "Seconds since a watcher heard its API server",
            "stat",
            [("time() - jobcarbon_source_last_contact_timestamp_seconds", "{{source}}")],
            "none",
            (0, 44, 6, 4),
        ),
        panel(
            "Watch restarts",
            "stat",
            [
                (
                    "sum by (source, reason) (increase(jobcarbon_source_restarts_total[$__range]))",
                    "{{source}} {{reason}}",
                )
            ],
            "none",
            (6, 44, 6, 4),
        ),
        panel(
            "Jobs pending in collectors",
            "stat",
            [("sum by (source) (jobcarbon_ingest_pending_jobs)", "{{source}}")],
            "none",
            (8, 26, 8, 4),
        ),
        panel(
            "Energy by final state (kWh)",
            "bargauge",
            [(q["by_state"], "{{state}}")],
            "none",
            (16, 26, 8, 4),
        ),
    ]
    return dashboard("jobcarbon-cluster", "jobcarbon / cluster overview", ["cluster"], panels)


def project_dashboard() -> board.Dashboard:
    q = scoped('cluster=~"$cluster", project="$project"')
    panels = [
        *common_panels(q, 0),
        panel(
            "Members by emissions (kg)",
            "bargauge",
            [(q["top_users"], "{{user}}")],
            "none",
            (0, 12, 12, 10),
        ),
        panel(
            "GPU-hours by GPU model",
            "bargauge",
            [(q["by_gpu_model"], "{{gpu_model}}")],
            "none",
            (12, 12, 12, 10),
        ),
        panel(
            "Jobs by final state", "bargauge", [(q["jobs"], "{{state}}")], "none", (0, 22, 12, 8)
        ),
    ]
    return dashboard("jobcarbon-project", "jobcarbon / project", ["cluster", "project"], panels)


def user_dashboard() -> board.Dashboard:
    q = scoped('cluster=~"$cluster", user="$user"')
    panels = [
        *common_panels(q, 0),
        panel(
            "Emissions by project (kg)",
            "bargauge",
            [(q["by_project"], "{{project}}")],
            "none",
            (0, 12, 12, 10),
        ),
        panel(
            "Jobs by final state", "bargauge", [(q["jobs"], "{{state}}")], "none", (12, 12, 12, 10)
        ),
    ]
    return dashboard("jobcarbon-user", "jobcarbon / user", ["cluster", "project", "user"], panels)


DASHBOARDS: dict[str, Callable[[], board.Dashboard]] = {
    "jobcarbon-cluster.json": cluster_dashboard,
    "jobcarbon-project.json": project_dashboard,
    "jobcarbon-user.json": user_dashboard,
}


def render(make: Callable[[], board.Dashboard]) -> str:
    return json.dumps(make().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "dashboards"
    out.mkdir(exist_ok=True)
    for name, make in DASHBOARDS.items():
        (out / name).write_text(render(make))


if __name__ == "__main__":
    main()
