"""A monthly report as an e-mail: rendered from the Jinja2 templates (a site's
``mail.templates_dir`` first, the bundled ones after) into a plain-text and an HTML
alternative, and assembled into the bytes to send.
"""

from __future__ import annotations

import base64
import email.policy
import functools
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

import jinja2

from .. import embodied, quantity
from ..config import Config
from ..errors import ConfigError
from ..ledger import FactorsUsed
from ..report import MonthlyReport
from ..site import MarketSource


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


class Composer:
    """Renders reports with the site's templates (or the bundled ones) into messages."""

    def __init__(self, config: Config) -> None:
        self.mail = config.mail
        loaders: list[jinja2.BaseLoader] = []
        if self.mail.templates_dir is not None:
            loaders.append(jinja2.FileSystemLoader(config.path(self.mail.templates_dir)))
        loaders.append(jinja2.PackageLoader("jobcarbon", "templates"))
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(["html.j2"]),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters.update(
            num=_num,
            sig=quantity.significant,
            co2e=quantity.co2e,
            energy=quantity.energy,
            co2e_range=quantity.co2e_range,
            percent=quantity.percent,
            bar=_bar_percent,
            month_name=_month_name,
            largest_jobs_title=_largest_jobs_title,
            place=_place,
            factors_line=_factors_line,
            no_energy_line=_no_energy_line,
            scope2_line=_scope2_line,
            embodied_line=_embodied_line,
            questions=_questions,
        )

    def render(self, report: MonthlyReport) -> Rendered:
        context = {"r": report, "method_url": self.mail.method_url, "reply_to": self.mail.reply_to}
        try:
            subject = self._env.get_template("monthly_subject.txt.j2").render(context)
            text = self._env.get_template("monthly.txt.j2").render(context)
            html = self._env.get_template("monthly.html.j2").render(context)
        except jinja2.TemplateError as err:
            raise ConfigError([f"mail.templates_dir: {_template_position(err)}: {err}"]) from err
        # the templates' indentation is for their readers, not for the wire
        html = "\n".join(stripped for line in html.splitlines() if (stripped := line.strip()))
        return Rendered(" ".join(subject.split()), text, html)

    def compose(self, report: MonthlyReport, to: Sequence[str], now: datetime) -> Composed:
        """The message as sent (bytes, CRLF line ends) and its HTML for a preview.

        multipart/alternative with a text/plain and a text/html part, each UTF-8 in
        base64. Assembled here rather than with ``EmailMessage``, which takes ten
        times as long (3.5 against 0.34 ms a message): the headers are still folded
        and encoded by the ``email`` package's SMTP policy.
        """
        rendered = self.render(report)
        identifier = message_id(report, self.mail.from_address)
        headers = [("From", self.mail.from_address)]
        if to:
            headers.append(("To", ", ".join(to)))
        if self.mail.reply_to:
            headers.append(("Reply-To", self.mail.reply_to))
        headers += [
            ("Subject", rendered.subject),
            ("Date", format_datetime(now)),
            ("Message-ID", identifier),
            ("Auto-Submitted", "auto-generated"),
            ("MIME-Version", "1.0"),
        ]
        boundary = f"=_{secrets.token_hex(12)}"
        headers.append(("Content-Type", f'multipart/alternative; boundary="{boundary}"'))
        fold = email.policy.SMTP.fold
        eml = b"".join(
            [
                "".join(fold(name, value) for name, value in headers).encode("ascii"),
                f"\r\n--{boundary}\r\n".encode(),
                _utf8_part("text/plain", rendered.text),
                f"--{boundary}\r\n".encode(),
                _utf8_part("text/html", rendered.html),
                f"--{boundary}--\r\n".encode(),
            ]
        )
        return Composed(report, tuple(to), identifier, eml, rendered.html)


def _utf8_part(content_type: str, body: str) -> bytes:
    head = f'Content-Type: {content_type}; charset="utf-8"\r\nContent-Transfer-Encoding: base64'
    encoded = base64.encodebytes(body.encode("utf-8")).replace(b"\n", b"\r\n")
    return f"{head}\r\n\r\n".encode() + encoded


@dataclass(frozen=True, slots=True)
class Composed:
    """A report turned into the bytes to send, with the HTML alone for a preview."""

    report: MonthlyReport
    to: tuple[str, ...]
    message_id: str
    eml: bytes
    html: str


def _template_position(err: jinja2.TemplateError) -> str:
    """Which template file and line an error comes from."""
    if isinstance(err, jinja2.TemplateSyntaxError):
        return f"{err.filename or err.name} line {err.lineno}"
    where = "a template"
    frame = err.__traceback__
    while frame is not None:  # Jinja2 maps rendering frames to the template's lines
        if frame.tb_frame.f_code.co_filename.endswith(".j2"):
            where = f"{frame.tb_frame.f_code.co_filename} line {frame.tb_lineno}"
        frame = frame.tb_next
    return where


def message_id(report: MonthlyReport, from_address: str) -> str:
    """The same report always gets the same Message-ID, so clients can spot a resend."""
    digest = hashlib.sha256(f"{report.audience}\0{report.name}".encode()).hexdigest()[:16]
    domain = from_address.rsplit("@", 1)[-1]
    return f"<jobcarbon.{report.month}.{report.audience}.{digest}@{domain}>"


def _num(value: float, digits: int = 1) -> str:
    """Fixed decimals, for sites' own templates; the bundled ones use ``quantity``."""
    return f"{value:,.{digits}f}"


# The sentences that text and HTML share and that depend on the figures (how many
# jobs, whether a range is one value): written once here, escaped by the HTML.


def _jobs(count: int) -> str:
    return f"{count:,} job" if count == 1 else f"{count:,} jobs"


def _largest_jobs_title(report: MonthlyReport) -> str:
    shown, total = len(report.largest_jobs), report.totals.jobs
    if total == 1:
        return "The month's one job"
    if shown == total:
        return f"All {total:,} jobs, largest first"
    return f"The {shown} largest of the {total:,} jobs"


def _place(report: MonthlyReport) -> str:
    """Where the person (or project) stands among everyone with jobs this month."""
    lower = quantity.percent(report.lower_percent)
    if report.audience == "user":
        if report.peers == 1:
            return "You were the only user who ran jobs this month."
        return (
            f"You emitted more than {lower} % of the {report.peers:,} users who ran jobs "
            "this month."
        )
    if report.peers == 1:
        return "It was the only project with jobs this month."
    return (
        f"The project emitted more than {lower} % of the {report.peers:,} projects with jobs "
        "this month."
    )


def _factors_line(f: FactorsUsed) -> str:
    """The factors behind one site's (and method's) jobs; a range only where they differ."""
    sig = quantity.significant
    pue = quantity.span(sig(f.pue_min), sig(f.pue_max))
    grid = quantity.span(sig(f.intensity_min_g_per_kwh), sig(f.intensity_max_g_per_kwh))
    return (
        f"site {f.site}: PUE {pue}, grid {grid} g CO2e/kWh, {f.method} energy, {_jobs(f.jobs)}, "
        f"factors {f.factors_version}"
    )


def _no_energy_line(report: MonthlyReport) -> str:
    """The jobs the factor lines leave out, so that their counts add up to the month's."""
    return (
        f"{_jobs(report.jobs_without_energy)} used no energy (ended before running, e.g. "
        "cancelled while pending): no factors apply"
    )


def _scope2_line(report: MonthlyReport) -> str:
    """Both Scope 2 figures, each named (GHG Protocol): location-based, the one above, and
    market-based, with the jobs whose market-based figure had a stand-in."""
    t = report.totals
    location = f"{quantity.co2e(t.co2e_kg)} CO2e"
    market = f"{quantity.co2e(t.co2e_market_kg)} CO2e"
    head = (
        f"Counted both ways (GHG Protocol Scope 2): location-based, from the local grid's "
        f"average intensity, {location} as above; market-based, from what the sites buy "
        "(electricity contracts, certificates)"
    )
    sources = dict(report.market_sources)
    if sources and set(sources) == {MarketSource.LOCATION_BASED}:
        return f"{head}, the same {location}: no contracts or residual mix are configured."
    market_range = quantity.co2e_range(t.co2e_market_kg_low, t.co2e_market_kg_high)
    stand_ins = "".join(
        f" For {_jobs(count)} the market-based figure is {MarketSource(source).words}."
        for source, count in report.market_sources
        if source != MarketSource.CONTRACTS
    )
    return f"{head}, {market} (likely {market_range}).{stand_ins}"


def _embodied_line(report: MonthlyReport) -> str:
    """Embodied emissions (Scope 3) in one line, with what the node figures rest on; or
    that the clusters have no embodied settings ("not configured": never a guess)."""
    t = report.totals
    head = (
        "Making the hardware also emits (embodied emissions, Scope 3, shared out over the "
        "hardware's lifetime by the time and share of a node each job used)"
    )
    if not t.embodied_configured:
        return f"{head}: not configured for these clusters, so not counted above or here."
    sources = "; ".join(embodied.source_words(source) for source, _ in report.embodied_sources)
    line = (
        f"{head}: {quantity.co2e(t.co2e_embodied_kg)} CO2e (likely "
        f"{quantity.co2e_range(t.co2e_embodied_kg_low, t.co2e_embodied_kg_high)}), "
        f"from {sources}."
    )
    if t.not_configured_jobs:
        line += f" For {_jobs(t.not_configured_jobs)} it is not configured, so not counted."
    return line


def _questions(reply_to: str | None) -> str:
    """Where questions go: a reply only when replies go somewhere (``mail.reply_to``)."""
    if reply_to:
        return f"Reply to it ({reply_to}) for questions or to stop it."
    return "For questions or to stop it, ask your cluster's administrators."


@functools.cache  # a handful of months, looked up a few times in every e-mail
def _month_name(month: str) -> str:
    return datetime.strptime(month, "%Y-%m").strftime("%B %Y")


def _bar_percent(value: float, largest: float) -> int:
    """Width of a chart bar, 0-100 %, for ``value`` against the largest bar."""
    return round(100 * value / largest) if largest > 0 else 0
