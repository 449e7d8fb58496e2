"""The store's conflicts: an instance reusing a stored SOPInstanceUID with other content is kept apart, not scored."""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

from chestaid.core.fileio import atomic_write

if TYPE_CHECKING:
    from chestaid.store.database import Instance


class ConflictsMixin:
    """The conflicts half of `Store` (it provides `root`, `instance`, `_tx` and `_query`)."""

    def other_content(self, instance: Instance) -> str:
        """"" when `instance` is what the store holds under its SOPInstanceUID (a true duplicate: same patient,
        study, series and, in the same transfer syntax, the same pixel bytes), else what differs."""
        row = self.instance(instance.sop_uid)
        if row is None:
            return ""
        differ = [name for name, column in (("patient", "patient_id"), ("study", "study_uid"),
                                            ("series", "series_uid")) if row[column] != getattr(instance, column)]
        if (row["transfer_syntax"] == instance.transfer_syntax and row["pixel_sha256"] and instance.pixel_sha256
                and row["pixel_sha256"] != instance.pixel_sha256):
            differ.append("pixels")
        return ", ".join(differ)

    def conflict(self, instance: Instance, data: bytes, reason: str) -> None:
        """Keep an instance that reuses a stored SOPInstanceUID with other content: durable, recorded, not
        scored (its file is named by the UID and the time it came)."""
        digest = hashlib.sha256(instance.sop_uid.encode()).hexdigest()
        path = self.root / "conflicts" / digest[:2] / f"{digest}-{time.time_ns()}.dcm"
        atomic_write(path, lambda f: f.write(data), mode=0o600)
        with self._tx() as db:
            db.execute("INSERT INTO conflicts (sop_uid, study_uid, series_uid, calling_ae, path, received_at, reason)"
                       " VALUES (?,?,?,?,?,?,?)", (instance.sop_uid, instance.study_uid, instance.series_uid,
                                                   instance.calling_ae, str(path.relative_to(self.root)),
                                                   time.time(), reason))

    def conflicts(self) -> list[dict]:
        """Instances kept as conflicts, oldest first."""
        return [dict(r) for r in self._query("SELECT * FROM conflicts ORDER BY id")]
