"""A month's run: previews written and/or messages sent, each accepted message logged
in the ledger at once with the figures it told (so a re-run sends only what is left,
and names the messages a recompute has changed the figures of since), temporary
failures retried with backoff.
"""

from __future__ import annotations

import random
import re
import smtplib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .. import quantity
from ..backoff import backoff_s
from ..errors import MailError, PermanentError, TemporaryError
from ..ledger import Ledger, MailSent
from ..report import MonthlyReport
from .addresses import AddressBook
from .compose import Composed, Composer
from .smtp import SmtpSender


@dataclass(slots=True)
class Outcome:
    """What a run did: per person, sent (or written), skipped or failed, with why."""

    done: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: of the skipped, those already sent with other figures than the ledger has now
    outdated: list[str] = field(default_factory=list)
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
            why = f"already sent to {earlier.address} {when}"
            changed = _changed_since(earlier, report)
            if changed:
                outcome.outdated.append(report.name)
                why += f"; {changed}"
            outcome.skipped.append((report.name, why))
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
                report.name,
                ", ".join(composed.to),
                composed.message_id,
                _epoch(self._clock()),
                report.totals.energy_kwh,
                report.totals.co2e_kg,
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
            except PermanentError as err:
                return f"refused: {err}"
            except TemporaryError as err:
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


def _connection_lost(err: TemporaryError) -> bool:
    cause = err.__cause__
    return isinstance(cause, OSError | smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError)


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def file_stem(report: MonthlyReport) -> str:
    """A safe file name for a report's preview."""
    return f"{report.month}-{report.audience}-{re.sub(r'[^A-Za-z0-9_.-]', '_', report.name)}"


def _changed_since(sent: MailSent, report: MonthlyReport) -> str:
    """How the figures a message told differ from the report's now (a recompute since),
    in words; "" when they agree to three significant figures, as the message shows
    them, or the message was logged without figures (before schema v12)."""
    if sent.co2e_kg is None or sent.energy_kwh is None:
        return ""
    now = report.totals
    told = (quantity.energy(sent.energy_kwh), quantity.co2e(sent.co2e_kg))
    if told == (quantity.energy(now.energy_kwh), quantity.co2e(now.co2e_kg)):
        return ""
    return (
        f"its figures have changed since ({told[0]}, {told[1]} CO2e sent; now "
        f"{quantity.energy(now.energy_kwh)}, {quantity.co2e(now.co2e_kg)} CO2e)"
    )
