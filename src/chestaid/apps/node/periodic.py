"""A pass run every `period` seconds in its own thread until stopped, never dying of one failed pass (the study
assembler and the notification escalator are such passes)."""

from __future__ import annotations

import logging
import threading

from chestaid.core.errors import describe

log = logging.getLogger("chestaid.node")


class Periodic:
    """Subclasses give `run_once()`; `start()` runs it every `period` s in a thread named `name`; `stop()` ends it."""

    name = "chestaid-node-periodic"

    def __init__(self, period: float = 1.0) -> None:
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def run_once(self) -> int:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.run_once()
            except Exception as e:  # noqa: BLE001 - the thread never dies of one pass
                log.error("%s: pass failed (%s)", self.name, describe(e))
