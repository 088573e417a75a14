"""Grading math answers with math-verify, with a timeout that holds in any thread or process.

The model's final answer is found by endo_rl.evaluation.extraction: by default the content of its last
`\\boxed{}` ("boxed"; the Qwen2.5-Math harness falls back further, see `extract="harness"` there). Gold and
answer are compared by endo_rl.evaluation.compare: both normalized, then parsed by math-verify and compared
with `verify(gold, answer)`, gold first (math-verify lets the gold decide, e.g., whether a set or an interval
is meant); a gold that does not parse as math is a `parse_error`, never a silent string comparison.

Why a worker process: math-verify's own timeout uses `signal.alarm`, which only works in the main thread;
elsewhere the error was swallowed and every answer scored 0 in other frameworks. And some inputs
(`9^{9^{9^{9}}}`) hang inside C code that no signal interrupts. So `Grader` sends each answer to a child
process that grades it in its main thread under a `setitimer` deadline, and kills and restarts the child when
it does not answer by the deadline plus a grace period. Every outcome is a `Grade` with a status; a timeout
or a parse failure is counted by the caller, never turned into a silent 0.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from endo_rl.evaluation.compare import compare
from endo_rl.evaluation.extraction import check_mode, final_answer

STATUSES = ("ok", "no_answer", "parse_error", "timeout")


@dataclass(frozen=True)
class Grade:
    correct: bool
    status: str
    """ok: graded (correct or not); no_answer: no answer found (no `\\boxed{}` in boxed mode); parse_error:
    the answer or the gold is not parseable math (detail says which); timeout: grading ran past its
    deadline."""
    detail: str = ""


# --- inside the worker process -------------------------------------------------------------------------


class _Deadline(BaseException):
    """BaseException, so math-verify's `except Exception` blocks cannot swallow it."""


def _on_alarm(signum, frame):
    raise _Deadline()


def _grade_here(gold: str, answer: str, timeout_s: float, rounded_gold: bool = False) -> dict:
    """Grade in this process's main thread under a `setitimer` deadline. math-verify's own timeouts are off."""
    import signal

    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return compare(gold, answer, rounded_gold)
    except _Deadline:
        return {"correct": False, "status": "timeout", "detail": f"grading took over {timeout_s:g} s"}
    except RecursionError:
        return {"correct": False, "status": "parse_error", "detail": "answer nested too deeply"}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _worker_main() -> None:
    """Loop: one JSON request per stdin line -> one JSON grade per stdout line."""
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    compare("1", "1")  # import math-verify and warm up its regexes before saying ready
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        grade = _grade_here(req["gold"], req["answer"], req["timeout_s"], req.get("rounded_gold", False))
        out.write(json.dumps(grade) + "\n")
        out.flush()


# --- in the caller -------------------------------------------------------------------------------------


class Grader:
    """Grades answers in a child process; usable from any thread (calls are serialized) and any process.

    `timeout_s` bounds each grade inside the child; if the child does not answer within `timeout_s + grace_s`
    it is killed and restarted, and the grade is a timeout.
    """

    def __init__(
        self,
        timeout_s: float = 5.0,
        grace_s: float = 2.0,
        start_timeout_s: float = 120.0,
        extract: str = "boxed",
    ):
        check_mode(extract)
        self.extract = extract
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.start_timeout_s = start_timeout_s
        # tests set this above the parent's deadline to exercise the kill path
        self._child_timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._buffer = b""
        self._lock = threading.Lock()

    def grade(self, gold: str, completion: str, rounded_gold: bool = False) -> Grade:
        """Grade the completion's final answer (found as `self.extract` says) against the gold answer.
        `rounded_gold`: the gold is a rounded measurement (Minerva); see endo_rl.evaluation.compare."""
        answer = final_answer(completion, self.extract)
        if answer is None:
            what = "no \\boxed{} in the completion" if self.extract == "boxed" else "no answer found"
            return Grade(False, "no_answer", what)
        return self.grade_answer(gold, answer, rounded_gold)

    def grade_answer(self, gold: str, answer: str, rounded_gold: bool = False) -> Grade:
        request = {
            "gold": gold,
            "answer": answer,
            "timeout_s": self._child_timeout_s,
            "rounded_gold": rounded_gold,
        }
        request = json.dumps(request) + "\n"
        with self._lock:
            self._ensure_started()
            try:
                self._proc.stdin.write(request.encode())
                self._proc.stdin.flush()
                reply = self._read_line(time.monotonic() + self.timeout_s + self.grace_s)
            except BrokenPipeError:
                reply = None
            if reply is None:
                died = self._proc.poll()
                self._kill()
                if died is not None:
                    return Grade(False, "parse_error", f"grader process died (exit code {died})")
                return Grade(
                    False, "timeout", f"grader did not answer within {self.timeout_s + self.grace_s:g} s"
                )
        result = json.loads(reply)
        return Grade(result["correct"], result["status"], result.get("detail", ""))

    def _ensure_started(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "endo_rl.evaluation.grading"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._buffer = b""
        if self._read_line(time.monotonic() + self.start_timeout_s) is None:
            self._kill()
            raise RuntimeError(f"the grading process did not start within {self.start_timeout_s:g} s")

    def _read_line(self, deadline: float) -> str | None:
        """One line from the child, or None if the deadline passes or the child exits first."""
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                stream.close()
        self._proc = None

    def close(self) -> None:
        with self._lock:
            self._kill()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            self._kill()


if __name__ == "__main__":
    _worker_main()
