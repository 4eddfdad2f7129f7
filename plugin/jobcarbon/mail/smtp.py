"""Sending over SMTP: one connection, reopened as needed, paced to
``mail.max_per_minute``; each failure said to be temporary (``TemporaryError``: 4xx, a
dropped connection), permanent for this message (``PermanentError``: 5xx for its
recipients) or fatal for the run (``MailError``: no login, the sender refused).
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import MailError, PermanentError, TemporaryError
from ..mailconfig import MailConfig
from .compose import Composed


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
                raise PermanentError(f"{err.smtp_code} {_text(err.smtp_error)}") from err
            self.close()
            raise TemporaryError(f"{err.smtp_code} {_text(err.smtp_error)}") from err
        except (smtplib.SMTPException, OSError) as err:
            self.close()
            raise TemporaryError(f"{type(err).__name__}: {err}") from err
        finally:
            self._last_send = self._clock()

    def _classify_refused(self, refused: dict[str, tuple[int, bytes]]) -> None:
        reasons = "; ".join(f"{a}: {code} {_text(text)}" for a, (code, text) in refused.items())
        if any(400 <= code < 500 for code, _ in refused.values()):
            raise TemporaryError(reasons)
        raise PermanentError(reasons)

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
