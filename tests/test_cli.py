"""The `supportbot` command as an operator uses it: real processes, real files."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bot.config import load_settings
from helpers import write_config

REPO = Path(__file__).resolve().parents[1]


def supportbot(*args: str, env: dict | None = None, cwd: Path | None = None, pythonpath: Path | None = None):
    environment = dict(os.environ, **(env or {}))
    if pythonpath:
        environment["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True,
                          env=environment, cwd=cwd, timeout=120)


def test_init_writes_a_working_folder(tmp_path):
    result = supportbot("init", str(tmp_path / "site"))
    assert result.returncode == 0, result.stderr
    site = tmp_path / "site"
    assert (site / "rules" / "policies" / "kestra-enterprise.yaml").is_file()
    assert (site / "templates" / "fr" / "ack" / "body.txt").is_file()
    settings = load_settings(site / "supportbot.toml", env={"SUPPORTBOT_IMAP_PASSWORD": "x",
                                                           "SUPPORTBOT_SMTP_PASSWORD": "y"})
    assert settings.bot.rules_path == site / "rules"
    again = supportbot("init", str(site))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_broken_config_names_file_and_line_without_traceback(tmp_path):
    config = tmp_path / "supportbot.toml"
    config.write_text('[bot]\nsupport_address = "support@vendor.example"\n\n[imap]\nhost = "imap.example"\n'
                      'port = "nine-nine-three"\nusername = "support"\n')
    result = supportbot("run", "--config", str(config), env={"SUPPORTBOT_IMAP_PASSWORD": "x"})
    assert result.returncode == 2
    assert f"{config}:6" in result.stderr and "port" in result.stderr
    assert "Traceback" not in result.stderr


def test_broken_rules_stop_start_up_with_file_and_line(tmp_path, dovecot, smtp_sink):
    rules = tmp_path / "rules"
    supportbot("init", str(tmp_path / "site"))
    (tmp_path / "site" / "rules").rename(rules)
    policy = rules / "policies" / "astran-standard.yaml"
    policy.write_text(policy.read_text() + "\nunexpected_key: 1\n")
    config = write_config(tmp_path, dovecot, smtp_sink, f"sqlite:///{tmp_path / 'db.sqlite'}",
                          bot={"rules_dir": str(rules)})
    assert supportbot("db", "upgrade", "--config", str(config)).returncode == 0
    result = supportbot("run", "--config", str(config), env={"SUPPORTBOT_IMAP_PASSWORD": dovecot.password})
    assert result.returncode == 2
    assert "astran-standard.yaml:" in result.stderr and "unexpected_key" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_an_outdated_schema_and_says_how_to_fix_it(tmp_path, dovecot, smtp_sink):
    config = write_config(tmp_path, dovecot, smtp_sink, f"sqlite:///{tmp_path / 'db.sqlite'}")
    result = supportbot("run", "--config", str(config), env={"SUPPORTBOT_IMAP_PASSWORD": dovecot.password})
    assert result.returncode == 2
    assert f"supportbot db upgrade --config {config}" in result.stderr
    assert supportbot("db", "upgrade", "--config", str(config)).returncode == 0
    listing = supportbot("tickets", "list", "--config", str(config))
    assert listing.returncode == 0 and listing.stdout.startswith("ticket")


def test_run_on_a_database_it_cannot_open_is_one_clear_line(tmp_path, dovecot, smtp_sink):
    config = write_config(tmp_path, dovecot, smtp_sink, f"sqlite:///{tmp_path / 'no-such-folder' / 'db.sqlite'}")
    result = supportbot("run", "--config", str(config), env={"SUPPORTBOT_IMAP_PASSWORD": dovecot.password})
    assert result.returncode == 2
    assert "supportbot: error: OperationalError" in result.stderr and "unable to open database" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_password_is_a_clear_error(tmp_path, dovecot, smtp_sink):
    config = write_config(tmp_path, dovecot, smtp_sink, f"sqlite:///{tmp_path / 'db.sqlite'}")
    supportbot("db", "upgrade", "--config", str(config))
    result = supportbot("run", "--config", str(config), env={"SUPPORTBOT_IMAP_PASSWORD": "wrong"})
    assert result.returncode == 2
    assert "supportbot: error:" in result.stderr and "Traceback" not in result.stderr


def test_missing_config_file_is_explained(tmp_path):
    result = supportbot("tickets", "list", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2 and "supportbot init" in result.stderr


def test_unknown_ticket_is_an_error(tmp_path, dovecot, smtp_sink):
    config = write_config(tmp_path, dovecot, smtp_sink, f"sqlite:///{tmp_path / 'db.sqlite'}")
    supportbot("db", "upgrade", "--config", str(config))
    result = supportbot("tickets", "show", "SUP-000404", "--config", str(config))
    assert result.returncode == 2 and "no ticket SUP-000404" in result.stderr


def test_demo_runs_and_leaves_the_sent_mails(tmp_path):
    result = supportbot("demo", "--output", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    sent = sorted((tmp_path / "demo" / "sent").glob("*.eml"))
    purposes = sorted(path.name.split(".")[1] for path in sent)
    assert purposes == ["ack"] * 9 + ["refusal"] * 9 + ["triage", "unknown_sender"]
    assert "ticket opened: SUP-000001" in result.stdout
    for reason in ("is not a registered contact", "was not renewed", "was terminated on",
                   "due 31 October 2026, is unpaid", "(disputed), due 31 July 2026", "free use (trial)",
                   "is not the address of a known customer", "the request is written in German",
                   "takes effect on 1 January 2027", "no contract on record for Stark Industries"):
        assert reason in result.stdout, reason
    for level in ("severity 1 (Critical)", "severity 2 (High)", "severity 3 (Medium)", "severity 4 (Low)",
                  "severity 1 (Urgent)"):
        assert level in result.stdout, level
    # Friday 26 March 2027, 18:30 in France: Easter Monday is closed for Kestra (fixed UTC+1),
    # open for Astran, and Paris is at UTC+2 from the Sunday.
    assert "by 2027-03-30T18:00:00+01:00 (received 2027-03-26T18:30:00+01:00, clock started 2027-03-30T09:00" \
        in result.stdout
    assert "by 2027-03-29T17:00:00+02:00" in result.stdout
    assert "best effort: Kestra Standard Support sets no response time" in result.stdout
    assert "automatic mail (auto-submitted" in result.stdout
    assert "quarantined:\n            · no usable sender" in result.stdout
    shown = supportbot("tickets", "show", "SUP-000001", "--config", str(tmp_path / "demo" / "supportbot.toml"))
    assert shown.returncode == 0 and "duplicate" in shown.stdout and "followup" in shown.stdout
    assert "severity      1 Critical (evidence)" in shown.stdout
    assert "(Tuesday 24 November 2026, 09:58 (UTC+1) for the customer)" in shown.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    return next(out.glob("supportbot-*.whl"))


def test_wheel_carries_rules_templates_and_migrations(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    for expected in ("bot/_data/rules/policies/astran-standard.yaml", "bot/_data/templates/en/ack/body.html",
                     "bot/_data/db/env.py", "bot/_data/db/versions/0001_initial.py", "bot/example.toml",
                     "bot/_data/samples/contracts.yaml", "bot/_data/templates/fr/refusal/body.txt",
                     "bot/demo_mail/01-question.eml"):
        assert expected in names
    # Installed from the wheel (not the checkout), the bot still finds its files.
    result = supportbot("init", str(tmp_path / "work"), cwd=tmp_path, pythonpath=tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "work" / "rules" / "calendars" / "astran.yaml").is_file()
    probe = subprocess.run([sys.executable, "-c", "import bot.resources as r; print(r.shipped_dir('db'))"],
                           capture_output=True, text=True, cwd=tmp_path,
                           env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")))
    assert probe.stdout.strip() == str(tmp_path / "site" / "bot" / "_data" / "db")


def test_broken_template_stops_start_up_with_file_and_line(tmp_path, dovecot, smtp_sink):
    supportbot("init", str(tmp_path / "site"))
    templates = tmp_path / "site" / "templates"
    (templates / "en" / "ack" / "subject.txt").write_text("[{{ ticket.reference }] {{ original_subject }}")
    config = write_config(tmp_path, dovecot, smtp_sink, f"sqlite:///{tmp_path / 'db.sqlite'}",
                          bot={"templates_dir": str(templates)})
    assert supportbot("db", "upgrade", "--config", str(config)).returncode == 0
    result = supportbot("run", "--config", str(config), env={"SUPPORTBOT_IMAP_PASSWORD": dovecot.password})
    assert result.returncode == 2
    assert "en/ack/subject.txt:1:" in result.stderr and "Traceback" not in result.stderr
