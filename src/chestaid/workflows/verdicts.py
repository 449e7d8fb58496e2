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
    unchanged: int = 0  # verdicts the instances already had from the same file (a re-import)
    skipped: list[tuple[int, str]] = field(default_factory=list)


def import_verdicts(store: str | Path, csv: str | Path, user: str = "import") -> VerdictImport:
    """Append the verdicts of a CSV: a SOPInstanceUID or AccessionNumber column, one column per finding the store's
    model scores (present, absent, can't tell, or 1 / 0 / -1; empty = no verdict) and optionally "priority
    appropriate" (yes / no). A column that is no such finding is refused (with the closest name), before anything
    is written; a row with fewer or more cells than the header, or an unreadable value, is passed over with its
    row number; a verdict the instance already has from the same file is not appended again."""
    table, ragged = _read_rows(csv)
    key = next((k for k in KEYS if k in table.columns), None)
    if key is None:
        raise ChestaidError(f"{csv}: needs a SOPInstanceUID or AccessionNumber column")
    findings = [c for c in table.columns if c not in KEYS]
    if not findings:
        raise ChestaidError(f"{csv}: no finding columns beside {key}")
    source = f"import:{Path(csv).name}"
    opened = Store.open(store)
    try:
        _refuse_unknown_columns(csv, findings, opened.scored_findings())
        by_accession: dict[str, list[dict]] = {}
        for row in opened.instances():
            if row["accession"] and row["state"] != "ignored":  # not the node's own results coming back
                by_accession.setdefault(row["accession"], []).append(row)
        done, touched = VerdictImport(), set()
        done.skipped += ragged
        for number, row in zip(table.index, table.to_dict("records")):
            if not str(row[key]).strip():
                done.skipped.append((number, f"no {key}"))
                continue
            found = ([opened.instance(row[key])] if key == "SOPInstanceUID" else by_accession.get(row[key], []))
            found = [r for r in found if r is not None]
            # an image named by its UID takes the verdict whatever its state; an accession (a study) gives its
            # verdicts to its scored images, not to the lateral or the scout the model refused
            scored = [r["sop_uid"] for r in found if r["state"] == "scored" or key == "SOPInstanceUID"]
            if not scored:
                done.skipped.append((number, f"no instance with this {key} in the store" if not found else
                                     _not_scored(found)))
                continue
            try:
                verdicts = {_finding(c): _verdict(c, row[c]) for c in findings if str(row[c]).strip()}
            except ValueError as e:
                done.skipped.append((number, str(e)))
                continue
            for uid in scored:
                written = opened.add_verdicts(uid, verdicts, user, source, unless_same_source=True)
                done.verdicts += written
                done.unchanged += len(verdicts) - written
                touched.add(uid)
        done.instances = len(touched)
        done.skipped.sort()
    finally:
        opened.close()
    log.info("verdicts: %d written for %d instance(s) from %s (%d already there); %d row(s) passed over",
             done.verdicts, done.instances, Path(csv).name, done.unchanged, len(done.skipped))
    return done


def _read_rows(csv: str | Path) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """The CSV's rows as text cells indexed by their line number in the file (blank lines skipped), and
    (line, why) for rows whose number of cells is not the header's (passed over, never padded or shifted)."""
    import csv as csv_module

    try:
        with open(csv, newline="", encoding="utf-8-sig") as f:
            lines = [(n, cells) for n, cells in _numbered(csv_module.reader(f)) if any(c.strip() for c in cells)]
    except FileNotFoundError as e:
        raise ChestaidError(f"{csv}: no such file") from e
    except (OSError, UnicodeDecodeError, csv_module.Error) as e:
        raise ChestaidError(f"{csv}: cannot be read as a CSV ({e})") from e
    if not lines:
        raise ChestaidError(f"{csv}: empty")
    header = [c.strip() for c in lines[0][1]]
    good = [(n, cells) for n, cells in lines[1:] if len(cells) == len(header)]
    ragged = [(n, f"{len(cells)} cell(s) where the header has {len(header)}") for n, cells in lines[1:]
              if len(cells) != len(header)]
    table = pd.DataFrame([cells for _, cells in good], columns=header, index=[n for n, _ in good], dtype=str)
    return table, ragged


def _numbered(reader):
    """(line number where the row starts, cells) of a csv.reader."""
    start = 1
    for cells in reader:
        yield start, cells
        start = reader.line_num + 1


def _refuse_unknown_columns(csv: str | Path, columns: list[str], known: set[str]) -> None:
    """A ChestaidError naming each column that is neither a finding the store's model scores nor the priority
    column, with the closest known name (nothing is written)."""
    import difflib

    if not known:
        raise ChestaidError(f"{csv}: the store has no scored instance yet, so no finding to give a verdict on")
    names = sorted(known)
    wrong = []
    for column in columns:
        if column in known or column.strip().lower() in PRIORITY_COLUMNS:
            continue
        near = difflib.get_close_matches(column, names, n=1, cutoff=0.5) or [
            n for n in names if n.lower() == column.strip().lower()]
        wrong.append(f"{column!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    if wrong:
        raise ChestaidError(f"{csv}: column(s) {', '.join(wrong)} are not findings of this store's model; its "
                            f"findings: {', '.join(names)}; and 'priority appropriate' (yes/no). Nothing imported")


def _not_scored(rows: list[dict]) -> str:
    """Why the instances of a key get no verdict: none of them was scored (each one's state and reason)."""
    states = "; ".join(f"{r['state']}: {r['reason']}"[:160] for r in rows[:3])
    return f"not scored, so no case ({states})"


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
        raise ChestaidError(f"{store}: {_why_no_case(store, list(table.columns[2:]), incomplete)}")
    write_text(out, table.to_csv(index=False))
    return Path(out), len(table), incomplete


def _why_no_case(store: str | Path, findings: list[str], incomplete: int) -> str:
    """Why no instance with verdicts is a case: they were not scored (by state), or lack a verdict on a finding."""
    from collections import Counter

    opened = Store.open(store)
    try:
        states = Counter((opened.instance(u) or {}).get("state", "gone") for u in opened.latest_verdicts())
    finally:
        opened.close()
    states.pop("scored", None)
    if states and not incomplete:
        said = ", ".join(f"{n} {state}" for state, n in states.most_common())
        return (f"the instances with verdicts were not scored ({said}: the input gate refused them, or they could "
                "not be read), and an image the model did not score is no case")
    return (f"no instance has a present/absent verdict on every one of {', '.join(findings)} ({incomplete} lack one"
            f"{', ' + str(sum(states.values())) + ' were not scored' if states else ''}); choose fewer findings")


def is_store(path: str | Path | None) -> bool:
    """Whether `path` is a node's store (its database is there, or named there)."""
    from chestaid.store import DB_NAME, URL_FILE

    return path is not None and any((Path(path) / name).is_file() for name in (DB_NAME, URL_FILE))


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
