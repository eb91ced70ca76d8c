"""What a training stage prints: our lines on the terminal, Ray's own lines in the run's log file.

Ray forwards every line its processes print to the driver's stdout/stderr, prefixed with the process
(``(RayTrainWorker pid=123) ...``, ``(TrainController pid=45) ...``): its per-epoch
``TrainingReport(...)`` dumps, process-group set-up, placement-group notices, C++ ``core_worker.cc``
messages. The driver's ``ray`` loggers add the dashboard URL and other notices.

:func:`quiet_ray` (the default of ``python -m workflows.stage``; ``--verbose`` or ``POSE_VERBOSE=1``
turn it off) wraps ``sys.stdout`` and ``sys.stderr`` with :class:`RayLineFilter` and sends the ``ray``
loggers to the log file:

- a forwarded line whose message starts with a stage tag (``[d2_16] ...``: the train loop's header,
  progress, epoch, resume and warning lines) is shown without Ray's prefix;
- a Python traceback of a training worker (``RayTrainWorker``: from ``Traceback (most recent call
  last):`` through its exception line, and the chained ones after it) and a worker's ERROR /
  CRITICAL log record are shown too, with Ray's prefix (so the process is known), and kept in the
  log file: a failing worker's error reaches the terminal in full. Tracebacks are followed per
  process, so two workers failing at once do not mix up. Ray's own helper actors' tracebacks (e.g.
  its placement-group cleaner's, when several local Ray instances share the machine) stay in the
  log, as do the controller's truncated copies of the worker's;
- what Ray's daemons forward (``(raylet, ip=...) ...``: after a lost node, the dead raylet's 40-line
  ``[state-dump]``) goes to the log file, announced by one ``[ray] ...`` line on the terminal;
- every other forwarded line, and every ``ray`` log record below ERROR, goes to the log file only;
- lines the driver prints itself (``starting d2_16 fresh``, the summary, ``error: ...``) pass unchanged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["VERBOSE_ENV", "RayLineFilter", "quiet_ray", "verbose_from_env"]

#: environment switch: "1" (or "true"/"yes") shows Ray's own lines, as ``--verbose`` does
VERBOSE_ENV = "POSE_VERBOSE"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: "(RayTrainWorker pid=123)", "(TrainController pid=45, ip=10.0.0.2)", "(raylet, ip=10.0.0.3)",
#: "(autoscaler +1m2s)" ... then the message
_FORWARDED = re.compile(r"^\((?P<proc>(?:raylet|autoscaler)\b[^()]*|[^()]*?pid=[^()]*)\) ?(?P<msg>.*)$")
#: Ray's own daemons: what they forward (a lost node's raylet prints its whole state, ``[state-dump]``
#: lines) goes to the log, announced by one line on the terminal
_DAEMONS = ("raylet", "autoscaler")
#: seconds between two announcements of the same daemon's lines
_ANNOUNCE_EVERY_S = 60.0
#: a record of Ray's loggers below ERROR ("2026-12-05 06:12:20,771\tINFO worker.py:2029 -- ...")
_RAY_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\s+(DEBUG|INFO|WARNING|WARN)\s+\S+:\d+ -- ")
#: a train-loop line: "[d2_16] ...", "[lift supervised] ...", "[wandb] ..."
_OURS = re.compile(r"^\[[\w .:@-]+\] ")
#: a Python logging record at ERROR or above, as Ray's and our loggers format them
_ERROR_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\s+(ERROR|CRITICAL)\s")
_TRACEBACK = "Traceback (most recent call last):"
#: the processes whose tracebacks and error records are shown: Ray Train's workers, which run our code
_WORKERS = ("RayTrainWorker",)
#: lines between two chained tracebacks
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


def verbose_from_env() -> bool:
    """Whether ``POSE_VERBOSE`` asks for Ray's own lines."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class RayLineFilter(io.TextIOBase):
    """A text stream in front of ``stream``: whole lines are sorted as the module docstring says;
    ``log`` receives what is not shown (with Ray's prefix kept, so the process is known)."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.log = log
        self._buf = ""
        self.shown = 0
        self.hidden = 0
        #: per forwarding process ("RayTrainWorker pid=123"): "frames" inside a traceback, "after" just
        #: past its exception line (a chained traceback may follow)
        self._tb: dict[str, str] = {}
        #: per Ray daemon ("raylet, ip=10.0.0.3"): when its lines were last announced on the terminal
        self._announced: dict[str, float] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        plain = _ANSI.sub("", line)
        m = _FORWARDED.match(plain)
        if m is not None and m.group("proc").startswith(_DAEMONS):
            self._daemon_line(m.group("proc"), plain)
        elif plain.startswith("[state-dump]"):  # a raylet's state dump continued without Ray's prefix
            self._hide(plain)
        elif m is None and not _RAY_RECORD.match(plain):
            self._show(line)
        elif m is not None and _OURS.match(m.group("msg")):
            self._show(m.group("msg"))
        elif m is not None and m.group("proc").startswith(_WORKERS) and self._is_error(m.group("proc"), m.group("msg")):
            self._show(plain)
            self._hide(plain)
        else:
            self._hide(plain)

    def _daemon_line(self, proc: str, plain: str) -> None:
        """A line a Ray daemon forwarded: into the log; one line on the terminal says so, at most every
        :data:`_ANNOUNCE_EVERY_S` per daemon."""
        now = time.monotonic()
        if now - self._announced.get(proc, -_ANNOUNCE_EVERY_S) >= _ANNOUNCE_EVERY_S:
            self._announced[proc] = now
            where = getattr(self.log, "name", "the log")
            self._show(f"[ray] the {proc} printed its own messages (after a lost node: its state dump); "
                       f"they are in {where}")
        self._hide(plain)

    def _is_error(self, proc: str, msg: str) -> bool:
        """Whether forwarded message ``msg`` of process ``proc`` belongs to a traceback or an error
        record (and follow the process's traceback state)."""
        state = self._tb.get(proc)
        if msg.startswith(_TRACEBACK):
            self._tb[proc] = "frames"
            return True
        if state == "frames":
            if not msg.strip() or msg[0] in " \t":  # frames ("  File ...", "    code", "    ^^^^") and blanks
                return True
            self._tb[proc] = "after"  # the exception line: "ValueError: ..."
            return True
        if state == "after" and (not msg.strip() or msg.startswith(_CHAINED)):
            return True
        self._tb.pop(proc, None)
        return bool(_ERROR_RECORD.match(msg))

    def _show(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
        self.shown += 1

    def _hide(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()
        self.hidden += 1

    def flush(self) -> None:
        if self._buf:
            line, self._buf = self._buf, ""
            self._line(line)
        self.stream.flush()

    def fileno(self) -> int:  # a subprocess given sys.stdout writes to the terminal itself
        return self.stream.fileno()

    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except ValueError:  # the stream closed (asked at exit by Ray's colorama, which kept this filter)
            return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


@contextlib.contextmanager
def quiet_ray(log_path: Path) -> Iterator[Path]:
    """While inside: Ray's forwarded lines and ``ray`` log records go to ``log_path`` (appended, one
    header line per run), our own lines to the terminal. Yields ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Ray folds lines repeated across processes into one, printed later ("[repeated 2x across
    # cluster]"), which cuts a worker's traceback apart; read when ray is imported (after this)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    log.write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
    log.flush()
    saved_streams = sys.stdout, sys.stderr
    sys.stdout = RayLineFilter(saved_streams[0], log)
    sys.stderr = RayLineFilter(saved_streams[1], log)
    # handlers made before (at `import ray`) hold the real streams: point them at the filters
    moved: list[tuple[logging.StreamHandler, TextIO]] = []
    for name in ("ray", "ray.train", "ray.tune", "ray.data"):
        for h in logging.getLogger(name).handlers:
            if isinstance(h, logging.StreamHandler) and h.stream in saved_streams:
                moved.append((h, h.stream))
                h.setStream(sys.stdout if h.stream is saved_streams[0] else sys.stderr)
    try:
        yield log_path
    finally:
        for s in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                s.flush()
        sys.stdout, sys.stderr = saved_streams
        for h, stream in moved:
            h.setStream(stream)
        log.close()
