"""A real SMTP server on loopback for the mailer's tests: aiosmtpd in a thread.

It keeps what it receives, can refuse chosen recipients (permanently with 550, or
once with 451), speaks STARTTLS or implicit TLS with a self-signed certificate made
by ``openssl``, and can require a login. Stopping it mid-run is how the tests make
the server "go away".
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError:  # pragma: no cover - a laptop without the dev extras
    Controller = None


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class Inbox:
    """The server's handler: what arrived, and which recipients to refuse."""

    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # address -> "550 ..." reply
    refuse_once: dict[str, str] = field(default_factory=dict)  # address -> "451 ..." reply

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        if address in self.refuse_once:
            return self.refuse_once.pop(address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [r.message for r in self.received if address in r.rcpt_tos]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key, made by openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class SmtpServer:
    """aiosmtpd on 127.0.0.1; ``security`` is none, starttls or tls (implicit)."""

    def __init__(
        self,
        inbox: Inbox,
        port: int | None = None,
        security: str = "none",
        cert: tuple[Path, Path] | None = None,
        logins: dict[str, str] | None = None,
    ) -> None:
        if Controller is None:
            pytest.skip("aiosmtpd is not installed: pip install -e '.[dev]'")
        self.inbox = inbox
        self.port = port or free_port()
        self.logins = logins
        kwargs: dict[str, Any] = {}
        if security != "none":
            assert cert is not None
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cert[0]), str(cert[1]))
            if security == "starttls":
                kwargs.update(tls_context=context, require_starttls=True)
            else:  # aiosmtpd offers AUTH only after STARTTLS unless told the link is safe
                kwargs.update(ssl_context=context, auth_require_tls=False)
        if logins is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
        self._controller = Controller(inbox, hostname="127.0.0.1", port=self.port, **kwargs)

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.logins is not None
            and self.logins.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 235 or 535

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
