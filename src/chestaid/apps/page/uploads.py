"""The page's private upload folder: 0700, owned by this server, emptied while it runs and removed at shutdown.

Gradio writes every upload (and nothing else of ours: heat maps stay in memory) under this folder, by content:
two uploads of the same bytes share one file. Each upload the page's guard sees `claim`s its file, each scoring
request `release`s it, and the file is deleted when no request holds it any more (and no upload is in flight
that may be handing it to another request), so identical files uploaded at the same time each get their
result. A sweeper deletes whatever is older than `max_age_s` (an upload
never analysed, Gradio's leftovers); `close()` removes the folder. Old `/gradio_api/file=` URLs therefore
point at nothing after a restart, and the security middleware refuses any URL under the folder anyway."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chestaid.core.errors import ChestaidError

log = logging.getLogger(__name__)


class UploadFolder:
    """A fresh private folder (mode 0700) under `parent` (the system's temporary folder by default)."""

    def __init__(self, parent: str | Path | None = None, max_age_s: float = 300, sweep_every_s: float = 10,
                 empty_age_s: float = 10) -> None:
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.path = Path(tempfile.mkdtemp(prefix="chestaid-page-", dir=parent)).resolve()
        except OSError as e:
            raise ChestaidError(f"cannot make the page's upload folder under {parent or tempfile.gettempdir()}: "
                                f"{e.strerror}") from e
        os.chmod(self.path, 0o700)
        self.max_age_s, self.empty_age_s = max_age_s, empty_age_s
        self._lock = threading.Lock()  # guards the three below
        self._holders: dict[Path, int] = {}  # file -> requests that uploaded it and have not released it
        self._in_flight = 0  # uploads being stored by Gradio, whose paths are not known yet
        self._deferred: set[Path] = set()  # released to zero while an upload was in flight
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sweep_loop, args=(sweep_every_s,), daemon=True,
                                        name="chestaid-upload-sweeper")

    def start(self) -> UploadFolder:
        self._thread.start()
        return self

    def holds(self, path: str | Path) -> bool:
        """Whether `path` lies inside the folder (after resolving links)."""
        try:
            return Path(os.path.realpath(path)).is_relative_to(self.path)
        except (OSError, ValueError):
            return False

    @contextmanager
    def uploading(self) -> Iterator[None]:
        """Around one upload request until its files are claimed: no released file is deleted meanwhile (it may
        be the very file this upload stores again)."""
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:  # deleted under the lock: no upload can start storing the same file meanwhile
                self._in_flight -= 1
                ready = [] if self._in_flight else [p for p in self._deferred if not self._holders.get(p)]
                self._deferred.difference_update(ready)
                for p in ready:
                    self.delete(p)

    def claim(self, paths: list[Path]) -> None:
        """One more request holds each of these uploaded files."""
        with self._lock:
            for path in paths:
                if self.holds(path):
                    key = Path(os.path.realpath(path))
                    self._holders[key] = self._holders.get(key, 0) + 1

    def release(self, path: str | Path | None) -> None:
        """A request is done with its upload: deleted once no request holds it (unclaimed files at once)."""
        if not path or not self.holds(path):
            return
        key = Path(os.path.realpath(path))
        with self._lock:
            left = self._holders.get(key, 0) - 1
            if left > 0:
                self._holders[key] = left
                return
            self._holders.pop(key, None)
            if self._in_flight:
                self._deferred.add(key)
            else:
                self.delete(key)

    def delete(self, path: str | Path | None) -> None:
        """Delete one upload (and its Gradio hash folder when that is left empty); only inside the folder."""
        if not path or not self.holds(path):
            return
        p = Path(os.path.realpath(path))
        p.unlink(missing_ok=True)
        parent = p.parent
        while parent != self.path and parent.is_relative_to(self.path):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def files(self) -> list[Path]:
        return [p for p in self.path.rglob("*") if p.is_file()] if self.path.is_dir() else []

    def sweep(self, max_age_s: float | None = None) -> int:
        """Delete files older than `max_age_s`, the empty temporary files Gradio's upload leaves once older than
        `empty_age_s`, and empty folders; the number of files deleted."""
        now = time.time()
        limit = now - (self.max_age_s if max_age_s is None else max_age_s)
        removed = 0
        for p in self.files():
            try:
                st = p.stat()
                if st.st_mtime <= limit or (st.st_size == 0 and st.st_mtime <= now - self.empty_age_s):
                    p.unlink(missing_ok=True)
                    with self._lock:  # an upload never scored: nobody will release it
                        self._holders.pop(Path(os.path.realpath(p)), None)
                    removed += 1
            except OSError:
                continue
        for d in sorted((d for d in self.path.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
            try:
                d.rmdir()
            except OSError:
                pass
        if removed:
            log.info("upload folder: %d old file(s) deleted", removed)
        return removed

    def _sweep_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.sweep()
            except OSError as e:  # a sweep that fails is retried at the next tick
                log.warning("upload folder sweep failed: %s", e)

    def close(self) -> None:
        """Stop the sweeper and remove the folder with everything in it."""
        self._stop.set()
        shutil.rmtree(self.path, ignore_errors=True)
        log.info("upload folder removed")
