"""Language detection in a process of its own, one slice of mail ahead of the decisions.

lingua holds the GIL, and detection is a fifth of the CPU time the ingest job spends per
mail, so a thread cannot help. A small child process (an interpreter, bot.language and
lingua's models: ~30 MB, which then the ingest process does not load) runs the very same
detect() on the texts of the next slice while ingest records the current one; the
results reach decide() through bot.language.answers(). Nothing depends on the worker
being there: a text it has not answered, or a worker that died or hangs, is detected in
the ingest process as before, and the decision is the same either way.

    python -m bot.langworker IN OUT    (started by LanguageWorker: the ends of two pipes)

Batches go both ways as marshal data behind a 4-byte length, and the child imports only
what it uses (multiprocessing.connection would cost it 4.5 MB, subprocess and logging 2 MB:
those are imported where the ingest process needs them).
"""

from __future__ import annotations

import marshal
import os
import select
import sys

from bot.language import SAMPLE_CHARS, Detected, detect

ANSWER_SECONDS = 30.0  # a worker that takes longer is taken for hung and replaced by local detection


class LanguageWorker:
    """Asks the child process for detections, one batch of texts at a time, in order.
    The child starts with the first batch; once it has failed, detection stays local."""

    def __init__(self) -> None:
        self._process = None  # subprocess.Popen
        self._connection: _Pipes | None = None
        self._failed = False
        self._asked: list[list[str]] = []  # batches sent and not yet answered, oldest first
        self._numbered = 0  # the number of the oldest of them

    def ask(self, texts: list[str]) -> int:
        """Have these texts detected in the background; answer(the number returned) gives
        the results. Batches are answered in the order they were asked."""
        samples = [text[:SAMPLE_CHARS] for text in texts]  # all that detect() reads of a text
        if samples and self._started():
            try:
                self._connection.send(samples)
            except OSError as error:
                self._fail(f"cannot reach it ({error})")
        self._asked.append(samples if self._connection is not None else [])
        return self._numbered + len(self._asked) - 1

    def answer(self, batch: int) -> dict[str, Detected]:
        """The detections of that batch, by sample ({} if the worker failed). Batches asked
        before it and not collected (a drain stopped mid-chunk) are received and dropped."""
        found = {}
        while self._numbered <= batch and self._asked:
            samples = self._asked.pop(0)
            self._numbered += 1
            if samples and self._connection is not None:
                found = self._receive(samples)
        return found

    def _receive(self, samples: list[str]) -> dict[str, Detected]:
        try:
            values = self._connection.recv(ANSWER_SECONDS)
        except (OSError, EOFError, TimeoutError) as error:
            self._fail(f"{type(error).__name__}: {error}")
            return {}
        return {sample: Detected(*detected) for sample, detected in zip(samples, values)}

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
                    [sys.executable, "-m", "bot.langworker", str(their_in), str(their_out)],
                    pass_fds=(their_in, their_out), stdin=subprocess.DEVNULL)
                self._connection = _Pipes(our_in, our_out)
            except OSError as error:
                _Pipes(our_in, our_out).close()
                self._fail(f"cannot start it ({error})")
            finally:
                os.close(their_in)
                os.close(their_out)
        return self._connection is not None

    def _fail(self, why: str) -> None:
        """Detect locally from now on; the batches in flight are answered with nothing."""
        import logging
        logging.getLogger(__name__).warning("language worker: %s; detecting in the ingest process from now on", why)
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


def serve(pipes: _Pipes) -> None:
    """The child: answer each batch of samples until the ingest process goes away."""
    while True:
        try:
            samples = pipes.recv()
        except (EOFError, OSError):
            return
        found = [detect(sample) for sample in samples]
        try:
            pipes.send([(d.code, d.confidence, d.length) for d in found])
        except OSError:
            return


if __name__ == "__main__":
    serve(_Pipes(int(sys.argv[1]), int(sys.argv[2])))
