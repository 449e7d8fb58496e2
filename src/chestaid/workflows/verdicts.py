"""Clinician verdicts on the node's instances, in and out of the store: `chestaid verdicts import STORE CSV` (labels
extracted from radiology reports, by SOPInstanceUID or AccessionNumber) and `chestaid verdicts export STORE
--out TABLE` (a table `prepare --table` reads: path, patient_id, one 0/1 column per finding).

A verdict is present / absent / can't tell per finding, and yes / no for "priority appropriate"; the store keeps
every verdict (append-only) and the latest counts. Patient identifiers never reach the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import write_text
from chestaid.data.table import read_csv_text
from chestaid.store import PRIORITY, Store

log = logging.getLogger(__name__)
KEYS = ("SOPInstanceUID", "AccessionNumber")
SPELLINGS = {"present": "present", "1": "present", "yes": "present", "true": "present", "positive": "present",
             "absent": "absent", "0": "absent", "no": "absent", "false": "absent", "negative": "absent",
             "can't tell": "can't tell", "cant tell": "can't tell", "unsure": "can't tell", "uncertain": "can't tell",
             "-1": "can't tell"}  # -1: CheXpert's labeller's "uncertain"
PRIORITY_COLUMNS = ("priority appropriate", "priority_appropriate", "priority")


@dataclass
class VerdictImport:
    """What an import did: verdicts written, instances they concern, and (CSV row, reason) for rows passed over."""

    verdicts: int = 0
    instances: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


def import_verdicts(store: str | Path, csv: str | Path, user: str = "import") -> VerdictImport:
    """Append the verdicts of a CSV: a SOPInstanceUID or AccessionNumber column, one column per finding (present,
    absent, can't tell, or 1 / 0 / -1; empty = no verdict) and optionally "priority appropriate" (yes / no)."""
    table = read_csv_text(csv)
    key = next((k for k in KEYS if k in table.columns), None)
    if key is None:
        raise ChestaidError(f"{csv}: needs a SOPInstanceUID or AccessionNumber column")
    findings = [c for c in table.columns if c not in KEYS]
    if not findings:
        raise ChestaidError(f"{csv}: no finding columns beside {key}")
    opened = Store.open(store)
    try:
        by_accession: dict[str, list[str]] = {}  # scored images only: not the node's own results coming back
        for row in opened.instances("scored"):
            if row["accession"]:
                by_accession.setdefault(row["accession"], []).append(row["sop_uid"])
        done, touched = VerdictImport(), set()
        for number, row in enumerate(table.to_dict("records"), start=2):
            if not str(row[key]).strip():
                done.skipped.append((number, f"no {key}"))
                continue
            uids = [row[key]] if key == "SOPInstanceUID" else by_accession.get(row[key], [])
            uids = [u for u in uids if u and opened.has(u)]
            if not uids:
                done.skipped.append((number, f"no instance with this {key} in the store"))
                continue
            try:
                verdicts = {_finding(c): _verdict(c, row[c]) for c in findings if str(row[c]).strip()}
            except ValueError as e:
                done.skipped.append((number, str(e)))
                continue
            for uid in uids:
                done.verdicts += opened.add_verdicts(uid, verdicts, user, f"import:{Path(csv).name}")
                touched.add(uid)
        done.instances = len(touched)
    finally:
        opened.close()
    log.info("verdicts: %d written for %d instance(s) from %s; %d row(s) passed over", done.verdicts,
             done.instances, Path(csv).name, len(done.skipped))
    return done


def _finding(column: str) -> str:
    return PRIORITY if column.strip().lower() in PRIORITY_COLUMNS else column.strip()


def _verdict(column: str, value: str) -> str:
    text = str(value).strip().lower().replace("’", "'")
    if _finding(column) == PRIORITY:
        if text in ("yes", "1", "true", "no", "0", "false"):
            return "yes" if text in ("yes", "1", "true") else "no"
        raise ValueError(f"{column}: {value!r} is not yes or no")
    if text not in SPELLINGS:
        raise ValueError(f"{column}: {value!r} is not present, absent or can't tell (or 1, 0, -1)")
    return SPELLINGS[text]


def verdict_table(store: str | Path, findings: list[str] | None = None) -> tuple[pd.DataFrame, int]:
    """(path, patient_id, one 0/1 column per finding) of the instances with a present/absent verdict on every
    finding (default: every finding anyone gave a verdict on), and how many instances with verdicts lacked one."""
    opened = Store.open(store)
    try:
        latest = opened.latest_verdicts()
        wanted = findings or sorted({f for v in latest.values() for f in v if f != PRIORITY})
        rows, incomplete = [], 0
        for uid, given in latest.items():
            instance = opened.instance(uid)
            if instance is None or instance["state"] != "scored":
                continue  # a refused, unreadable or non-image instance is no case for calibration or evaluation
            if not all(given.get(f) in ("present", "absent") for f in wanted):
                incomplete += 1
                continue
            rows.append({"path": str(opened.file_of(instance).resolve()), "patient_id": instance["patient_id"] or uid,
                         **{f: int(given[f] == "present") for f in wanted}})
    finally:
        opened.close()
    if not wanted:
        raise ChestaidError(f"{store}: no verdicts yet (the page's Worklist tab, or chestaid verdicts import)")
    return pd.DataFrame(rows, columns=["path", "patient_id", *wanted]), incomplete


def export_verdicts(store: str | Path, out: str | Path, findings: list[str] | None = None) -> tuple[Path, int, int]:
    """Write the verdict table to `out` (for `prepare --table`); returns (out, rows, instances left out)."""
    table, incomplete = verdict_table(store, findings)
    if table.empty:
        raise ChestaidError(f"{store}: no instance has a present/absent verdict on every one of "
                            f"{', '.join(table.columns[2:])}; choose fewer findings")
    write_text(out, table.to_csv(index=False))
    return Path(out), len(table), incomplete


def is_store(path: str | Path | None) -> bool:
    """Whether `path` is a node's store (its database is there)."""
    from chestaid.store import DB_NAME

    return path is not None and (Path(path) / DB_NAME).is_file()


def verdict_cache(store: str | Path, folder: Path, labels: list[str], size: int, task_name: str = "verdicts"):
    """The instances of `store` with a present/absent verdict on every one of `labels`, decoded into a cache at
    `folder` (rebuilt each time: verdicts change), through the same table `verdicts export` writes."""
    import shutil

    from chestaid.data.cache import Cache, prepare
    from chestaid.data.table import read_table

    table, incomplete = verdict_table(store, labels)
    if len(table) < 4:
        raise ChestaidError(f"{store}: {len(table)} instance(s) have a present/absent verdict on each of "
                            f"{', '.join(labels)} ({incomplete} more lack one): too few")
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    csv = folder.with_name(f"{folder.name}-verdicts.csv")  # beside the cache, which prepare wants to itself
    write_text(csv, table.to_csv(index=False))
    prepare(read_table(csv, task_name, labels), folder, size=size)
    return Cache.open(folder)


def verdict_period(store: str | Path) -> dict:
    """{instances with verdicts, first and last day they were received} (the dates a recalibration names)."""
    opened = Store.open(store)
    try:
        uids = list(opened.latest_verdicts())
        times = [opened.instance(u)["received_at"] for u in uids]
    finally:
        opened.close()
    import time

    day = lambda t: time.strftime("%Y-%m-%d", time.gmtime(t))  # noqa: E731
    return {"instances_with_verdicts": len(uids), "from": day(min(times)) if times else None,
            "to": day(max(times)) if times else None}
