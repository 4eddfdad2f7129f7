"""``mail``: the monthly e-mails' settings (SMTP, addresses, leads, pacing, templates),
checked at load. The password is never here: ``password_env`` or ``password_file`` name
where it is read from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MailConfig(BaseModel):
    """The monthly e-mails: SMTP, addresses, leads, pacing and templates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    smtp_host: str = Field("localhost", description="the SMTP server")
    smtp_port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls, tls (implicit, port 465) or none"
    )
    tls_ca_file: Path | None = Field(None, description="CA bundle for the server's certificate")
    username: str | None = Field(None, description="log in as this user (needs a password)")
    password_env: str | None = Field(None, description="environment variable holding the password")
    password_file: Path | None = Field(None, description="file holding the password")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="one SMTP exchange at most")
    from_address: str = Field("jobcarbon@localhost", description="the From: of every e-mail")
    reply_to: str | None = Field(None, description="the Reply-To:, e.g. the green-IT team")
    address_template: str | None = Field(
        None, description="a user's address, {user} replaced: {user}@example.org"
    )
    address_map: Path | None = Field(None, description='CSV with columns "user,address"')
    address_command: list[str] | None = Field(
        None, description="command (argv) printing a user's address; the user is appended"
    )
    opt_out_file: Path | None = Field(
        None, description="users who want no e-mail, one per line (# comments)"
    )
    project_leads: dict[str, list[str]] = Field(
        default_factory=dict, description="project -> its leads (user names or addresses)"
    )
    max_per_minute: float = Field(60.0, gt=0, description="send at most this many a minute")
    retries: int = Field(4, ge=0, le=20, description="tries again after a temporary failure")
    retry_first_s: float = Field(
        2.0, gt=0, le=3600, description="first wait after a temporary failure (doubling)"
    )
    history_months: int = Field(6, ge=1, le=36, description="months in the e-mail's chart")
    templates_dir: Path | None = Field(
        None, description="a site's own templates, used instead of the bundled ones"
    )
    method_url: str = Field(
        "https://arxiv.org/abs/1910.09700", description="the e-mails' link to the method"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_secret(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError("secrets never go in the YAML: use password_env or password_file")
        return data

    @model_validator(mode="after")
    def _one_password(self) -> MailConfig:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("a password needs a username")
        if self.address_template is not None and "{user}" not in self.address_template:
            raise ValueError(f"address_template must contain {{user}}: {self.address_template!r}")
        return self
