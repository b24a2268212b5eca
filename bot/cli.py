"""The `supportbot` command. Errors are one clear line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from importlib import resources
from pathlib import Path

# Only the standard library at the top: each command imports what it needs, so that
# `supportbot --help` or `init` does not load the database and mail stacks.

DEFAULT_CONFIG = os.environ.get("SUPPORTBOT_CONFIG", "supportbot.toml")


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures that print one line; anything else is a bug and keeps its traceback."""
    from imapclient.exceptions import IMAPClientError

    from bot.config import LocatedError
    from bot.database import SchemaOutdated
    from bot.mailbox import MailboxError
    return (UsageError, LocatedError, SchemaOutdated, MailboxError, IMAPClientError, OSError)


class UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # APScheduler logs every job run at INFO; the service logs what matters itself.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return args.handler(args) or 0
    except expected_errors() as error:
        print(f"supportbot: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supportbot", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the service on embedded servers with scripted mail")
    demo.add_argument("--output", type=Path, help="folder for the sent mails and the database")
    demo.set_defaults(handler=_demo)

    init = sub.add_parser("init", help="write a working folder: supportbot.toml, rules/, templates/")
    init.add_argument("directory", type=Path)
    init.set_defaults(handler=_init)

    run = _command(sub, "run", "run the service until SIGTERM/SIGINT", _run)
    run.add_argument("--role", choices=("all", "ingest", "deliver"), default="all",
                     help="run both jobs (default), or only reading mail, or only sending it")
    run.add_argument("--single-process", action="store_true",
                     help="with --role all: both jobs in one process (less memory, slower); "
                          "by default they run as two processes")

    db = _group(sub, "db", "database schema")
    _command(db, "upgrade", "apply the migrations in db/", _db_upgrade)

    check = _command(sub, "check", "what the bot would decide about one mail, and why (writes nothing)", _check)
    check.add_argument("mail", type=Path, metavar="MAIL.eml")
    check.add_argument("--at", type=_moment, default=None, metavar="ISO8601",
                       help="arrival time (default: now); without a zone, UTC")
    check.add_argument("--json", action="store_true", help="one JSON object")

    sla = _group(sub, "sla", "service levels")
    due = _command(sla, "deadline", "the first-response deadline of a request, as one ISO 8601 line", _sla_deadline)
    due.add_argument("--policy", help="a policy of rules/policies/, e.g. kestra-enterprise (default: the contract's)")
    due.add_argument("--severity", required=True, metavar="LEVEL", help="1-4 (1 the most severe) or the policy's label")
    due.add_argument("--received", required=True, type=_moment, metavar="ISO8601",
                     help="when the mail arrived; without a zone, UTC")
    due.add_argument("--contract", metavar="ID", help="apply this contract's overrides (its number or row id)")

    contracts = _group(sub, "contracts", "customers, contracts and invoices")
    _command(contracts, "import", "upsert a YAML file of customers or a CSV of invoices",
             _contracts_import).add_argument("files", nargs="+", type=Path, metavar="FILE")
    _command(contracts, "list", "one line per contract", _contracts_list)
    invoices = _group(sub, "invoices", "invoices")
    pay = _command(invoices, "pay", "record that an invoice was paid", _invoices_pay)
    pay.add_argument("number")
    pay.add_argument("--on", type=_day, default=None, metavar="YYYY-MM-DD", help="payment date (default: today)")

    tickets = _group(sub, "tickets", "read tickets")
    _command(tickets, "list", "one line per ticket", _tickets_list).add_argument("--status")
    _command(tickets, "show", "a ticket and its audit trail", _tickets_show).add_argument("reference")

    outbox = _group(sub, "outbox", "outgoing mail")
    _command(outbox, "list", "every queued mail and its delivery state", _outbox_list)
    _command(outbox, "retry", "send an uncertain or failed mail again", _outbox_retry).add_argument("id", type=int)
    return parser


def _group(sub, name: str, help_text: str):
    return sub.add_parser(name, help=help_text).add_subparsers(required=True, metavar="ACTION")


def _command(sub, name: str, help_text: str, handler) -> argparse.ArgumentParser:
    """A subcommand that reads the deployment file."""
    parser = sub.add_parser(name, help=help_text)
    _config_option(parser)
    parser.set_defaults(handler=handler)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG),
                        help=f"deployment file (default: {DEFAULT_CONFIG}, or $SUPPORTBOT_CONFIG)")


def _settings(args, secrets: bool = False):
    from bot.config import load_settings
    if not args.config.is_file():
        raise UsageError(f"{args.config}: no such file (create one with: supportbot init DIR)")
    return load_settings(args.config, require_secrets=secrets)


def _engine(args):
    from bot.database import make_engine, require_current_schema
    engine = make_engine(_settings(args).database.url)
    require_current_schema(engine, f"supportbot db upgrade --config {args.config}")
    return engine


def _demo(args) -> int:
    from bot.demo import run_demo
    if not args.verbose:
        logging.getLogger().setLevel(logging.ERROR)  # the demo prints its own timeline
    return run_demo(args.output)


def _init(args) -> int:
    from bot.resources import shipped_dir
    target: Path = args.directory
    config = target / "supportbot.toml"
    if config.exists():
        raise UsageError(f"{config} already exists; not overwriting it")
    target.mkdir(parents=True, exist_ok=True)
    config.write_text(resources.files("bot").joinpath("example.toml").read_text(encoding="utf-8"))
    for name in ("rules", "templates"):
        shutil.copytree(shipped_dir(name), target / name, dirs_exist_ok=False)
    print(f"wrote {config}, {target / 'rules'}/ and {target / 'templates'}/")
    print("next: edit supportbot.toml, export SUPPORTBOT_IMAP_PASSWORD (and SUPPORTBOT_SMTP_PASSWORD),")
    print(f"then: supportbot db upgrade --config {config} && supportbot run --config {config}")
    return 0


def _run(args) -> int:
    from bot.supervise import WAKE_FD_ENV, run_roles
    if args.role == "all" and not args.single_process:
        # A bad file or database fails here, once, before any child. Checked in a short-lived
        # child, so that the supervising parent, which lives as long as the service, loads
        # neither the settings' validation nor the database stack (15 MB instead of 55).
        _in_a_child(_check_before_start, args)
        return run_roles(str(args.config), args.verbose)
    from bot.service import Service
    settings = _settings(args, secrets=True)
    wake_fd = os.environ.get(WAKE_FD_ENV)
    Service(settings, role=args.role, wake_fd=int(wake_fd) if wake_fd else None).run_forever()
    return 0


def _check_before_start(args) -> None:
    from bot.database import make_engine, require_current_schema
    engine = make_engine(_settings(args, secrets=True).database.url)
    try:
        require_current_schema(engine, f"supportbot db upgrade --config {args.config}")
    finally:
        engine.dispose()


def _in_a_child(check, *arguments) -> None:
    """Run `check` in a forked child, so that what it imports is never loaded here; what it
    raises is raised here as one line (UsageError)."""
    if not hasattr(os, "fork"):
        check(*arguments)
        return
    incoming, outgoing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's exit handlers
        try:
            os.close(incoming)
            try:
                check(*arguments)
            except expected_errors() as error:
                os.write(outgoing, str(error).encode())
            except Exception as error:  # noqa: BLE001 - e.g. a database that cannot be reached
                os.write(outgoing, f"{type(error).__name__}: {error}".encode())
        finally:
            os._exit(0)
    os.close(outgoing)
    with os.fdopen(incoming, "rb") as reader:
        problem = reader.read().decode(errors="replace")
    os.waitpid(pid, 0)
    if problem:
        raise UsageError(problem)


def _db_upgrade(args) -> int:
    from bot.database import upgrade
    url = _settings(args).database.url
    upgrade(url)
    print(f"database is at the current schema ({_redact(url)})")
    return 0


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url
    return make_url(url).render_as_string(hide_password=True)


def _day(text: str):
    from datetime import date
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _moment(text: str):
    from datetime import datetime, timezone
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time such as 2026-11-23T09:30+01:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _check(args) -> int:
    import json
    from datetime import datetime, timezone

    from bot.check import check_mail, describe
    from bot.rules import load_rules
    from bot.service import decision_policy
    settings = _settings(args)
    if not args.mail.is_file():
        raise UsageError(f"{args.mail}: no such file")
    rules = load_rules(settings.bot.rules_path)
    result = check_mail(_engine(args), rules, decision_policy(settings, rules),
                        args.mail.read_bytes(), args.at or datetime.now(timezone.utc))
    print(json.dumps(result, ensure_ascii=False) if args.json else "\n".join(describe(result)))
    return 0


def _sla_deadline(args) -> int:
    from bot.contracts import contract_terms
    from bot.rules import load_rules
    from bot.sla import contract_deadline
    explicit = args.config != Path(DEFAULT_CONFIG) or args.config.is_file() or args.contract
    rules = load_rules(_settings(args).bot.rules_path if explicit else None)
    name, overrides = args.policy, None
    if args.contract:
        terms = contract_terms(_engine(args), args.contract)
        if terms is None:
            raise UsageError(f"no contract {args.contract}")
        if name and name != terms.policy:
            raise UsageError(f"contract {terms.number} is under policy {terms.policy}, not {name}")
        name, overrides = terms.policy, terms.overrides
    if not name:
        raise UsageError("say which policy: --policy NAME (or --contract ID)")
    if name not in rules.policies:
        raise UsageError(f"unknown policy {name!r} (known: {', '.join(sorted(rules.policies))})")
    level = _severity_level(rules.policies[name], args.severity)
    due = contract_deadline(rules, name, overrides, level, args.received)
    if due is None:
        print(f"{name}: severity {level} has no response time (best effort)", file=sys.stderr)
        print("none")
        return 0
    print(due.local_due.isoformat())
    return 0


def _severity_level(policy, text: str) -> int:
    """1-4, or a label or key of the policy's (Critical, urgent, Élevée...), any case."""
    wanted = text.strip().casefold()
    for severity in policy.severities:
        names = {str(severity.level), severity.key, *(label.casefold() for label in severity.labels.values())}
        if wanted in names:
            return severity.level
    known = ", ".join(f"{s.level} ({s.label('en')})" for s in policy.severities)
    raise UsageError(f"{text!r} is not a severity of {policy.name}: {known}")


def _contracts_import(args) -> int:
    from bot.contracts import import_file
    from bot.rules import load_rules
    settings = _settings(args)
    rules, engine = load_rules(settings.bot.rules_path), _engine(args)
    for path in args.files:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        print(f"{path}: {import_file(engine, path, rules)}")
    return 0


def _contracts_list(args) -> int:
    from bot.contracts import contract_lines
    print("\n".join(contract_lines(_engine(args))))
    return 0


def _invoices_pay(args) -> int:
    from datetime import date

    from bot.contracts import pay_invoice
    on = args.on or date.today()
    if not pay_invoice(_engine(args), args.number, on):
        raise UsageError(f"no invoice {args.number}")
    print(f"invoice {args.number}: paid on {on.isoformat()}")
    return 0


def _tickets_list(args) -> int:
    from bot.reports import ticket_lines
    print("\n".join(ticket_lines(_engine(args), args.status)))
    return 0


def _tickets_show(args) -> int:
    from bot.reports import ticket_report
    from bot.rules import load_rules
    lines = ticket_report(_engine(args), args.reference, load_rules(_settings(args).bot.rules_path))
    if lines is None:
        raise UsageError(f"no ticket {args.reference}")
    print("\n".join(lines))
    return 0


def _outbox_list(args) -> int:
    from bot.reports import outbox_lines
    print("\n".join(outbox_lines(_engine(args))))
    return 0


def _outbox_retry(args) -> int:
    from bot.clock import SystemClock
    from bot.outbox import retry_mail
    row = retry_mail(_engine(args), SystemClock(), args.id)
    if row is None:
        raise UsageError(f"no outgoing mail {args.id}")
    print(f"mail {row.id} to {row.recipient}: {row.status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
