"""TLS and basic auth for ``jobcarbon serve``: a web config file in the format of the
Prometheus exporter-toolkit (``--web.config.file``), so the file a site writes for
node_exporter serves here too::

    tls_server_config:
      cert_file: tls.crt        # PEM; a relative path is read from the file's directory
      key_file: tls.key
      min_version: TLS12        # optional: TLS12 (the default) or TLS13
    basic_auth_users:           # user: bcrypt hash (htpasswd -nbBC 10 USER PASSWORD)
      prometheus: $2y$10$...

Either part may be left out. The exporter-toolkit's other keys (client certificates,
cipher suites, ``http_server_config``) are refused by name rather than ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from ..errors import ConfigError

TLS_KEYS = frozenset({"cert_file", "key_file", "min_version"})
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Verified (user, password) pairs kept so that a scraper's every request does not pay
# a bcrypt hash (about 70 ms at cost 10 here); the exporter-toolkit keeps them too.
VERIFIED_KEPT = 64
# $2y$ (htpasswd -B), $2b$ or $2a$, a two-digit cost, 22 characters of salt, 31 of hash
BCRYPT_HASH = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self.users = users
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()
        # an unknown user costs a bcrypt check too, so timing does not tell who exists
        self._unknown = next(iter(users.values()))

    def allows(self, header: str | None) -> bool:
        try:
            scheme, _, encoded = (header or "").partition(" ")
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if scheme.lower() != "basic" or not sep:
            return False
        hashed = self.users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed or b""))).digest()
        with self._lock:
            if key in self._verified:
                return True
        good = bcrypt.checkpw(password.encode(), hashed or self._unknown) and hashed is not None
        if good:
            with self._lock:
                if len(self._verified) >= VERIFIED_KEPT:
                    self._verified.clear()
                self._verified.add(key)
        return good


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What ``--web.config.file`` asks for: a TLS context, the users allowed in."""

    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)

    def auth(self) -> BasicAuth | None:
        return BasicAuth(self.users) if self.users else None


def load_web_config(path: Path) -> WebConfig:
    """Read and check the file; ``ConfigError`` listing every problem found."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError([f"cannot read the web config file: {err.strerror}"], str(path)) from err
    except yaml.YAMLError as err:
        raise ConfigError([f"not YAML: {err}"], str(path)) from err
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(["the web config file must be a mapping"], str(path))
    for key in sorted(set(raw) - {"tls_server_config", "basic_auth_users"}):
        problems.append(f"{key}: not supported (tls_server_config, basic_auth_users are)")
    tls = _tls(raw.get("tls_server_config"), path.parent, problems)
    users = _users(raw.get("basic_auth_users"), problems)
    if problems:
        raise ConfigError(problems, str(path))
    return WebConfig(tls, users)


def _tls(section: Any, directory: Path, problems: list[str]) -> ssl.SSLContext | None:
    if section is None:
        return None
    if not isinstance(section, dict):
        problems.append("tls_server_config: must be a mapping")
        return None
    for key in sorted(set(section) - TLS_KEYS):
        problems.append(
            f"tls_server_config.{key}: not supported ({', '.join(sorted(TLS_KEYS))} are)"
        )
    files = {}
    for key in ("cert_file", "key_file"):
        value = section.get(key)
        if not isinstance(value, str) or not value:
            problems.append(f"tls_server_config.{key}: required (a PEM file)")
        else:
            files[key] = directory / value  # an absolute value replaces the directory
    version = section.get("min_version", "TLS12")
    if version not in TLS_VERSIONS:
        problems.append(f"tls_server_config.min_version: {version!r} is not TLS12 or TLS13")
    if len(files) < 2 or version not in TLS_VERSIONS:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[version]
    try:
        context.load_cert_chain(files["cert_file"], files["key_file"])
    except (OSError, ssl.SSLError) as err:
        problems.append(
            f"tls_server_config: cannot load {files['cert_file']} with {files['key_file']}: "
            f"{getattr(err, 'strerror', None) or err}"
        )
        return None
    return context


def _users(section: Any, problems: list[str]) -> dict[str, bytes]:
    if section is None:
        return {}
    if not isinstance(section, dict) or not section:
        problems.append("basic_auth_users: must map each user name to a bcrypt hash")
        return {}
    users = {}
    for user, hashed in section.items():
        if not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            problems.append(
                f"basic_auth_users.{user}: not a bcrypt hash ($2y$10$ and 53 characters: "
                "htpasswd -nbBC 10 USER PASSWORD)"
            )
        elif ":" in str(user):
            problems.append(f"basic_auth_users.{user}: a user name cannot hold ':'")
        else:
            users[str(user)] = hashed.encode()
    return users
