"""Language detection and severity grading in a process of their own, one slice ahead.

Both are pure functions of a mail's text, and together they were a third of the CPU time
the ingest job spent per mail; lingua and the regexes hold the GIL, so a thread cannot
help. A small child process (an interpreter, bot.language, bot.classify and lingua's
models: ~30 MB, which then the ingest process does not load) runs the very same detect()
and grade() on the texts of the next slice while ingest records the current one; the
results reach decide() through bot.given. Nothing depends on the worker being there: a
text it has not answered, or a worker that died or hangs, is handled in the ingest process
as before, and the decision is the same either way.

    python -m bot.textworker IN OUT    (started by TextWorker: the ends of two pipes)

Batches go both ways as marshal data behind a 4-byte length; the first message gives the
severity evidence as plain values, so the child never loads the rules (pydantic, YAML).
The child imports only what it uses (multiprocessing.connection would cost it 4.5 MB,
subprocess and logging 2 MB: those are imported where the ingest process needs them).
"""

from __future__ import annotations

import marshal
import os
import select
import sys
from dataclasses import dataclass, field

from bot.classify import NO_DEFAULT, TEXT_LIMIT, Classifier, Graded, evidence_from_portable, \
    graded_key, portable_evidence
from bot.language import SAMPLE_CHARS, Detected, detect

ANSWER_SECONDS = 30.0  # a worker that takes longer is taken for hung and replaced by local work
READ = max(SAMPLE_CHARS, TEXT_LIMIT)  # all that detect() and grade() read of a body


@dataclass
class Answers:
    """A batch's results, as bot.language.detected_elsewhere and bot.classify.graded_elsewhere
    take them ({} each when the worker failed)."""

    detected: dict[str, Detected] = field(default_factory=dict)
    graded: dict[tuple, Graded] = field(default_factory=dict)


class TextWorker:
    """Asks the child process for detections and grades, one batch of mails at a time, in
    order. The child starts with the first batch; once it has failed, the work stays local.
    `severity`: the evidence grade() will be called with (None: detection only)."""

    def __init__(self, severity=None) -> None:
        self._severity = severity
        self._process = None  # subprocess.Popen
        self._connection: _Pipes | None = None
        self._failed = False
        self._asked: list[list[tuple[str, str]]] = []  # batches sent and not yet answered, oldest first
        self._numbered = 0  # the number of the oldest of them

    def ask(self, texts: list[tuple[str, str]]) -> int:
        """Have these mails' (subject, text) detected and graded in the background;
        answer(the number returned) gives the results. Batches are answered in the order
        they were asked."""
        texts = [(subject, body[:READ]) for subject, body in texts]
        if texts and self._started():
            try:
                self._connection.send(texts)
            except OSError as error:
                self._fail(f"cannot reach it ({error})")
        self._asked.append(texts if self._connection is not None else [])
        return self._numbered + len(self._asked) - 1

    def answer(self, batch: int) -> Answers:
        """The results of that batch. Batches asked before it and not collected (a drain
        stopped mid-chunk) are received and dropped."""
        found = Answers()
        while self._numbered <= batch and self._asked:
            texts = self._asked.pop(0)
            self._numbered += 1
            if texts and self._connection is not None:
                found = self._receive(texts)
        return found

    def _receive(self, texts: list[tuple[str, str]]) -> Answers:
        try:
            values = self._connection.recv(ANSWER_SECONDS)
        except (OSError, EOFError, TimeoutError) as error:
            self._fail(f"{type(error).__name__}: {error}")
            return Answers()
        found = Answers()
        for (subject, body), (detected, graded) in zip(texts, values):
            found.detected[sample(subject, body)] = Detected(*detected)
            if graded is not None:
                found.graded[graded_key(self._severity, subject, body)] = Graded.from_portable(graded)
        return found

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()  # the child reads EOF and exits
            self._connection = None
        if self._process is not None:
            import subprocess
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def _started(self) -> bool:
        if self._connection is None and not self._failed:
            import subprocess
            (their_in, our_out), (our_in, their_out) = os.pipe(), os.pipe()
            try:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "bot.textworker", str(their_in), str(their_out)],
                    pass_fds=(their_in, their_out), stdin=subprocess.DEVNULL)
            except OSError as error:
                _Pipes(our_in, our_out).close()
                self._fail(f"cannot start it ({error})")
            else:
                self._connection = _Pipes(our_in, our_out)
            finally:
                os.close(their_in)
                os.close(their_out)
            if self._connection is not None:
                try:
                    self._connection.send(self._severity and portable_evidence(self._severity))
                except OSError as error:
                    self._fail(f"cannot reach it ({error})")
        return self._connection is not None

    def _fail(self, why: str) -> None:
        """Detect locally from now on; the batches in flight are answered with nothing."""
        import logging
        logging.getLogger(__name__).warning("text worker: %s; detecting and grading in the ingest process "
                                            "from now on", why)
        self._failed = True
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self.close()


class _Pipes:
    """One end of the conversation: values sent and received whole, in order."""

    def __init__(self, incoming: int, outgoing: int) -> None:
        self.incoming, self.outgoing = incoming, outgoing

    def send(self, value) -> None:
        data = marshal.dumps(value)
        view = memoryview(len(data).to_bytes(4, "big") + data)
        while view:
            view = view[os.write(self.outgoing, view):]

    def recv(self, timeout: float | None = None):
        """The next value; TimeoutError when none begins within `timeout` seconds."""
        if timeout is not None and not select.select([self.incoming], [], [], timeout)[0]:
            raise TimeoutError(f"no answer within {timeout:.0f} s")
        return marshal.loads(self._exactly(int.from_bytes(self._exactly(4), "big")))

    def _exactly(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = os.read(self.incoming, size)
            if not chunk:
                raise EOFError("the other side has gone")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        for fd in (self.incoming, self.outgoing):
            os.close(fd)


def sample(subject: str, body: str) -> str:
    """What decide() detects the language of (and all that detect() reads of it)."""
    return f"{subject}\n{body}"[:SAMPLE_CHARS]


def serve(pipes: _Pipes) -> None:
    """The child: answer each batch until the ingest process goes away."""
    try:
        evidence = pipes.recv()
        classifier = evidence and Classifier(evidence_from_portable(evidence))
        while True:
            answers = []
            for subject, body in pipes.recv():
                d = detect(sample(subject, body))
                graded = classifier and classifier.grade(subject, body, NO_DEFAULT).portable()
                answers.append(((d.code, d.confidence, d.length), graded))
            pipes.send(answers)
    except (EOFError, OSError):
        return


if __name__ == "__main__":
    serve(_Pipes(int(sys.argv[1]), int(sys.argv[2])))
