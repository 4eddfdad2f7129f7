"""slurm/mailprog as the test cluster's MailProg, with a real SMTP server on loopback.

slurmctld runs the repository's ``slurm/mailprog`` (through a wrapper that sets its
settings, as a site would) for jobs submitted with ``--mail-type=END``; the site's
mailer is a small ``mail``-like sender (``-s SUBJECT USER``, body on stdin) that hands
the message to tests/support/smtp_server.py over SMTP.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
import yaml

from tests.conftest import ROOT
from tests.support.net import wait_for
from tests.support.slurm_cluster import (
    CLUSTER,
    SlurmCluster,
    start_or_show_logs,
    temporary_cluster,
)
from tests.support.smtp_server import Inbox, SmtpServer
from tests.test_job_command import CONFIG

MAILER = """import smtplib, sys
from email.message import EmailMessage
subject, user = sys.argv[sys.argv.index("-s") + 1], sys.argv[-1]
message = EmailMessage()
message["From"], message["To"] = "slurm@localhost", f"{user}@example.org"
message["Subject"] = subject
message.set_content(sys.stdin.read())
with smtplib.SMTP("127.0.0.1", PORT, timeout=10) as smtp:
    smtp.send_message(message)
"""


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer(Inbox()) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(smtp: SmtpServer) -> Iterator[SlurmCluster]:
    with temporary_cluster("jobcarbon-mail-") as slurm:
        root = slurm.root.parent
        config = root / "config.yaml"
        config.write_text(yaml.safe_dump(CONFIG))
        mailer = root / "mailer.py"
        mailer.write_text(MAILER.replace("PORT", str(smtp.port)))
        # the site's wrapper: the settings, then the repository's mailprog; the footprint
        # step fails while the file "broken" exists
        slurm.mail_prog = root / "mailprog"
        slurm.mail_prog.write_text(
            "#!/bin/sh\n"
            f"export SLURM_CONF={slurm.root / 'slurm.conf'} TZ=UTC PYTHONPATH={ROOT / 'plugin'}\n"
            f"export JOBCARBON_CONFIG={config} JOBCARBON_MAILER='{sys.executable} {mailer}'\n"
            f"export JOBCARBON='{sys.executable} -m jobcarbon'\n"
            f"[ -e {root / 'broken'} ] && export JOBCARBON=/bin/false\n"
            f'exec {ROOT / "slurm" / "mailprog"} "$@"\n'
        )
        slurm.mail_prog.chmod(0o755)
        start_or_show_logs(slurm)
        yield slurm


def mails_about(smtp: SmtpServer, job_id: str) -> list[EmailMessage]:
    return [m for m in smtp.inbox.to("alice@example.org") if f"Job_id={job_id} " in m["Subject"]]


def end_mail(cluster: SlurmCluster, smtp: SmtpServer) -> tuple[str, EmailMessage, float]:
    """Run a one-GPU job for alice with --mail-type=END; its mail, and the seconds from
    the job's end to the mail's arrival."""
    job_id = cluster.sbatch(
        "alice", "--mail-type=END", "--mail-user=alice", "--gres=gpu:a100:1", "-c", "1",
        "--mem=100", "--wrap", "sleep 2",
    )  # fmt: skip
    cluster.wait_idle(120)
    ended = time.monotonic()
    wait_for("the end mail", lambda: bool(mails_about(smtp, job_id)), 60, 0.2)
    arrived = time.monotonic() - ended
    time.sleep(3)  # and no second one
    (mail,) = mails_about(smtp, job_id)
    return job_id, mail, arrived


def test_the_end_mail_carries_the_footprint(cluster: SlurmCluster, smtp: SmtpServer) -> None:
    job_id, mail, arrived = end_mail(cluster, smtp)
    assert "Ended" in mail["Subject"] and "COMPLETED" in mail["Subject"]
    body = mail.get_content()
    assert body.startswith("The footprint of this job, by jobcarbon:")
    assert f"Job {job_id} (wrap) on {CLUSTER}: user alice" in body
    assert "1 × A100 SXM4 80 GB (400 W)" in body and "CO2e:" in body and "advice:" in body
    assert "so far" not in body  # the final record, not the running job
    assert arrived < 20, f"the mail came {arrived:.1f} s after the job ended"


def test_when_the_footprint_fails_slurms_own_mail_goes_out(
    cluster: SlurmCluster, smtp: SmtpServer
) -> None:
    broken = cluster.root.parent / "broken"
    broken.touch()
    try:
        job_id, mail, arrived = end_mail(cluster, smtp)
    finally:
        broken.unlink()
    assert "Ended" in mail["Subject"] and f"Job_id={job_id}" in mail["Subject"]
    assert mail.get_content().strip() == ""  # Slurm's own mail has no body
    assert arrived < 20
