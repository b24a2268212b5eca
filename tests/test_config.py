"""supportbot.toml + environment → Settings; every error names file, key and line."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest

from bot.config import (ENV_IMAP_PASSWORD, ENV_SMTP_PASSWORD, ConfigError, Settings,
                        example_path, load_settings)
from bot.resources import shipped_dir

ENV = {ENV_IMAP_PASSWORD: "imap-secret"}

MINIMAL = """\
[bot]
support_address = "support@example.com"

[imap]
host = "imap.example.com"
username = "support@example.com"

[smtp]
host = "smtp.example.com"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "supportbot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error(tmp_path: Path, text: str, env=ENV) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env)
    assert info.value.file == str(path)
    return info.value


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


# --- valid files --------------------------------------------------------------------------

def init_folder(tmp_path: Path) -> Path:
    """What `supportbot init DIR` writes: the example, and copies of rules/ and templates/."""
    for name in ("rules", "templates"):
        shutil.copytree(shipped_dir(name), tmp_path / name)
    path = tmp_path / "supportbot.toml"
    shutil.copyfile(example_path(), path)
    return path


def test_example_validates_with_the_env_vars_set(tmp_path):
    path = init_folder(tmp_path)
    settings = load_settings(path, ENV)
    assert settings.path == path
    assert settings.bot.rules_path == tmp_path / "rules"
    assert settings.bot.templates_path == tmp_path / "templates"
    assert settings.bot.support_address == "support@example.com"
    assert settings.imap.password == "imap-secret"
    assert settings.smtp.host == "smtp.example.com" and settings.smtp.password is None
    assert settings.outbox.transport == "smtp"


SECTIONS = {"bot": "BotSettings", "imap": "ImapSettings", "smtp": "SmtpSettings",
            "outbox": "OutboxSettings", "database": "DatabaseSettings"}


def test_example_documents_every_key_with_its_default():
    import bot.config as config
    section, shown = None, {}
    for line in example_path().read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m[1]
        elif m := re.fullmatch(r"#? ?(\w+) = (.+)", line):
            shown[(section, m[1])] = tomllib.loads(f"v = {m[2]}")["v"]
    for name, cls in SECTIONS.items():
        for key, field in getattr(config, cls).model_fields.items():
            if key == "password":
                continue
            assert (name, key) in shown, f"[{name}] {key} is not in example.toml"
            if field.default is not None and not field.is_required() \
                    and field.default_factory is None:
                assert shown[(name, key)] == field.default, f"[{name}] {key}"
    text = example_path().read_text(encoding="utf-8")
    assert ENV_IMAP_PASSWORD in text and ENV_SMTP_PASSWORD in text


def test_defaults(tmp_path):
    s = load_settings(write(tmp_path, MINIMAL), ENV)
    assert s.bot.from_name == "Support" and s.bot.reference_prefix == "SUP"
    assert s.bot.message_id_domain == "example.com"
    assert s.bot.rules_dir is None and s.bot.rules_path == shipped_dir("rules")
    assert s.bot.templates_path == shipped_dir("templates")
    assert s.bot.default_language == "en" and s.bot.ack_rate_limit_per_hour == 5
    assert s.bot.instance_name
    assert (s.imap.port, s.imap.security, s.imap.mark, s.imap.idle) == (993, "tls", "flag", True)
    assert s.imap.processed_keyword == "$SupportbotProcessed"
    assert (s.smtp.port, s.smtp.security, s.smtp.username) == (587, "starttls", None)
    assert (s.outbox.max_attempts, s.outbox.retry_base_seconds) == (12, 30)
    assert s.database.url == f"sqlite:///{tmp_path / 'supportbot.db'}"
    assert "imap-secret" not in repr(s)


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "my-rules").mkdir()
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("x")
    text = MINIMAL.replace('username = "support@example.com"',
                           'username = "support@example.com"\nca_file = "certs/ca.pem"')
    text = text.replace("[imap]", 'rules_dir = "my-rules"\n\n[imap]')
    text += ('\n[outbox]\ntransport = "folder"\ncapture_dir = "captured"\n'
             '\n[database]\nurl = "sqlite:///data/bot.db"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    s = load_settings(write(tmp_path, text), ENV)
    assert s.bot.rules_dir == tmp_path / "my-rules" == s.bot.rules_path
    assert s.imap.ca_file == tmp_path / "certs" / "ca.pem"
    assert s.outbox.capture_dir == tmp_path / "captured"
    assert s.database.url == f"sqlite:///{tmp_path / 'data' / 'bot.db'}"


def test_absolute_and_server_database_urls_are_kept(tmp_path):
    for url in ("sqlite:////var/lib/bot.db", "sqlite:///:memory:",
                "postgresql+psycopg://bot@db/bot"):
        s = load_settings(write(tmp_path, MINIMAL + f'\n[database]\nurl = "{url}"\n'), ENV)
        assert s.database.url == url


def test_folder_transport_needs_no_smtp_section(tmp_path):
    text = MINIMAL.split("[smtp]")[0] + '[outbox]\ntransport = "folder"\ncapture_dir = "out"\n'
    s = load_settings(write(tmp_path, text), ENV)
    assert s.smtp is None and s.outbox.capture_dir == tmp_path / "out"


def test_smtp_password_comes_from_the_environment(tmp_path):
    text = MINIMAL + 'username = "sender"\n'
    s = load_settings(write(tmp_path, text), {**ENV, ENV_SMTP_PASSWORD: "smtp-secret"})
    assert (s.smtp.username, s.smtp.password) == ("sender", "smtp-secret")


def test_plain_is_allowed_on_loopback(tmp_path):
    for host in ("localhost", "127.0.0.1", "::1"):
        text = MINIMAL.replace('host = "smtp.example.com"', f'host = "{host}"\nsecurity = "plain"')
        assert load_settings(write(tmp_path, text), ENV).smtp.security == "plain"


def test_from_dict(tmp_path):
    data = tomllib.loads(MINIMAL)
    data["outbox"] = {"capture_dir": "cap"}
    s = Settings.from_dict(data, ENV, tmp_path)
    assert s.path is None and s.outbox.capture_dir == tmp_path / "cap"
    with pytest.raises(ConfigError) as info:
        Settings.from_dict({**data, "bot": {}}, ENV, tmp_path)
    assert info.value.key == "bot.support_address" and info.value.line is None


def test_settings_are_frozen(tmp_path):
    s = load_settings(write(tmp_path, MINIMAL), ENV)
    with pytest.raises(Exception):
        s.imap.port = 1


# --- errors -------------------------------------------------------------------------------

def test_toml_syntax_error(tmp_path):
    text = MINIMAL.replace('host = "imap.example.com"', "host = imap.example.com")
    e = error(tmp_path, text)
    assert e.line == line_of(text, "host = imap") and e.key == ""
    assert e.message.startswith("TOML syntax error: ")


def test_duplicate_key_gets_its_line(tmp_path):
    text = MINIMAL + 'host = "again"\n'
    assert error(tmp_path, text).line == len(text.splitlines())


def test_wrong_type(tmp_path):
    text = MINIMAL.replace('username = "support@example.com"',
                           'username = "support@example.com"\nport = "993"')
    e = error(tmp_path, text)
    assert (e.line, e.key) == (line_of(text, "port ="), "imap.port")
    assert str(e) == (f"{tmp_path / 'supportbot.toml'}:{e.line}: [imap] port: "
                      "must be an integer between 1 and 65535")


@pytest.mark.parametrize("line, key, message", [
    ("idle = 1", "imap.idle", "must be true or false"),
    ("poll_seconds = 0", "imap.poll_seconds", "must be a number greater than 0"),
    ('security = "ssl"', "imap.security", "must be 'tls', 'starttls' or 'plain'"),
    ('mark = "delete"', "imap.mark", "must be 'flag' or 'move'"),
])
def test_bad_values(tmp_path, line, key, message):
    text = MINIMAL.replace("[smtp]", f"{line}\n\n[smtp]")
    e = error(tmp_path, text)
    assert (e.line, e.key, e.message) == (line_of(text, line), key, message)


def test_bad_address_and_prefix(tmp_path):
    text = MINIMAL.replace('"support@example.com"\n\n', '"Support <support@example.com>"\n\n')
    e = error(tmp_path, text)
    assert (e.line, e.key) == (2, "bot.support_address") and "bare e-mail address" in e.message
    text = MINIMAL.replace("\n\n[imap]", '\nreference_prefix = "sup-"\n\n[imap]')
    assert (error(tmp_path, text).line, error(tmp_path, text).key) == (3, "bot.reference_prefix")


def test_unknown_key(tmp_path):
    text = MINIMAL.replace("[smtp]", 'hots = "x"\n\n[smtp]')
    e = error(tmp_path, text)
    assert (e.line, e.key) == (line_of(text, "hots"), "imap.hots")
    assert e.message.startswith("unknown key (expected one of: host, security,")


def test_unknown_section(tmp_path):
    text = MINIMAL + "\n[imapp]\nhost = 1\n"
    e = error(tmp_path, text)
    assert (e.line, e.key) == (line_of(text, "[imapp]"), "imapp")
    assert str(e).endswith("[imapp]: unknown section (expected [bot], [imap], [smtp], "
                           "[outbox], [database])")


def test_password_in_the_file(tmp_path):
    text = MINIMAL.replace("[smtp]", 'password = "hunter2"\n\n[smtp]')
    e = error(tmp_path, text)
    assert (e.line, e.key) == (line_of(text, "password"), "imap.password")
    assert ENV_IMAP_PASSWORD in e.message and "never read from this file" in e.message
    text = MINIMAL + 'password = "hunter2"\n'
    e = error(tmp_path, text)
    assert (e.line, e.key) == (line_of(text, "password"), "smtp.password")
    assert ENV_SMTP_PASSWORD in e.message


def test_missing_imap_password_env_var(tmp_path):
    e = error(tmp_path, MINIMAL, env={})
    assert (e.line, e.key) == (line_of(MINIMAL, "[imap]"), "imap.password")
    assert ENV_IMAP_PASSWORD in e.message and "is not set" in e.message


def test_smtp_username_needs_the_smtp_env_var(tmp_path):
    e = error(tmp_path, MINIMAL + 'username = "sender"\n')
    assert (e.line, e.key) == (line_of(MINIMAL, "[smtp]"), "smtp.password")
    assert ENV_SMTP_PASSWORD in e.message


def test_plain_on_a_remote_host(tmp_path):
    text = MINIMAL.replace('host = "smtp.example.com"', 'host = "smtp.example.com"\n'
                           'security = "plain"')
    e = error(tmp_path, text)
    assert (e.line, e.key) == (line_of(text, 'security = "plain"'), "smtp.security")
    assert "unencrypted" in e.message and "smtp.example.com" in e.message


def test_missing_smtp_section_with_smtp_transport(tmp_path):
    text = MINIMAL.split("[smtp]")[0]
    e = error(tmp_path, text)
    assert (e.line, e.key) == (None, "smtp")
    assert 'transport = "folder"' in e.message
    assert str(e).startswith(f"{tmp_path / 'supportbot.toml'}: [smtp]: missing section")


def test_missing_required_key_points_at_its_table(tmp_path):
    text = MINIMAL.replace('username = "support@example.com"\n', "")
    e = error(tmp_path, text)
    assert (e.line, e.key, e.message) == (line_of(text, "[imap]"), "imap.username",
                                          "required key is missing")


def test_missing_section(tmp_path):
    e = error(tmp_path, MINIMAL.split("[imap]")[0])
    assert (e.line, e.key, e.message) == (None, "imap", "missing section")


def test_folder_transport_needs_capture_dir(tmp_path):
    text = MINIMAL + '\n[outbox]\ntransport = "folder"\n'
    e = error(tmp_path, text)
    assert (e.line, e.key) == (line_of(text, "[outbox]"), "outbox.capture_dir")


def test_secrets_may_be_absent_for_commands_that_connect_nowhere(tmp_path):
    s = load_settings(write(tmp_path, MINIMAL + 'username = "sender"\n'), {},
                      require_secrets=False)
    assert (s.imap.password, s.smtp.password) == ("", "")
    path = write(tmp_path, MINIMAL.replace("[smtp]", 'password = "x"\n[smtp]'))
    with pytest.raises(ConfigError, match="never read from this file"):
        load_settings(path, {}, require_secrets=False)


def test_example_names_the_rules_copied_by_init_and_says_so_when_missing():
    e = pytest.raises(ConfigError, load_settings, example_path(), ENV).value
    assert e.key == "bot.rules_dir" and "folder not found" in e.message


def test_missing_file_and_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nowhere.toml", ENV)
    text = MINIMAL.replace("\n\n[imap]", '\nrules_dir = "nope"\n\n[imap]')
    e = error(tmp_path, text)
    assert (e.line, e.key) == (3, "bot.rules_dir") and "folder not found" in e.message


def test_require_authenticated_sender_needs_the_authserv_id(tmp_path):
    from bot.config import ConfigError, load_settings
    path = tmp_path / "supportbot.toml"
    path.write_text('[bot]\nsupport_address = "support@vendor.example"\nrequire_authenticated_sender = true\n'
                    '[imap]\nhost = "localhost"\nusername = "u"\nsecurity = "plain"\n'
                    '[smtp]\nhost = "localhost"\nsecurity = "plain"\n')
    with pytest.raises(ConfigError, match="authserv_id: require_authenticated_sender needs"):
        load_settings(path, env={})
