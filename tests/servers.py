"""Real throw-away servers for tests and benchmarks: Dovecot (IMAP), PostgreSQL, SMTP sink.

Every server binds 127.0.0.1 on an ephemeral port, keeps all of its state in its own
temporary directory (so several instances can run side by side and no system directory
or system service is touched) and is a context manager::

    with DovecotServer() as imap, PostgresServer() as pg, SmtpSink() as smtp:
        ...

This module has no pytest dependency so that tests/benchmarks/ can reuse it
(put tests/ on sys.path, e.g. ``PYTHONPATH=tests``).

Needed Debian packages: ``dovecot-imapd`` and ``postgresql`` (any version; the newest
under /usr/lib/postgresql is used), and ``openssl`` for ``make_tls_cert()`` (a dependency of
dovecot-core). Python: imapclient, aiosmtpd, psycopg (3).

TLS: ``make_tls_cert()`` makes a throw-away CA and a server certificate with the openssl CLI;
``DovecotServer(tls=cert)`` then offers STARTTLS on ``port`` and implicit TLS on ``tls_port``,
``SmtpSink(tls=cert)`` requires STARTTLS (``tls_mode="tls"``: implicit TLS instead).

Running as root (our CI): Dovecot refuses mail access as uid 0, so mail is owned by the
unprivileged ``nobody`` user; PostgreSQL refuses to run as root, so initdb/pg_ctl run as the
``postgres`` OS user through ``runuser``. Both temp dirs are therefore created under the
system temp dir (not pytest's 0700 ``tmp_path``) so that those users can reach them.
Set SUPPORTBOT_KEEP_SERVER_DIRS=1 to keep the temp dirs (configs, logs) for debugging.
"""

from __future__ import annotations

import atexit
import email
import email.message
import email.policy
import errno
import glob
import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Sequence

LOCALHOST = "127.0.0.1"

__all__ = [
    "DovecotServer",
    "PostgresServer",
    "SmtpSink",
    "SinkMessage",
    "TlsCert",
    "make_tls_cert",
    "ServerError",
    "ServerNotInstalled",
    "free_port",
    "wait_for_port",
]


# --------------------------------------------------------------------------- helpers


class ServerError(RuntimeError):
    """A test server failed to start or stop."""


class ServerNotInstalled(ServerError):
    """The server's binaries are missing (message says which apt package to install)."""


def free_port(host: str = LOCALHOST) -> int:
    """An ephemeral port that was free a moment ago (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 10.0,
    alive=lambda: True,
    greeting: bytes | None = None,
) -> None:
    """Wait until host:port accepts TCP connections (and sends ``greeting``, if given).

    ``alive()`` is polled so that we stop waiting as soon as the server process died.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise ServerError(f"server process exited before {host}:{port} was ready")
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                if greeting is None:
                    return
                data = b""
                while b"\n" not in data:
                    chunk = s.recv(1024)
                    if not chunk:
                        break
                    data += chunk
                if greeting in data:
                    return
                last_error = ServerError(f"unexpected greeting {data!r}")
        except OSError as e:
            last_error = e
        time.sleep(0.02)
    raise ServerError(f"{host}:{port} not ready after {timeout}s: {last_error}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"<no log {path}: {e}>"
    return "\n".join(text.splitlines()[-lines:]) or f"<{path} is empty>"


def _keep_dirs() -> bool:
    return os.environ.get("SUPPORTBOT_KEEP_SERVER_DIRS", "") not in ("", "0")


def _is_root() -> bool:
    return os.geteuid() == 0


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig TERM`` (util-linux): the server gets SIGTERM if the thread that
    started it dies, e.g. pytest-timeout's os._exit() which skips atexit. Best effort."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM"] if setpriv else []


def _children(pid: int) -> list[int] | None:
    """Live (non-zombie) child pids of ``pid`` (Linux /proc), or None if unknown."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return None
    live = []
    for child in (int(x) for x in text.split()):
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X"):  # not yet reaped
            live.append(child)
    return live


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class _Managed:
    """Context-manager + atexit safety net shared by the servers."""

    _running: bool = False

    def start(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _register_atexit(self) -> None:
        if not getattr(self, "_atexit_registered", False):
            self._atexit_registered = True
            atexit.register(self._atexit)

    def _atexit(self) -> None:
        try:
            if self._running:
                self.stop()
        except Exception:
            pass


# --------------------------------------------------------------------------- TLS certificates


@dataclass(frozen=True)
class TlsCert:
    """A server certificate (PEM) and its key, signed by the throw-away CA in ``ca_file``."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    names: tuple[str, ...]


def _openssl(args: Sequence[str], cwd: Path) -> None:
    exe = shutil.which("openssl")
    if not exe:
        raise ServerNotInstalled("the openssl command is missing: run `apt-get install openssl`")
    proc = subprocess.run([exe, *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=60)
    if proc.returncode != 0:
        raise ServerError(f"openssl {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout}")


def make_tls_cert(folder: Path, names: Sequence[str] = (LOCALHOST, "localhost"), *,
                  ca: TlsCert | None = None, prefix: str = "server", days: int = 7) -> TlsCert:
    """A server certificate for ``names`` (IP addresses and DNS names, all in subjectAltName).

    It is signed by ``ca.ca_file`` (reuse the CA of an earlier call) or by a new CA written to
    ``folder/ca.pem``. The files are made readable by everyone (a throw-away key), so a
    server that drops privileges (Dovecot as root) can read them; ``folder`` must be
    traversable by it (e.g. a dir under /tmp with mode 0755).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    if ca is None:
        (folder / "ca.cnf").write_text(
            "[req]\ndistinguished_name = dn\nx509_extensions = v3_ca\nprompt = no\n"
            "[dn]\nCN = supportbot test CA\n"
            "[v3_ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n"
            "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n")
        _openssl(["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", str(days),
                  "-config", "ca.cnf"], folder)
        ca_file, ca_key = folder / "ca.pem", folder / "ca.key"
    else:
        ca_file, ca_key = ca.ca_file, ca.ca_file.with_suffix(".key")
    san = ", ".join(("IP:" if _is_ip(n) else "DNS:") + n for n in names)
    (folder / f"{prefix}.ext").write_text(
        f"subjectAltName = {san}\nbasicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n")
    _openssl(["req", *ec, "-keyout", f"{prefix}.key", "-out", f"{prefix}.csr",
              "-subj", f"/CN={names[0]}"], folder)
    _openssl(["x509", "-req", "-in", f"{prefix}.csr", "-CA", str(ca_file), "-CAkey", str(ca_key),
              "-set_serial", str(secrets.randbits(63)), "-days", str(days),
              "-extfile", f"{prefix}.ext", "-out", f"{prefix}.pem"], folder)
    for path in folder.iterdir():
        os.chmod(path, 0o644)
    return TlsCert(ca_file, folder / f"{prefix}.pem", folder / f"{prefix}.key", tuple(names))


def _is_ip(name: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
        return True
    except OSError:
        return False


def _server_ssl_context(cert: TlsCert):
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert_file, cert.key_file)
    return context


# --------------------------------------------------------------------------- Dovecot


def _find_dovecot() -> str:
    exe = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")
    if not exe:
        raise ServerNotInstalled(
            "Dovecot is not installed (no `dovecot` binary in PATH or /usr/sbin): "
            "run `apt-get install dovecot-imapd`"
        )
    return exe


class DovecotServer(_Managed):
    """A private Dovecot 2.3 IMAP server (IMAP only, no SSL, plaintext auth, Maildir).

    Attributes: host, port, username, password, maildir (the user's Maildir root),
    log_path, dir (temp dir holding everything), conf_path.

    With ``tls=make_tls_cert(...)``: ``ssl = yes``, STARTTLS is offered on ``port`` (plain
    login there still works, so ``client()``/``append()`` are unchanged) and ``tls_port`` is
    an imaps listener (implicit TLS). Without it ``tls_port`` is None.
    """

    dovecot_bin: str

    def __init__(
        self,
        username: str = "support",
        password: str | None = None,
        *,
        separator: str = "/",
        start_timeout: float = 10.0,
        tls: TlsCert | None = None,
    ) -> None:
        self.host = LOCALHOST
        self.port: int | None = None
        self.tls = tls
        self.tls_port: int | None = None
        self.username = username
        self.password = password or secrets.token_urlsafe(12)
        self.separator = separator
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._users: dict[str, str] = {username: self.password}
        self._running = False

    # -- paths
    @property
    def conf_path(self) -> Path:
        return self._dir / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self._dir / "dovecot.log"

    @property
    def mail_root(self) -> Path:
        return self._dir / "mail"

    @property
    def maildir(self) -> Path:
        """The Maildir of ``username`` (INBOX is its cur/new/tmp; folders are .Name)."""
        return self.maildir_of(self.username)

    def maildir_of(self, user: str) -> Path:
        return self.mail_root / user / "Maildir"

    @property
    def _dir(self) -> Path:
        if self.dir is None:
            raise ServerError("DovecotServer not started")
        return self.dir

    # -- identity
    def _identity(self) -> dict[str, str | int]:
        """Users/uids for the config. As root: internal=dovecot, login=dovenull, mail=nobody.

        Dovecot refuses uid 0 for mail access ("userdb returned 0 as uid"), hence nobody.
        As non-root everything runs as the current user.
        """
        if _is_root():
            mail = pwd.getpwnam("nobody")
            internal_user = "dovecot"
            login_user = "dovenull"
            for u in (internal_user, login_user):
                try:
                    pwd.getpwnam(u)
                except KeyError:
                    raise ServerNotInstalled(
                        f"OS user {u!r} missing; run `apt-get install dovecot-imapd`"
                    ) from None
            return dict(
                internal_user=internal_user,
                internal_group=grp.getgrgid(pwd.getpwnam(internal_user).pw_gid).gr_name,
                login_user=login_user,
                mail_uid=mail.pw_uid,
                mail_gid=mail.pw_gid,
            )
        me = pwd.getpwuid(os.getuid())
        return dict(
            internal_user=me.pw_name,
            internal_group=grp.getgrgid(os.getgid()).gr_name,
            login_user=me.pw_name,
            mail_uid=os.getuid(),
            mail_gid=os.getgid(),
        )

    def _write_users(self) -> None:
        # One passwd-file per user (``users/%u``): dovecot stats a loaded passwd-file at most
        # once per second, so a user added to a single shared file right after a login
        # would be unknown for up to 1 s; a new per-user file is read on first use.
        users_dir = self._dir / "users"
        users_dir.mkdir(exist_ok=True)
        os.chmod(users_dir, 0o755)
        for user, password in self._users.items():
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", user) or user.startswith("."):
                raise ValueError(f"unsupported test user name {user!r}")
            path = users_dir / user
            line = f"{user}:{{PLAIN}}{password}::::::\n"
            if path.exists() and path.read_text() == line:
                continue
            tmp = users_dir / f".{user}.tmp"
            tmp.write_text(line)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)

    def _config(self, port: int, ident: dict, tls_port: int | None = None) -> str:
        d = self._dir
        root = _is_root()
        # Non-root dovecot cannot chroot or switch users.
        no_chroot = "" if root else "  chroot =\n"
        if self.tls is None:
            ssl_settings = "ssl = no"
            imaps_listener = "  inet_listener imaps {\n    port = 0\n  }"
        else:
            # copies in our dir: the config process reads them (as root: before dropping privileges)
            ssl_settings = f"ssl = yes\nssl_cert = <{d}/tls/cert.pem\nssl_key = <{d}/tls/key.pem"
            imaps_listener = (f"  inet_listener imaps {{\n    address = {LOCALHOST}\n"
                              f"    port = {tls_port}\n    ssl = yes\n  }}")
        return f"""\
# Generated by tests/servers.py (supportbot test suite). Dovecot 2.3 syntax.
instance_name = supportbot-test-{port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
debug_log_path = {d}/dovecot.log
protocols = imap
listen = {LOCALHOST}
{ssl_settings}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
default_internal_user = {ident['internal_user']}
default_internal_group = {ident['internal_group']}
default_login_user = {ident['login_user']}
first_valid_uid = 0
first_valid_gid = 0
mail_privileged_group =
mail_location = maildir:{d}/mail/%u/Maildir
mail_fsync = never
mailbox_idle_check_interval = 1 secs
imap_idle_notify_interval = 2 mins
namespace inbox {{
  inbox = yes
  separator = {self.separator}
}}
protocol imap {{
  mail_max_userip_connections = 200
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users/%u
}}
userdb {{
  driver = static
  args = uid={ident['mail_uid']} gid={ident['mail_gid']} home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {LOCALHOST}
    port = {port}
  }}
{imaps_listener}
{no_chroot}}}
service anvil {{
  # no brute-force penalty: tests log in and fail often from 127.0.0.1
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{no_chroot}}}
"""

    # -- lifecycle
    def start(self) -> "DovecotServer":
        if self._running:
            return self
        self.dovecot_bin = _find_dovecot()
        ident = self._identity()
        self.dir = Path(tempfile.mkdtemp(prefix="supportbot-dovecot-"))
        # the mail user (nobody as root) must be able to traverse to its maildir
        os.chmod(self.dir, 0o755)
        for sub in ("run", "state", "mail"):
            (self.dir / sub).mkdir()
        os.chown(self.mail_root, ident["mail_uid"], ident["mail_gid"])
        self._write_users()
        if self.tls is not None:
            (self.dir / "tls").mkdir(mode=0o755)
            shutil.copyfile(self.tls.cert_file, self.dir / "tls" / "cert.pem")
            shutil.copyfile(self.tls.key_file, self.dir / "tls" / "key.pem")

        errors = []
        for _attempt in range(5):
            port = free_port()
            tls_port = None
            if self.tls is not None:
                while tls_port in (None, port):
                    tls_port = free_port()
            self.conf_path.write_text(self._config(port, ident, tls_port))
            try:
                self._spawn(port, tls_port)
                self.port = port
                self.tls_port = tls_port
                self._running = True
                self._register_atexit()
                return self
            except ServerError as e:
                errors.append(str(e))
                if "Address already in use" not in str(e):
                    break
        self._cleanup_dir()
        raise ServerError(
            "Dovecot failed to start (set SUPPORTBOT_KEEP_SERVER_DIRS=1 to keep its dir):\n"
            + "\n\n".join(errors)
        )

    def _spawn(self, port: int, tls_port: int | None = None) -> None:
        stderr_path = self._dir / "dovecot.stderr"
        with open(stderr_path, "ab") as err:
            self._proc = subprocess.Popen(
                [*_pdeathsig_prefix(), self.dovecot_bin, "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                cwd=self._dir,
                start_new_session=True,  # own process group, see _kill_proc()
            )
        try:
            wait_for_port(
                LOCALHOST,
                port,
                timeout=self.start_timeout,
                alive=lambda: self._proc.poll() is None,
                greeting=b"Dovecot",
            )
            if tls_port is not None:  # opened with the other listener; TCP is enough here
                wait_for_port(LOCALHOST, tls_port, timeout=self.start_timeout,
                              alive=lambda: self._proc.poll() is None)
        except ServerError as e:
            self._kill_proc()
            raise ServerError(
                f"{e}\n--- {stderr_path} ---\n{_tail(stderr_path)}"
                f"\n--- {self.log_path} ---\n{_tail(self.log_path)}"
            ) from None

    def _kill_proc(self, timeout: float = 10.0) -> None:
        """SIGTERM the master (it stops its children), wait.

        Dovecot's master keeps its ``log`` child for ~1 s after every other child exited
        before it exits itself; once only that log process is left we SIGKILL the process
        group, which makes stop() take ~20 ms instead of ~1.1 s.
        """
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            children = _children(proc.pid)
            if children is not None and all(_cmdline(c).endswith("/log") for c in children):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
            time.sleep(0.01)
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        self._kill_proc()
        self._running = False
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self.dir is not None and not _keep_dirs():
            shutil.rmtree(self.dir, ignore_errors=True)

    def stop_keep_data(self) -> None:
        """Stop the master but keep the Maildir, config and port; resume with restart().

        While stopped the port refuses connections (simulates the IMAP server being down),
        and tests may edit the Maildir on disk safely.
        """
        self._kill_proc()
        self._running = False

    def restart(self) -> None:
        """(Re)start the master on the same port and data (simulates a server restart)."""
        assert self.port is not None, "never started"
        self._kill_proc()
        self._running = False
        self._spawn(self.port, self.tls_port)
        self._running = True

    # -- users and mail
    def add_user(self, username: str, password: str | None = None) -> str:
        """Add a user (Maildir under mail/<user>/Maildir); returns its password.

        A new user works immediately; changing an existing user's password may take up to
        1 s to be noticed by dovecot.
        """
        password = password or secrets.token_urlsafe(12)
        self._users[username] = password
        self._write_users()
        return password

    def client(self, username: str | None = None, password: str | None = None, timeout: float = 10.0):
        """A logged-in imapclient.IMAPClient (caller logs out / uses it as context manager)."""
        from imapclient import IMAPClient

        c = IMAPClient(self.host, self.port, ssl=False, timeout=timeout)
        user = username or self.username
        c.login(user, password or self._users[user])
        return c

    def append(
        self,
        raw: bytes,
        folder: str = "INBOX",
        internaldate: datetime | None = None,
        flags: Iterable[str | bytes] = (),
        *,
        username: str | None = None,
    ) -> int | None:
        """APPEND ``raw`` to ``folder``; returns the new UID (from UIDPLUS APPENDUID)."""
        c = self.client(username)
        try:
            resp = c.append(folder, raw, flags=tuple(flags), msg_time=internaldate)
        finally:
            c.logout()
        m = re.search(rb"APPENDUID \d+ (\d+)", resp if isinstance(resp, bytes) else str(resp).encode())
        return int(m.group(1)) if m else None

    def create_folder(self, name: str, *, username: str | None = None) -> None:
        c = self.client(username)
        try:
            c.create_folder(name)
        finally:
            c.logout()

    def __repr__(self) -> str:
        return f"<DovecotServer {self.host}:{self.port} user={self.username} dir={self.dir}>"


# --------------------------------------------------------------------------- PostgreSQL


def find_pg_bindir() -> Path:
    """Bin dir of the newest PostgreSQL under /usr/lib/postgresql (or $SUPPORTBOT_PG_BINDIR)."""
    env = os.environ.get("SUPPORTBOT_PG_BINDIR")
    candidates: list[Path] = []
    if env:
        candidates.append(Path(env))

    def version_key(p: str):
        v = Path(p).parent.parent.name
        return [int(x) if x.isdigit() else 0 for x in re.split(r"[.]", v)]

    candidates += [
        Path(p).parent
        for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version_key, reverse=True)
    ]
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(which).parent)
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    raise ServerNotInstalled(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin: "
        "run `apt-get install postgresql`"
    )


class PostgresServer(_Managed):
    """A private PostgreSQL cluster (initdb in a temp dir, trust auth, fsync=off).

    ``.url`` is an SQLAlchemy URL for the default database (psycopg 3 driver);
    ``create_database()``/``drop_database()`` give each test its own database.
    """

    superuser = "postgres"

    def __init__(self, dbname: str = "supportbot", *, start_timeout: float = 30.0) -> None:
        self.host = LOCALHOST
        self.port: int | None = None
        self.dbname = dbname
        self.user = self.superuser
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.bindir: Path | None = None
        self._running = False
        self._lock = threading.Lock()

    @property
    def data_dir(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "postgres.log"

    @property
    def url(self) -> str:
        return self.url_for(self.dbname)

    def url_for(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def conninfo(self, dbname: str | None = None) -> str:
        """libpq conninfo for psycopg.connect()."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname or self.dbname}"

    def _run(self, args: Sequence[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = list(args)
        if _is_root():
            # PostgreSQL refuses to run as root.
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(
            cmd,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise ServerError(
                f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}"
            )
        return proc

    def start(self) -> "PostgresServer":
        if self._running:
            return self
        self.bindir = find_pg_bindir()
        if _is_root():
            try:
                pg = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerNotInstalled(
                    "running as root needs the OS user `postgres`: run `apt-get install postgresql`"
                ) from None
            if not shutil.which("runuser"):
                raise ServerNotInstalled("runuser (util-linux) is needed to run PostgreSQL as root")
        self.dir = Path(tempfile.mkdtemp(prefix="supportbot-pg-"))
        if _is_root():
            os.chown(self.dir, pg.pw_uid, pg.pw_gid)
        try:
            self._run(
                [
                    str(self.bindir / "initdb"),
                    "-D", str(self.data_dir),
                    "-U", self.superuser,
                    "-A", "trust",
                    "-E", "UTF8",
                    "--no-locale",
                    "--no-sync",
                ]
            )
        except ServerError:
            self._cleanup_dir()
            raise
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write(
                "\n# supportbot tests\n"
                f"listen_addresses = '{LOCALHOST}'\n"
                f"unix_socket_directories = '{self.dir}'\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "max_connections = 200\n"
                "log_min_messages = warning\n"
            )
        errors = []
        for _attempt in range(5):
            port = free_port()
            proc = self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D", str(self.data_dir),
                    "-l", str(self.log_path),
                    "-o", f"-p {port}",
                    "-w", "-t", str(int(self.start_timeout)),
                    "start",
                ],
                check=False,
                timeout=self.start_timeout + 30,
            )
            if proc.returncode == 0:
                self.port = port
                break
            log = _tail(self.log_path)
            errors.append(f"pg_ctl start on port {port} failed:\n{proc.stdout}\n--- {self.log_path} ---\n{log}")
            if "already in use" not in log:
                break
        else:
            port = None
        if self.port is None:
            self._cleanup_dir()
            raise ServerError("PostgreSQL failed to start:\n" + "\n\n".join(errors))
        self._running = True
        self._register_atexit()
        try:
            self._admin(f'CREATE DATABASE "{self.dbname}"')
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._running:
            self._running = False
            try:
                self._run(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
                    timeout=60,
                )
            except (ServerError, subprocess.TimeoutExpired):
                self._run(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"],
                    check=False,
                )
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self.dir is not None and not _keep_dirs():
            shutil.rmtree(self.dir, ignore_errors=True)

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.conninfo("postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    def create_database(self, name: str | None = None) -> str:
        """CREATE a fresh empty database; returns its SQLAlchemy URL."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"bad database name {name!r}")
        # concurrent CREATE DATABASE from the same template can fail ("source database is
        # being accessed by other users"): serialise within this process.
        with self._lock:
            self._admin(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, name_or_url: str) -> None:
        """DROP a database, terminating any connection still open to it."""
        name = name_or_url.rsplit("/", 1)[-1].split("?", 1)[0]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __repr__(self) -> str:
        return f"<PostgresServer {self.host}:{self.port} dir={self.dir}>"


# --------------------------------------------------------------------------- SMTP sink


@dataclass(frozen=True)
class SinkMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    received_at: float = field(default_factory=time.time)
    peer: tuple = ()  # the client's (host, port): one per SMTP connection

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


class _SinkHandler:
    def __init__(self, sink: "SmtpSink") -> None:
        self.sink = sink

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        refusal = self.sink._refusal_for("mail")
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        refusal = self.sink._refusal_for("rcpt")
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        refusal = self.sink._refusal_for("data")
        if refusal:
            return refusal
        data = envelope.original_content if envelope.original_content is not None else envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        self.sink._record(SinkMessage(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(data),
                                      peer=tuple(session.peer or ())))
        return "250 OK: queued"


class SmtpSink(_Managed):
    """An aiosmtpd server on 127.0.0.1 that records every accepted message.

    ``refuse(451)`` makes it answer a failure (at DATA by default, so aiosmtplib raises
    ``SMTPDataError``, an ``SMTPResponseException``; ``stage="rcpt"`` gives
    ``SMTPRecipientsRefused``, ``stage="mail"`` gives ``SMTPSenderRefused``);
    ``accept()`` restores. ``stop()``/``start()`` keep the same port.

    With ``tls=make_tls_cert(...)`` the sink offers STARTTLS and refuses mail before it
    (``tls_mode="starttls"``, the default) or speaks implicit TLS (``tls_mode="tls"``).
    """

    STAGES = ("mail", "rcpt", "data")
    TLS_MODES = ("starttls", "tls")

    def __init__(self, host: str = LOCALHOST, port: int = 0, *, tls: TlsCert | None = None,
                 tls_mode: str = "starttls") -> None:
        if tls_mode not in self.TLS_MODES:
            raise ValueError(f"tls_mode must be one of {self.TLS_MODES}")
        self.host = host
        self.port = port
        self.tls = tls
        self.tls_mode = tls_mode
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._messages: list[SinkMessage] = []
        self._refusal: tuple[str, frozenset[str]] | None = None
        self.refused_count = 0
        self._controller = None
        self._running = False

    # -- recorded mail
    @property
    def messages(self) -> list[SinkMessage]:
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self.refused_count = 0

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[SinkMessage]:
        """Block until at least ``count`` messages were accepted; returns them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(
                    f"SmtpSink: expected {count} message(s) within {timeout}s, got {len(self._messages)}"
                )
            return list(self._messages)

    def _record(self, msg: SinkMessage) -> None:
        with self._cond:
            self._messages.append(msg)
            self._cond.notify_all()

    # -- failure injection
    def refuse(self, code: int = 451, message: str | None = None, stage: str | Iterable[str] = "data") -> None:
        stages = frozenset([stage] if isinstance(stage, str) else stage)
        if not stages or not stages <= set(self.STAGES):
            raise ValueError(f"stage must be among {self.STAGES}")
        if not 400 <= code <= 599:
            raise ValueError("code must be a 4xx or 5xx SMTP code")
        enhanced = "4.3.0" if code < 500 else "5.7.1"
        text = message or ("Temporary failure" if code < 500 else "Rejected") + " (supportbot test sink)"
        with self._lock:
            self._refusal = (f"{code} {enhanced} {text}", stages)

    def accept(self) -> None:
        with self._lock:
            self._refusal = None

    def _refusal_for(self, stage: str) -> str | None:
        with self._lock:
            if self._refusal and stage in self._refusal[1]:
                self.refused_count += 1
                return self._refusal[0]
            return None

    # -- lifecycle
    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> "SmtpSink":
        if self._running:
            return self
        from aiosmtpd.controller import Controller

        # aiosmtpd's Controller cannot use port 0 (it connects to self.port to warm up),
        # so bind the listening socket ourselves; SO_REUSEADDR lets a restart re-bind the
        # same port right away.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                raise ServerError(f"SmtpSink: port {self.port} is taken by another process") from e
            raise
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]

        class _Controller(Controller):
            def _create_server(ctl):
                return ctl.loop.create_server(ctl._factory_invoker, sock=sock, ssl=ctl.ssl_context)

        tls_options: dict = {}
        if self.tls is not None:
            context = _server_ssl_context(self.tls)
            if self.tls_mode == "tls":
                tls_options = dict(ssl_context=context)
            else:
                tls_options = dict(tls_context=context, require_starttls=True)
        ctl = _Controller(_SinkHandler(self), hostname=self.host, port=self.port, **tls_options)
        try:
            ctl.start()
        except Exception:
            sock.close()
            raise
        self._controller = ctl
        self._running = True
        self._register_atexit()
        return self

    def stop(self) -> None:
        """Close the listener and drop open sessions (clients then get connection refused)."""
        ctl, self._controller = self._controller, None
        self._running = False
        if ctl is not None:
            ctl.stop()

    def __repr__(self) -> str:
        return f"<SmtpSink {self.host}:{self.port} running={self._running} messages={len(self._messages)}>"
