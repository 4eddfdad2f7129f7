"""``jobcarbon estimate``: the seed paper's calculator, from the command line."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--hardware", help='Device name from `jobcarbon factors hardware` ("V100", "H100 SXM").'
)
@click.option("--tdp-w", type=float, help="Or: the device's power in watts.")
@click.option("--count", type=int, help="Number of devices [default: 1 with --hours].")
@click.option(
    "--hours",
    type=float,
    help="Hours each device ran; with one device, the total device-hours a paper reports.",
)
@click.option(
    "--device-hours",
    type=float,
    help="Or: total device-hours (GPU-hours) as papers and model cards publish them.",
)
@click.option("--region", help="Region key (FR, US-CA, aws:us-east-1, gcp:europe-west1).")
@click.option("--intensity-g-per-kwh", type=float, help="Or: grid intensity in gCO2e/kWh.")
@click.option(
    "--dataset",
    default="current",
    show_default=True,
    help="Region table vintage; mlco2-impact-2019 reproduces the seed calculator.",
)
@click.option("--pue", type=float, default=1.0, show_default=True, help="Data-centre PUE.")
@click.option(
    "--utilization",
    type=float,
    default=1.0,
    show_default=True,
    help="Average device utilisation, 0 to 1.",
)
@click.option(
    "--embodied",
    metavar="NODE",
    help="Also the devices' share of this node's (or accelerator's) embodied emissions, "
    'from the bundled table ("p4d.24xlarge", "A100 (BLOOM)").',
)
@click.option(
    "--lifetime-years", type=float, help="With --embodied: the lifetime [default: the source's]."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--latex", is_flag=True, help="A paper-ready LaTeX statement.")
@click.option("--markdown", is_flag=True, help="A paper-ready Markdown statement.")
def estimate(
    hardware: str | None,
    tdp_w: float | None,
    count: int | None,
    hours: float | None,
    device_hours: float | None,
    region: str | None,
    intensity_g_per_kwh: float | None,
    dataset: str,
    pue: float,
    utilization: float,
    embodied: str | None,
    lifetime_years: float | None,
    as_json: bool,
    latex: bool,
    markdown: bool,
) -> None:
    """Energy and emissions of a run: the seed paper's calculator (TDP × hours × grid).

    \b
    A paper's published figure, as published (Llama 2 7B's model card):
      jobcarbon estimate --tdp-w 400 --device-hours 184320 --pue 1.1 \\
          --intensity-g-per-kwh 385
    """
    from .. import estimate as calc

    if sum([as_json, latex, markdown]) > 1:
        raise click.UsageError("choose one of --json, --latex, --markdown")
    result = calc.estimate(
        hardware=hardware,
        tdp_w=tdp_w,
        count=count,
        hours=hours,
        device_hours=device_hours,
        region=region,
        intensity_g_per_kwh=intensity_g_per_kwh,
        dataset=dataset,
        pue=pue,
        utilization=utilization,
        embodied=embodied,
        lifetime_years=lifetime_years,
    )
    if as_json:
        click.echo(result.to_json())
    elif latex:
        click.echo(calc.render_latex(result))
    elif markdown:
        click.echo(calc.render_markdown(result))
    else:
        click.echo(calc.render_text(result))
