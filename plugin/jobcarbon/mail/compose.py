"""The monthly e-mails: who gets one, what it says, and sending it once and only once.

A report becomes a message with a plain-text and an HTML alternative, rendered from
Jinja2 templates (a site's ``mail.templates_dir`` first, the bundled ones after). The
HTML has no scripts and no external images: its chart is table cells, which every
mail client draws. Addresses come from a CSV map, a command or a template, in that
order; a user none of them resolves is reported, never guessed.

Sending is safe to repeat: each message the SMTP server accepts is logged in the
ledger at once, so a re-run (after a crash, or the server going away) sends only what
is left. A temporary failure (4xx, a dropped connection) is retried with backoff; a
permanent one (5xx for a recipient) fails that person only; a failure that would fail
everyone (no server, bad login, sender refused) stops the run with ``MailError``.
"""

from __future__ import annotations

import base64
import csv
import email.policy
import functools
import hashlib
import random
import re
import secrets
import smtplib
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import jinja2

from .. import quantity
from ..backoff import backoff_s
from ..config import Config, MailConfig
from ..errors import ConfigError, MailError
from ..ledger import FactorsUsed, Ledger, MailSent
from ..report import MonthlyReport

ADDRESS = re.compile(r"^[^@\s<>,]+@[^@\s<>,]+$")
COMMAND_TIMEOUT_S = 10.0


# --- addresses -----------------------------------------------------------------------------


class AddressBook:
    """Resolves user names (and project leads) to e-mail addresses."""

    def __init__(
        self,
        config: Config,
        run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    ) -> None:
        self.mail = config.mail
        self._run = run
        self._map = _read_address_map(config.path(m)) if (m := self.mail.address_map) else {}
        self._opted_out = _read_opt_out(config.path(o)) if (o := self.mail.opt_out_file) else set()

    def opted_out(self, user: str) -> bool:
        return user in self._opted_out

    def address(self, user: str) -> str | None:
        """The user's address, or None when nothing configured knows it."""
        if user in self._map:
            return self._map[user]
        if self.mail.address_command:
            found = self._from_command(user)
            if found:
                return found
        if self.mail.address_template:
            candidate = self.mail.address_template.replace("{user}", user)
            return candidate if ADDRESS.match(candidate) else None
        return None

    def _from_command(self, user: str) -> str | None:
        argv = [*(self.mail.address_command or []), user]
        try:
            done = self._run(
                argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ConfigError([f"mail.address_command: cannot run {argv[0]!r}: {err}"]) from err
        line = done.stdout.strip().splitlines()[0].strip() if done.stdout.strip() else ""
        return line if done.returncode == 0 and ADDRESS.match(line) else None

    def recipients(self, report: MonthlyReport) -> tuple[list[str], str]:
        """The addresses a report goes to, or none and the reason."""
        if report.audience == "user":
            if self.opted_out(report.name):
                return [], "opted out"
            address = self.address(report.name)
            if address is None:
                return [], "no address (not in address_map, address_command or template)"
            return [address], ""
        leads = self.mail.project_leads.get(report.name)
        if not leads:
            return [], f"no lead for project {report.name!r} in mail.project_leads"
        addresses: list[str] = []
        unknown: list[str] = []
        for lead in leads:
            if ADDRESS.match(lead):
                addresses.append(lead)
            elif not self.opted_out(lead):
                found = self.address(lead)
                (addresses if found else unknown).append(found or lead)
        if not addresses:
            why = f"no address for lead(s) {', '.join(unknown)}" if unknown else "leads opted out"
            return [], why
        return addresses, ""


def _read_address_map(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"mail.address_map: cannot read {path}: {err.strerror}"]) from err
    rows = csv.reader(text.splitlines())
    header = [h.strip() for h in next(rows, [])]
    if header != ["user", "address"]:
        raise ConfigError([f"mail.address_map: {path}: header must be 'user,address'"])
    found: dict[str, str] = {}
    problems: list[str] = []
    for line_no, row in enumerate(rows, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or not row[0].strip() or not ADDRESS.match(row[1].strip()):
            problems.append(f"mail.address_map: {path} line {line_no}: not 'user,address': {row}")
            continue
        found[row[0].strip()] = row[1].strip()
    if problems:
        raise ConfigError(problems)
    return found


def _read_opt_out(path: Path) -> set[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ConfigError([f"mail.opt_out_file: cannot read {path}: {err.strerror}"]) from err
    return {s for line in lines if (s := line.split("#", 1)[0].strip())}


# --- messages ------------------------------------------------------------------------------


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


def file_stem(report: MonthlyReport) -> str:
    """A safe file name for a report's preview."""
    return f"{report.month}-{report.audience}-{re.sub(r'[^A-Za-z0-9_.-]', '_', report.name)}"


# --- sending -------------------------------------------------------------------------------


class TemporaryFailure(Exception):
    """Worth trying again later (4xx, connection dropped)."""


class PermanentFailure(Exception):
    """This message will never be accepted as it is (5xx for its recipients)."""


class SmtpSender:
    """One SMTP connection, reopened as needed, paced to ``mail.max_per_minute``."""

    def __init__(
        self,
        mail: MailConfig,
        password: str | None,
        ca_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.mail = mail
        self._password = password
        self._ca_file = ca_file
        self._clock = clock
        self._sleep = sleep
        self._smtp: smtplib.SMTP | None = None
        self._last_send: float | None = None

    def send(self, composed: Composed) -> None:
        self._pace()
        try:
            smtp = self._smtp or self._connect()
            # recipients refused while others accepted are not reported: the message is out
            smtp.sendmail(self.mail.from_address, list(composed.to), composed.eml)
        except smtplib.SMTPRecipientsRefused as err:
            self._classify_refused(err.recipients)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as err:
            if 500 <= err.smtp_code < 600:
                if isinstance(err, smtplib.SMTPSenderRefused):
                    raise MailError(f"the SMTP server refuses the sender: {err}") from err
                raise PermanentFailure(f"{err.smtp_code} {_text(err.smtp_error)}") from err
            self.close()
            raise TemporaryFailure(f"{err.smtp_code} {_text(err.smtp_error)}") from err
        except (smtplib.SMTPException, OSError) as err:
            self.close()
            raise TemporaryFailure(f"{type(err).__name__}: {err}") from err
        finally:
            self._last_send = self._clock()

    def _classify_refused(self, refused: dict[str, tuple[int, bytes]]) -> None:
        reasons = "; ".join(f"{a}: {code} {_text(text)}" for a, (code, text) in refused.items())
        if any(400 <= code < 500 for code, _ in refused.values()):
            raise TemporaryFailure(reasons)
        raise PermanentFailure(reasons)

    def _pace(self) -> None:
        if self._last_send is None:
            return
        wait = 60.0 / self.mail.max_per_minute - (self._clock() - self._last_send)
        if wait > 0:
            self._sleep(wait)

    def _connect(self) -> smtplib.SMTP:
        mail = self.mail
        context = ssl.create_default_context(cafile=str(self._ca_file) if self._ca_file else None)
        try:
            smtp: smtplib.SMTP
            if mail.security == "tls":
                smtp = smtplib.SMTP_SSL(
                    mail.smtp_host, mail.smtp_port, timeout=mail.timeout_s, context=context
                )
            else:
                smtp = smtplib.SMTP(mail.smtp_host, mail.smtp_port, timeout=mail.timeout_s)
                if mail.security == "starttls":
                    smtp.starttls(context=context)
            if mail.username:
                smtp.login(mail.username, self._password or "")
        except smtplib.SMTPAuthenticationError as err:
            raise MailError(f"the SMTP server refused the login of {mail.username!r}") from err
        except smtplib.SMTPNotSupportedError as err:
            raise MailError(
                f"{mail.smtp_host}:{mail.smtp_port}: {err} "
                "Check mail.security, mail.smtp_port and mail.username"
            ) from err
        except ssl.SSLError as err:
            raise MailError(
                f"TLS with {mail.smtp_host}:{mail.smtp_port} failed: {err.reason or err}; "
                "check mail.security, mail.smtp_port and mail.tls_ca_file"
            ) from err
        self._smtp = smtp
        return smtp

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


# --- a month's run -------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What a run did: per person, sent (or written), skipped or failed, with why."""

    done: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    stopped: MailError | None = None  # why the run ended early; the rest is for next time


class Postman:
    """Writes previews and/or sends a month's reports, logging each accepted message."""

    def __init__(
        self,
        ledger: Ledger,
        book: AddressBook,
        composer: Composer,
        sender: SmtpSender | None = None,
        out_dir: Path | None = None,
        resend: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.ledger = ledger
        self.book = book
        self.composer = composer
        self.sender = sender
        self.out_dir = out_dir
        self.resend = resend
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()

    def deliver(
        self, reports: Iterable[MonthlyReport], step: Callable[[], None] = lambda: None
    ) -> Outcome:
        """Handle every report; a ``MailError`` stops the run (what was sent stays logged)."""
        outcome = Outcome()
        logged: dict[tuple[str, str], dict[str, MailSent]] = {}
        todo: list[tuple[MonthlyReport, tuple[str, ...]]] = []
        try:
            for report in reports:
                to = self._recipients(report, outcome, logged)
                if to:
                    todo.append((report, to))
                else:
                    step()
            now = self._clock()
            for report, to in todo:
                self._one(self.composer.compose(report, to, now), outcome)
                step()
        except MailError as err:
            outcome.stopped = err
        finally:
            if self.sender is not None:
                self.sender.close()
        return outcome

    def _recipients(
        self,
        report: MonthlyReport,
        outcome: Outcome,
        logged: dict[tuple[str, str], dict[str, MailSent]],
    ) -> tuple[str, ...]:
        """Where the report goes; empty (and noted in ``outcome``) when it is skipped."""
        key = (report.month, report.audience)
        if key not in logged:
            logged[key] = self.ledger.mail_sent(*key)
        to, why = self.book.recipients(report)
        if not to:
            outcome.skipped.append((report.name, why))
            return ()
        earlier = logged[key].get(report.name)
        if self.sender is not None and earlier and not self.resend:
            when = datetime.fromtimestamp(earlier.sent_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
            outcome.skipped.append((report.name, f"already sent to {earlier.address} {when}"))
            return ()
        return tuple(to)

    def _one(self, composed: Composed, outcome: Outcome) -> None:
        report = composed.report
        if self.out_dir is not None:
            self._write(composed)
        if self.sender is not None:
            error = self._send(composed)
            if error:
                outcome.failed.append((report.name, error))
                return
            sent = MailSent(
                report.name, ", ".join(composed.to), composed.message_id, _epoch(self._clock())
            )
            self.ledger.log_mail(report.month, report.audience, sent)
        outcome.done.append(report.name)

    def _send(self, composed: Composed) -> str:
        """Send with retries; the reason it failed for good, or "" when accepted."""
        assert self.sender is not None
        retries = self.sender.mail.retries
        for attempt in range(retries + 1):
            try:
                self.sender.send(composed)
                return ""
            except PermanentFailure as err:
                return f"refused: {err}"
            except TemporaryFailure as err:
                if attempt == retries:
                    if _connection_lost(err):
                        raise MailError(
                            f"the SMTP server is unreachable after {retries + 1} tries ({err}); "
                            "what was sent is logged: run again to send the rest"
                        ) from err
                    return f"temporary failure, {retries + 1} tries: {err}"
                first = self.sender.mail.retry_first_s
                self._sleep(backoff_s(attempt + 1, first, first * 2**retries, self._rng))
        raise AssertionError("unreachable")

    def _write(self, composed: Composed) -> None:
        assert self.out_dir is not None
        stem = self.out_dir / file_stem(composed.report)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            # not with_suffix: a dot in the name (john.doe) is not a suffix to replace
            stem.with_name(f"{stem.name}.eml").write_bytes(composed.eml)
            stem.with_name(f"{stem.name}.html").write_text(composed.html, encoding="utf-8")
        except OSError as err:
            raise MailError(f"cannot write the preview {stem}: {err.strerror}") from err


def _connection_lost(err: TemporaryFailure) -> bool:
    cause = err.__cause__
    return isinstance(cause, OSError | smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError)


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())
