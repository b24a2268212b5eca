"""`supportbot run`: reading mail and sending it as two processes under one parent.

Python runs one thread at a time, so in one process the two take turns, and during a
backlog the acknowledgements wait for the inbox (tests/benchmarks/ingest.py, 10,000 mails:
216 acks sent in the first 10 s in one process, 4,422 in two). The parent starts the
`deliver` and `ingest` roles of the same service, joined by a pipe on which ingest wakes
delivery as soon as it queues a mail. It forwards SIGTERM/SIGINT and, when either child
ends, stops the other and exits, so whatever supervises supportbot sees one service. The
children die with the parent even on SIGKILL (Linux PR_SET_PDEATHSIG): a crash stays a crash.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading

log = logging.getLogger(__name__)

WAKE_FD_ENV = "SUPPORTBOT_WAKE_FD"  # the pipe end a child was given: read (deliver), write (ingest)
PR_SET_PDEATHSIG = 1
try:  # looked up here, not between fork and exec
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (AttributeError, OSError):
    _prctl = None  # not Linux: a child then outlives a parent killed with SIGKILL


def run_roles(config: str, verbose: bool = False) -> int:
    """Run ingest and delivery until SIGTERM/SIGINT or until one of them ends; the exit
    status is the first child's to end (start-up errors keep their status 2)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    wake_read, wake_write = os.pipe()
    children = {role: _start(role, config, verbose, fd) for role, fd in
                (("deliver", wake_read), ("ingest", wake_write))}
    os.close(wake_read)
    os.close(wake_write)  # the children hold the ends now: delivery sees EOF if ingest dies
    log.info("supportbot running as two processes: ingest (pid %d), deliver (pid %d)",
             children["ingest"].pid, children["deliver"].pid)
    status = 0
    while not stop.wait(0.5):
        ended = [(role, child.returncode) for role, child in children.items() if child.poll() is not None]
        if ended:
            role, code = ended[0]
            status = code if code and code > 0 else 1
            log.error("the %s process ended (exit status %s); stopping supportbot", role, code)
            break
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children.values():
        child.wait()
    return status


def _start(role: str, config: str, verbose: bool, wake_fd: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "bot.cli", *(["--verbose"] if verbose else []),
               "run", "--single-process", "--role", role, "--config", config]
    parent = os.getpid()
    return subprocess.Popen(command, env=dict(os.environ, **{WAKE_FD_ENV: str(wake_fd)}),
                            pass_fds=(wake_fd,), preexec_fn=lambda: _die_with(parent))


def _die_with(parent: int) -> None:
    """In the child, before exec: be killed when the parent dies, however it dies."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
