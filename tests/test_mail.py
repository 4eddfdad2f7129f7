"""The monthly e-mails: addresses, messages, previews, and sending through a real SMTP
server on loopback (aiosmtpd, ``tests/support/smtp_server.py``), parsed back with ``email``.

The ledger is ``tests/test_report.py``'s hand-worked October: bob 0.72 kg, alice
0.2952 kg (one failed job), carol 0.09 kg, all in project "proj".
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from markupsafe import escape

from jobcarbon.accounting import Accountant
from jobcarbon.cli import main
from jobcarbon.config import Config, load_config, parse_config
from jobcarbon.errors import ConfigError, MailError
from jobcarbon.ledger import Filters, Ledger
from jobcarbon.mail import AddressBook, Composed, Composer, Postman, SmtpSender
from jobcarbon.quantity import co2e, co2e_range, energy
from jobcarbon.report import monthly_reports, previous_month
from tests.conftest import utc
from tests.support.config import make_config
from tests.support.net import free_port
from tests.support.smtp_server import Inbox, SmtpServer, self_signed
from tests.test_report import (
    OCTOBER,
    SYNCED_ADVICE,
    hours_job,
    october_ledger,
    provider_site_config,
    site_config,
    small_ledger,
    synced_ledger,
)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
USERS = ("alice", "bob", "carol")


def write_config(directory: Path, **mail: Any) -> Path:
    """A config file whose ledger (ledger.db beside it) holds the hand-worked October."""
    base = site_config().model_dump(mode="json", exclude={"base_dir"}, exclude_defaults=True)
    base["mail"] = {
        "smtp_host": "127.0.0.1",
        "security": "none",
        "from_address": "carbon@hpc.example.org",
        "address_template": "{user}@example.org",
        "retry_first_s": 0.01,
        "retries": 2,
        "timeout_s": 10,
        "max_per_minute": 6000,
        "history_months": 3,
        **mail,
    }
    base["ledger"] = {"url": "sqlite:///ledger.db"}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(base))
    config = load_config(path)
    october_ledger(config.ledger_location(), config).close()
    return path


def run(config_file: Path, *args: str) -> Any:
    return CliRunner().invoke(
        main, ["--config", str(config_file), "report", "monthly", "--month", OCTOBER, *args]
    )


def postman(config: Config, ledger: Ledger, **kwargs: Any) -> Postman:
    sender = SmtpSender(config.mail, None, sleep=lambda s: None)
    return Postman(ledger, AddressBook(config), Composer(config), sender, **kwargs)


# --- addresses -----------------------------------------------------------------------------


def test_addresses_come_from_the_map_then_the_command_then_the_template(tmp_path: Path) -> None:
    (tmp_path / "map.csv").write_text("user,address\nalice,alice.smith@lab.example.org\n")
    lookup = tmp_path / "lookup"
    lookup.write_text('#!/bin/sh\n[ "$1" = bob ] && echo "Bob.Jones@dir.example.org" || exit 1\n')
    lookup.chmod(0o755)
    mail = {"address_map": "map.csv", "address_command": [str(lookup)]}
    book = AddressBook(
        site_config(address_template="{user}@example.org", **mail).model_copy(
            update={"base_dir": tmp_path}
        )
    )
    assert book.address("alice") == "alice.smith@lab.example.org"
    assert book.address("bob") == "Bob.Jones@dir.example.org"
    assert book.address("carol") == "carol@example.org"
    no_template = AddressBook(site_config(**mail).model_copy(update={"base_dir": tmp_path}))
    assert no_template.address("carol") is None  # not guessed


def test_a_malformed_address_map_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "map.csv").write_text("user,address\nalice,alice@lab.org\nbob,not-an-address\n")
    config = site_config(address_map="map.csv").model_copy(update={"base_dir": tmp_path})
    with pytest.raises(ConfigError, match=r"map.csv line 3: not 'user,address'"):
        AddressBook(config)


def test_skipped_users_are_reported_with_their_reason(tmp_path: Path) -> None:
    (tmp_path / "opt-out").write_text("# asked on 2026-10-02\ncarol\n")
    (tmp_path / "map.csv").write_text("user,address\nbob,bob@lab.example.org\n")
    config = site_config(opt_out_file="opt-out", address_map="map.csv").model_copy(
        update={"base_dir": tmp_path}
    )
    with october_ledger(tmp_path / "l.db", config) as ledger:
        out = tmp_path / "out"
        reports = monthly_reports(ledger, config, OCTOBER, "user")
        book, composer = AddressBook(config), Composer(config)
        outcome = Postman(ledger, book, composer, out_dir=out).deliver(reports)
    assert outcome.done == ["bob"]
    assert dict(outcome.skipped) == {
        "alice": "no address (not in address_map, address_command or template)",
        "carol": "opted out",
    }
    assert sorted(p.name for p in out.iterdir()) == [
        "2026-10-user-bob.eml",
        "2026-10-user-bob.html",
    ]


def test_a_projects_leads_are_names_or_addresses(tmp_path: Path) -> None:
    leads = {"proj": ["alice", "pi@lab.example.org", "ghost"]}
    config = site_config(project_leads=leads, address_template="{user}@example.org")
    with october_ledger(tmp_path / "l.db", config) as ledger:
        (report,) = monthly_reports(ledger, config, OCTOBER, "lead")
    to, _ = AddressBook(config).recipients(report)
    assert to == ["alice@example.org", "pi@lab.example.org", "ghost@example.org"]
    to, why = AddressBook(site_config()).recipients(report)
    assert (to, why) == ([], "no lead for project 'proj' in mail.project_leads")


# --- messages ------------------------------------------------------------------------------


def test_a_message_has_text_and_html_and_the_ledgers_figures(tmp_path: Path) -> None:
    config = site_config(from_address="carbon@hpc.example.org", reply_to="green@example.org")
    with october_ledger(tmp_path / "l.db", config) as ledger:
        reports = {r.name: r for r in monthly_reports(ledger, config, OCTOBER, "user")}
        summary = ledger.totals(Filters(month=OCTOBER, user="alice"))
    message = parsed(Composer(config).compose(reports["alice"], ["alice@example.org"], _now()))
    # alice: 0.288 + 0.45 = 0.738 kWh, 115.2 + 180 = 295.2 g (tests/test_report.py)
    assert message["Subject"] == "Your computing in October 2026: 295 g CO2e, 738 Wh"
    assert message["Reply-To"] == "green@example.org"
    assert message["Message-ID"].endswith("@hpc.example.org>")
    text, html = _bodies(message)
    likely = co2e_range(summary.co2e_kg_low, summary.co2e_kg_high)  # as `summary` prints it
    for figure in (
        "GPU-hours      3.00",
        "Energy         738 Wh",
        f"Emissions      295 g CO2e (likely {likely})",
        "  2026-09       180 g",  # the chart's labels: alice's September job, 180 g
        "  2026-10       295 g",
        "1.69 km driven in an average European passenger car",  # 295.2 g / 175 g/km
        "c1/2 oom (failed): 1.00 GPU-h, 450 Wh, 180 g CO2e",
    ):
        assert figure in text
    for figure in ("<b>1.69</b> km driven", ">295</div>", ">g CO2e<br>", ">738</div>", ">Wh</div>"):
        assert figure in html
    assert "Reply to it (green@example.org) for questions" in text
    assert "took 33 % of the GPU-hours" in text
    assert "more than 33 % of the 3 users" in text
    assert "busy 20 %" in text
    assert "<b>33 %</b> of the GPU-hours" in html
    for forbidden in ("<script", "<img", 'src="http', "url("):
        assert forbidden not in html.lower()
    # the same report always gets the same Message-ID: a resend is recognisable
    again = parsed(Composer(config).compose(reports["alice"], ["alice@example.org"], _now()))
    assert again["Message-ID"] == message["Message-ID"]


ZERO = re.compile(r"(?<![\d.,])0\.0+(?!\d)")  # "0.0", "0.00": a figure rounded to nothing


def jobs_counted(text: str) -> dict[str, int]:
    """The job counts a text e-mail states: its header, and the sums of each list of jobs."""
    (header,) = re.findall(r"^  Jobs +([\d,]+)$", text, re.M)
    counts = {"header": int(header.replace(",", ""))}
    for title in ("By project", "By cluster", "By GPU model", "How this is computed"):
        section = text.split(f"{title}", 1)[1].split("\n\n", 1)[0]
        found = re.findall(r"([\d,]+) jobs?\b", section)
        counts[title] = sum(int(n.replace(",", "")) for n in found)
    return counts


def test_a_small_clusters_month_shows_every_figure_in_a_fitting_unit(tmp_path: Path) -> None:
    config = site_config(reply_to="green@example.org")
    with small_ledger(tmp_path / "l.db", config) as ledger:
        (erin,) = monthly_reports(ledger, config, OCTOBER, "user")
        summary = ledger.totals(Filters(month=OCTOBER, user="erin"))
    message = parsed(Composer(config).compose(erin, ["erin@example.org"], _now()))
    # 9 Wh and 3.6 g (tests/test_report.py): fixed 0.1 kg and 0.1 kWh made both 0.0
    assert message["Subject"] == "Your computing in October 2026: 3.60 g CO2e, 9.00 Wh"
    text, html = _bodies(message)
    likely = co2e_range(summary.co2e_kg_low, summary.co2e_kg_high)
    for figure in (
        "GPU-hours      0.0200",  # 72 s
        "Energy         9.00 Wh",
        f"Emissions      3.60 g CO2e (likely {likely})",
        "0.0206 km driven in an average European passenger car",  # 3.6 g / 175 g/km
        "0.00393 months of CO2 uptake by one tree",  # 3.6 g / 917 g a month
        "  2026-10      3.60 g  ####################",  # the chart's label and full bar
        "c1/11 smoke-test (completed): 0.0167 GPU-h, 7.50 Wh, 3.00 g CO2e",
        "c1/12 retry (completed): 0.00333 GPU-h, 1.50 Wh, 0.600 g CO2e",
    ):
        assert figure in text
    for body in (text, html):
        assert ZERO.search(body) is None, ZERO.search(body)
    assert "<b>0.0206</b> km driven" in html
    assert ">3.60 g</td>" in html  # the chart's label


def test_every_count_in_an_email_agrees_with_the_others(tmp_path: Path) -> None:
    # erin: 3 jobs, one cancelled while pending; the factor lines counted only the 2
    # that used energy, so the header said 3 jobs and the method line 2
    config = site_config()
    with small_ledger(tmp_path / "l.db", config) as ledger:
        (erin,) = monthly_reports(ledger, config, OCTOBER, "user")
    text, html = _bodies(parsed(Composer(config).compose(erin, [], _now())))
    assert jobs_counted(text) == dict.fromkeys(
        ("header", "By project", "By cluster", "By GPU model", "How this is computed"), 3
    )
    assert "estimated energy, 2 jobs, factors" in text
    assert "1 job used no energy" in text and "1 job used no energy" in html
    assert "All 3 jobs, largest first:" in text  # not "the five largest" of three
    assert "You were the only user who ran jobs this month." in text
    with october_ledger(tmp_path / "october.db", config) as ledger:
        reports = {r.name: r for r in monthly_reports(ledger, config, OCTOBER, "user")}
    alice_text, _ = _bodies(parsed(Composer(config).compose(reports["alice"], [], _now())))
    assert set(jobs_counted(alice_text).values()) == {2}
    assert "1 job used no energy" not in alice_text


def test_the_cleanest_hours_in_the_email_say_they_come_from_the_synced_hours(
    tmp_path: Path,
) -> None:
    config = provider_site_config()
    with synced_ledger(tmp_path / "l.db", config) as ledger:
        (erin,) = monthly_reports(ledger, config, OCTOBER, "user")
    text, html = _bodies(parsed(Composer(config).compose(erin, [], _now())))
    assert SYNCED_ADVICE in " ".join(text.split())  # the text part wraps its lines
    assert escape(SYNCED_ADVICE) in html  # as the template escapes it: "day&#39;s"


def test_one_pue_shows_as_one_value(tmp_path: Path) -> None:
    # a PUE by month makes each job's energy a sum over pieces of its run; the effective
    # PUE and intensity, ratios of those sums, then differ in the last bits between jobs
    config = parse_config(
        make_config(
            sites={
                "s1": {
                    "pue": 1.3,
                    "pue_monthly": {"2026-07": 1.42},
                    "grid": {"intensity_g_per_kwh": 400},
                }
            },
            clusters={"c1": {"hardware": [{"gpu_tdp_w": 300}]}},
        )
    )
    accountant = Accountant(config)
    jobs = [
        hours_job(
            job_id, "erin", 4, seconds / 3600, utc(2026, 10, 5, 12, 30), cpu_count=64, memory_gb=512
        )
        for job_id, seconds in (("1", 35_323), ("2", 1_800))
    ]
    with Ledger(tmp_path / "l.db") as ledger:
        ledger.write([accountant.account(job) for job in jobs])
        (erin,) = monthly_reports(ledger, config, OCTOBER, "user")
    (factors,) = erin.factors
    stored = (factors.pue_min, factors.intensity_min_g_per_kwh)
    assert stored != (factors.pue_max, factors.intensity_max_g_per_kwh)  # 399.99999999999994
    text, html = _bodies(parsed(Composer(config).compose(erin, [], _now())))
    assert "site s1: PUE 1.30, grid 400 g CO2e/kWh, estimated energy, 2 jobs" in text
    assert "site s1: PUE 1.30, grid 400 g CO2e/kWh, estimated energy, 2 jobs" in html
    assert "1.30–1.30" not in text + html


def test_a_sites_templates_replace_the_bundled_ones(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "monthly_subject.txt.j2").write_text("[HPC] {{ r.totals.co2e_kg | num(2) }} kg")
    config = site_config(templates_dir=str(templates))
    with october_ledger(tmp_path / "l.db", config) as ledger:
        (alice,) = monthly_reports(ledger, config, OCTOBER, "user", ["alice"])
    assert Composer(config).render(alice).subject == "[HPC] 0.30 kg"
    (templates / "monthly.txt.j2").write_text("line one\n{{ r.no_such_field }}\n")
    with pytest.raises(ConfigError, match=r"monthly.txt.j2 line 2: .*no_such_field"):
        Composer(config).render(alice)


def test_preview_writes_each_email_and_its_html(tmp_path: Path) -> None:
    config_file = write_config(tmp_path)
    result = run(config_file, "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "2026-10, user e-mails: 3 written to" in result.output
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"2026-10-user-{u}.{ext}" for u in USERS for ext in ("eml", "html"))
    eml = message_from_bytes((tmp_path / "out/2026-10-user-bob.eml").read_bytes(), policy=default)
    assert eml["To"] == "bob@example.org"
    assert run(config_file).exit_code == 2  # neither --out nor --send: a usage error
    leads = run(config_file, "--leads", "--project", "proj", "--out", str(tmp_path / "leads"))
    # no lead configured for proj: reported, nothing written
    assert "0 written" in leads.output and "no lead for project 'proj'" in leads.output
    members = run(config_file, "--project", "proj", "--out", str(tmp_path / "members"))
    assert "3 written" in members.output
    nobody = run(config_file, "--project", "nothing-ran", "--out", str(tmp_path / "none"))
    assert nobody.output.strip() == (
        "no jobs in 2026-10 for nothing-ran; none in any other month either"
    )


def test_previews_of_names_with_a_dot_are_not_overwritten(tmp_path: Path) -> None:
    # Path.with_suffix took ".doe" and ".smith" for suffixes: both became 2026-10-user-john.eml
    config_file = write_config(tmp_path)
    config = load_config(config_file)
    accountant = Accountant(config)
    with Ledger(config.ledger_location()) as ledger:
        ledger.write(
            [
                accountant.account(hours_job(job_id, user, 1, 1, utc(2026, 10, 9, 12)))
                for job_id, user in (("21", "john.doe"), ("22", "john.smith"))
            ]
        )
    result = run(config_file, "--out", str(tmp_path / "out"))
    assert "5 written" in result.output, result.output
    for user in ("john.doe", "john.smith"):
        eml = (tmp_path / f"out/2026-10-user-{user}.eml").read_bytes()
        assert message_from_bytes(eml, policy=default)["To"] == f"{user}@example.org"
        assert f"Hello {user}," in (tmp_path / f"out/2026-10-user-{user}.html").read_text()
    assert not (tmp_path / "out/2026-10-user-john.eml").exists()


def test_without_a_month_an_empty_last_month_names_the_months_with_jobs(tmp_path: Path) -> None:
    config_file = write_config(tmp_path)  # jobs in 2026-09 and 2026-10 only
    last = previous_month(datetime.now(UTC))
    assert last not in ("2026-09", "2026-10")  # the test runs after November 2026
    result = CliRunner().invoke(
        main, ["--config", str(config_file), "report", "monthly", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"no jobs in {last} (last month); jobs are in 2026-09, 2026-10: "
        "choose one with --month YYYY-MM"
    )
    assert not (tmp_path / "o").exists()


# --- sending, through a real SMTP server ---------------------------------------------------


@pytest.mark.integration
def test_replies_go_to_mail_reply_to_and_the_footer_says_so(tmp_path: Path) -> None:
    inbox = Inbox()
    with SmtpServer(inbox) as server:
        config_file = write_config(
            tmp_path, smtp_port=server.port, reply_to="Green IT <green-it@hpc.example.org>"
        )
        result = run(config_file, "--send", "--user", "carol")
        assert result.exit_code == 0, result.output
    (message,) = inbox.to("carol@example.org")
    assert message["From"] == "carbon@hpc.example.org"
    assert message["Reply-To"] == "Green IT <green-it@hpc.example.org>"
    text, html = _bodies(message)
    promise = "Reply to it (Green IT <green-it@hpc.example.org>) for questions or to stop it."
    assert promise in text
    assert "Reply to it (Green IT &lt;green-it@hpc.example.org&gt;) for questions" in html
    assert "ask your cluster's administrators" not in text


@pytest.mark.integration
def test_send_delivers_each_user_once_and_a_rerun_sends_nothing(tmp_path: Path) -> None:
    inbox = Inbox()
    with SmtpServer(inbox) as server:
        config_file = write_config(tmp_path, smtp_port=server.port)
        first = run(config_file, "--send")
        assert first.exit_code == 0, first.output
        assert "3 sent, 0 skipped, 0 failed" in first.output
        again = run(config_file, "--send")
        assert "0 sent, 3 skipped, 0 failed" in again.output
        assert "skipped alice: already sent to alice@example.org" in again.output
        assert len(inbox.received) == 3
        resent = run(config_file, "--send", "--resend", "--user", "alice")
        assert "1 sent" in resent.output
    assert sorted(a for r in inbox.received for a in r.rcpt_tos) == [
        "alice@example.org",
        "alice@example.org",
        "bob@example.org",
        "carol@example.org",
    ]
    config = load_config(config_file)
    with Ledger(config.ledger_location()) as ledger:
        for user in USERS:
            (message,) = inbox.to(f"{user}@example.org")[:1]
            summary = ledger.totals(Filters(month=OCTOBER, user=user))
            assert message["From"] == "carbon@hpc.example.org"
            assert message["Subject"] == (
                f"Your computing in October 2026: {co2e(summary.co2e_kg)} CO2e, "
                f"{energy(summary.energy_kwh)}"
            )
            text, html = _bodies(message)
            assert f"{co2e(summary.co2e_kg)} CO2e (likely " in text
            assert f"Hello {user}," in html
            # no mail.reply_to: no Reply-To, and no promise that a reply reaches anyone
            assert message["Reply-To"] is None
            assert "Reply to it" not in text and "Reply to it" not in html
            assert "ask your cluster's administrators" in text
        assert set(ledger.mail_sent(OCTOBER, "user")) == set(USERS)


@pytest.mark.integration
def test_after_a_recompute_the_log_keeps_what_was_sent_and_a_resend_goes_beside_it(
    tmp_path: Path,
) -> None:
    """alice's October at PUE 1.5 (site s1): 0.192 + 0.3 kWh of IT energy, 0.738 kWh and
    295.2 g at 400 g/kWh. The site's PUE becomes 2.0 and the ledger is recomputed: 0.984
    kWh, 393.6 g. bob: 1.2 kWh IT, 1.8 kWh and 720 g, then 2.4 kWh and 960 g."""
    inbox = Inbox()
    with SmtpServer(inbox) as server:
        config_file = write_config(tmp_path, smtp_port=server.port)
        assert "3 sent" in run(config_file, "--send").output
        settings = yaml.safe_load(config_file.read_text())
        settings["sites"]["s1"]["pue"] = 2.0
        config_file.write_text(yaml.safe_dump(settings))
        recomputed = CliRunner().invoke(main, ["--config", str(config_file), "ledger", "recompute"])
        assert recomputed.exit_code == 0, recomputed.output
        again = run(config_file, "--send")
        assert "0 sent, 3 skipped" in again.output
        assert "skipped alice: already sent to alice@example.org" in again.output
        assert (
            f"its figures have changed since ({energy(0.738)}, {co2e(0.2952)} CO2e sent; "
            f"now {energy(0.984)}, {co2e(0.3936)} CO2e)" in again.output
        )
        assert "3 message(s) sent before figures changed" in again.output
        assert len(inbox.received) == 3  # nothing sent again unasked
        assert "1 sent" in run(config_file, "--send", "--resend", "--user", "bob").output
    (first, second) = inbox.to("bob@example.org")
    assert f"{co2e(0.72)} CO2e" in first["Subject"] and f"{co2e(0.96)} CO2e" in second["Subject"]
    with Ledger(load_config(config_file).ledger_location()) as ledger:
        bob = [sent for _, _, sent in ledger.mail_log() if sent.recipient == "bob"]
        assert [(s.energy_kwh, s.co2e_kg) for s in bob] == [
            (pytest.approx(1.8), pytest.approx(0.72)),  # what the first message told
            (pytest.approx(2.4), pytest.approx(0.96)),
        ]
        assert ledger.mail_sent(OCTOBER, "user")["bob"] == bob[1]  # the latest counts
        assert len(ledger.mail_log()) == 4


@pytest.mark.integration
def test_a_refused_recipient_fails_only_that_user(tmp_path: Path) -> None:
    inbox = Inbox(refuse={"bob@example.org": "550 5.1.1 <bob@example.org>: no such user"})
    with SmtpServer(inbox) as server:
        config_file = write_config(tmp_path, smtp_port=server.port)
        result = run(config_file, "--send")
        assert result.exit_code == 1
        assert "2 sent, 0 skipped, 1 failed" in result.output
        assert "failed bob: refused: bob@example.org: 550 5.1.1" in result.output
        inbox.refuse.clear()  # the directory is fixed: the next run sends bob only
        result = run(config_file, "--send")
        assert "1 sent, 2 skipped, 0 failed" in result.output
    assert [r.rcpt_tos for r in inbox.received].count(["bob@example.org"]) == 1
    assert len(inbox.received) == 3


@pytest.mark.integration
def test_a_temporary_refusal_is_retried_after_a_backoff(tmp_path: Path) -> None:
    inbox = Inbox(refuse_once={"carol@example.org": "451 4.3.0 try again later"})
    config = site_config(
        smtp_host="127.0.0.1", security="none", address_template="{user}@example.org"
    )
    waits: list[float] = []
    with SmtpServer(inbox) as server, october_ledger(tmp_path / "l.db", config) as ledger:
        mail = config.mail.model_copy(update={"smtp_port": server.port})
        config = config.model_copy(update={"mail": mail})
        sender = SmtpSender(config.mail, None)
        mailer = Postman(ledger, AddressBook(config), Composer(config), sender, sleep=waits.append)
        outcome = mailer.deliver(monthly_reports(ledger, config, OCTOBER, "user"))
    assert sorted(outcome.done) == sorted(USERS)
    assert len(waits) == 1 and 1.0 <= waits[0] <= 2.0  # retry_first_s 2, less jitter
    assert len(inbox.to("carol@example.org")) == 1


@pytest.mark.integration
def test_the_server_going_away_is_resumed_without_duplicates(tmp_path: Path) -> None:
    inbox = Inbox()
    port = free_port()
    config = site_config(
        smtp_host="127.0.0.1",
        smtp_port=port,
        security="none",
        address_template="{user}@example.org",
        retries=2,
    )
    with october_ledger(tmp_path / "l.db", config) as ledger:
        server = SmtpServer(inbox, port=port).start()
        reports = monthly_reports(ledger, config, OCTOBER, "user")
        # the server goes away once the first e-mail (bob's) is out
        outcome = postman(config, ledger).deliver(reports, step=server.stop)
        assert outcome.done == ["bob"]
        assert isinstance(outcome.stopped, MailError)
        assert "unreachable after 3 tries" in str(outcome.stopped)
        assert list(ledger.mail_sent(OCTOBER, "user")) == ["bob"]
        with SmtpServer(inbox, port=port):
            resumed = postman(config, ledger).deliver(reports)
        assert sorted(resumed.done) == ["alice", "carol"]
        assert [name for name, _ in resumed.skipped] == ["bob"]
    assert sorted(a for r in inbox.received for a in r.rcpt_tos) == [
        f"{u}@example.org" for u in USERS
    ]


@pytest.mark.integration
def test_no_server_at_all_stops_the_run_with_exit_5(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, smtp_port=free_port())
    result = run(config_file, "--send")
    assert result.exit_code == 5
    assert "0 sent, 0 skipped, 0 failed" in result.output
    assert "the SMTP server is unreachable after 3 tries" in result.output


@pytest.mark.integration
@pytest.mark.parametrize("security", ["starttls", "tls"])
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_tls_and_login(tmp_path: Path, security: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cert = self_signed(tmp_path)
    inbox = Inbox()
    with SmtpServer(inbox, security=security, cert=cert, logins={"jc": "s3cret"}) as server:
        common = {
            "smtp_port": server.port,
            "security": security,
            "tls_ca_file": str(cert[0]),
            "username": "jc",
            "password_env": "JC_SMTP_PASSWORD",
        }
        config_file = write_config(tmp_path, **common)
        monkeypatch.setenv("JC_SMTP_PASSWORD", "s3cret")
        result = run(config_file, "--send", "--user", "carol")
        assert result.exit_code == 0, result.output
        assert [r.rcpt_tos for r in inbox.received] == [["carol@example.org"]]
        monkeypatch.setenv("JC_SMTP_PASSWORD", "wrong")
        result = run(config_file, "--send", "--user", "bob")
        assert result.exit_code == 5
        assert "refused the login of 'jc'" in result.output
        monkeypatch.delenv("JC_SMTP_PASSWORD")
        result = run(config_file, "--send", "--user", "bob")
        assert result.exit_code == 2
        assert "$JC_SMTP_PASSWORD is not set" in result.output
    assert len(inbox.received) == 1


# --- rendering -----------------------------------------------------------------------------


@pytest.mark.integration
def test_the_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed: apt-get install chromium")
    config_file = write_config(tmp_path)
    assert run(config_file, "--out", str(tmp_path / "out")).exit_code == 0
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "monthly-email.png"
    screenshot.unlink(missing_ok=True)
    done = subprocess.run(
        [
            *(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"),
            *("--enable-logging=stderr", "--log-level=0", "--window-size=800,2200"),
            *(f"--screenshot={screenshot}", str(tmp_path / "out/2026-10-user-alice.html")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    errors = [
        line for line in done.stderr.splitlines() if ":CONSOLE(" in line or "net::ERR" in line
    ]
    assert errors == []  # no script errors, no resource that failed to load
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 20_000  # a rendered page, not a blank one


def parsed(composed: Composed) -> EmailMessage:
    """A composed message as the ``email`` package reads it."""
    message = message_from_bytes(composed.eml, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def _bodies(message: EmailMessage) -> tuple[str, str]:
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


def _now() -> datetime:
    return utc(2026, 11, 3, 6)


@pytest.mark.integration
def test_sending_is_paced_to_max_per_minute(tmp_path: Path) -> None:
    config = site_config(
        smtp_host="127.0.0.1", security="none", address_template="{user}@example.org"
    )
    waits: list[float] = []
    with SmtpServer(Inbox()) as server, october_ledger(tmp_path / "l.db", config) as ledger:
        mail = config.mail.model_copy(update={"smtp_port": server.port, "max_per_minute": 30})
        config = config.model_copy(update={"mail": mail})
        sender = SmtpSender(config.mail, None, clock=lambda: 100.0, sleep=waits.append)
        mailer = Postman(ledger, AddressBook(config), Composer(config), sender)
        outcome = mailer.deliver(monthly_reports(ledger, config, OCTOBER, "user"))
    assert len(outcome.done) == 3
    assert waits == [2.0, 2.0]  # 30 a minute: 2 s apart (the clock stood still)
