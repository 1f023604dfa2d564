"""A small progress bar for the benches' long phases, on stderr.

Steps are weighted by the seconds they are expected to take; while a step runs, a
daemon thread redraws the bar twice a second, moving through the step by elapsed
time (never past it), so a 15-second window shows movement. On a terminal the bar
redraws one line in place; otherwise (a log file, CI) it prints one line per
step. It costs the measured processes nothing beyond two wake-ups a second.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

WIDTH = 28


def clock(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(self, label: str, total_seconds: float, out: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total_seconds, 1e-9)
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.done = 0.0  # expected seconds of the finished steps
        self.started = time.monotonic()
        self.step_name = ""
        self.step_weight = 0.0
        self.step_started = 0.0
        self.steps = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _fraction(self) -> float:
        inside = 0.0
        if self.step_weight:
            inside = min(1.0, (time.monotonic() - self.step_started) / self.step_weight)
        return min(1.0, (self.done + inside * self.step_weight) / self.total)

    def _draw(self, final: bool = False) -> None:
        with self._lock:
            frac = 1.0 if final else self._fraction()
            elapsed = time.monotonic() - self.started
            eta = elapsed / frac - elapsed if frac > 0.02 else float("nan")
            fill = round(frac * WIDTH)
            bar = "#" * fill + "." * (WIDTH - fill)
            eta_text = clock(eta) if eta == eta else "?"
            line = (
                f"{self.label} [{bar}] {frac:4.0%} {clock(elapsed)} elapsed, ETA {eta_text}"
                f"  {self.step_name}"
            )
            if self.tty:
                self.out.write("\r\x1b[K" + line[:160] + ("\n" if final else ""))
            else:
                self.out.write(line + "\n")
            self.out.flush()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._draw()

    @contextmanager
    def step(self, name: str, expected_seconds: float) -> Iterator[None]:
        """A step of the phase, expected to take about `expected_seconds`."""
        self.step_name, self.step_weight = name, max(expected_seconds, 0.0)
        self.step_started = time.monotonic()
        self.steps += 1
        if not self.tty:
            self._draw()
        try:
            yield
        finally:
            self.done += self.step_weight
            self.step_weight = 0.0

    def __enter__(self) -> Progress:
        if self.tty:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.step_name = "done"
        self._draw(final=True)

    def note(self, text: str) -> None:
        """A line of output that must not be overwritten by the bar."""
        with self._lock:
            if self.tty:
                self.out.write("\r\x1b[K")
            self.out.flush()
            print(text, flush=True)
