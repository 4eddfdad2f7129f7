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

``addresses`` resolves the recipients; ``compose`` renders the messages; ``smtp``
sends them; ``postman`` runs a month: previews, sending with retries, the send log.
"""

from .addresses import AddressBook
from .compose import Composed, Composer, Rendered, message_id
from .postman import Outcome, Postman, file_stem
from .smtp import SmtpSender

__all__ = [
    "AddressBook",
    "Composed",
    "Composer",
    "Outcome",
    "Postman",
    "Rendered",
    "SmtpSender",
    "file_stem",
    "message_id",
]
