"""A hospital's own labelled cases, kept out of run folders.

The cases of a node's store are its scored instances with a present/absent verdict on each finding asked for,
optionally those received between two dates. Each case has a **content digest** (of its pixel data as received,
else of its file): a run version calibrated on some cases records their digests, never their images or patient
IDs, so it is refused on exactly those cases — in the store it was calibrated on or in any copy of it — and
evaluated on the rest.

Decoded images and per-patient tables of local cases live in the store (`STORE/caches/`) or, for a cohort folder,
in chestaid's cache folder (`$CHESTAID_CACHE_DIR`, else `~/.cache/chestaid/cohorts/`): never in a run, which a
hospital copies to another site or sends to a vendor.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import write_text
from chestaid.store import Decision, Store

CASE_COLUMNS = ["path", "patient_id", "sop_uid", "study_uid", "case", "received_at", "model", "scores"]


def case_digest(row: dict, file: Path) -> str:
    """A digest of what the case is (its pixel data as received; else its file's bytes): the same in a copy of
    the store, different for another image."""
    content = row.get("pixel_sha256") or hashlib.sha256(file.read_bytes()).hexdigest()
    return hashlib.sha256(f"chestaid-case\0{content}".encode()).hexdigest()[:24]


def day_bound(text: str | None, end: bool = False) -> float | None:
    """A YYYY-MM-DD date as the first (or, `end`, the last) second of that day in UTC; None for None."""
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError as e:
        raise ChestaidError(f"dates are YYYY-MM-DD (the day the node received the images), got {text!r}") from e
    return day.timestamp() + (86400 - 1e-3 if end else 0)


def local_cases(store: str | Path, labels: list[str], since: str | None = None, until: str | None = None,
                only: set[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """The store's cases on `labels` (CASE_COLUMNS + one 0/1 column per label), and what was left out and why
    ({"not_scored", "incomplete", "outside_dates"}); `only`: just the cases with these content digests."""
    opened = Store.open(store)
    rows, left_out = [], {"not_scored": 0, "incomplete": 0, "outside_dates": 0}
    try:
        for uid, given, instance in _scored_with_verdicts(opened, since, until, left_out):
            if not all(given.get(f) in ("present", "absent") for f in labels):
                left_out["incomplete"] += 1
                continue
            file, decided = opened.file_of(instance).resolve(), Decision.of(instance)
            rows.append({"path": str(file), "patient_id": instance["patient_id"] or uid, "sop_uid": uid,
                         "study_uid": instance["study_uid"] or uid,
                         "case": case_digest(instance, file), "received_at": instance["received_at"],
                         "model": decided.model, "scores": decided.scores,
                         **{f: int(given[f] == "present") for f in labels}})
    finally:
        opened.close()
    cases = pd.DataFrame(rows, columns=[*CASE_COLUMNS, *labels])
    if only is not None:
        cases = cases[cases["case"].isin(only)].reset_index(drop=True)
    return cases, left_out


def _scored_with_verdicts(opened: Store, since: str | None, until: str | None, left_out: dict):
    """(SOPInstanceUID, its latest verdicts, its row) of the scored instances with verdicts received in the dates;
    `left_out` counts the others ("not_scored", "outside_dates")."""
    first, last = day_bound(since), day_bound(until, end=True)
    for uid, given in opened.latest_verdicts().items():
        instance = opened.instance(uid)
        if instance is None or instance["state"] != "scored":
            left_out["not_scored"] += 1
        elif (first is not None and instance["received_at"] < first) or (
                last is not None and instance["received_at"] > last):
            left_out["outside_dates"] += 1
        else:
            yield uid, given, instance


def finding_counts(store: str | Path, since: str | None = None, until: str | None = None) -> dict[str, tuple]:
    """{finding: (present, absent)} over the store's scored instances received in the dates."""
    counts: dict[str, list[int]] = {}
    opened = Store.open(store)
    try:
        for _, given, _ in _scored_with_verdicts(opened, since, until, {"not_scored": 0, "outside_dates": 0}):
            for finding, verdict in given.items():
                if verdict in ("present", "absent"):
                    counts.setdefault(finding, [0, 0])[verdict == "absent"] += 1
    finally:
        opened.close()
    return {f: tuple(c) for f, c in counts.items()}


def selection_digest(cases: pd.DataFrame, *extra: object, labels: list[str] = ()) -> str:
    """A short digest of which cases (with their patient and, for `labels`, their verdicts) and settings a cache
    or an evaluation is of: a corrected verdict makes another cache."""
    keyed = cases.sort_values("case")
    lines = ["\t".join(str(v) for v in row) for row in keyed[["case", "patient_id", *labels]].itertuples(index=False)]
    digest = hashlib.sha256("\n".join(lines).encode())
    for item in extra:
        digest.update(f"\0{item}".encode())
    return digest.hexdigest()[:12]


def store_cases_cache(store: str | Path, cases: pd.DataFrame, labels: list[str], size: int, task_name: str,
                      purpose: str):
    """`cases` decoded into a cache under STORE/caches/ (rebuilt when the selection changes), with its table
    beside it: both hold patient data and stay with the store."""
    from chestaid.data.cache import Cache, prepare
    from chestaid.data.table import read_table

    root = Path(store).resolve()  # a copied store (cp -a) brings its caches, whose tables name the original's files
    folder = root / "caches" / f"{purpose}-{selection_digest(cases, size, root, labels=labels)}"
    if (folder / "meta.json").is_file():
        cache = Cache.open(folder)
        if cache.meta.get("complete"):
            return cache
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    csv = folder.with_name(f"{folder.name}-cases.csv")
    write_text(csv, cases[["path", "patient_id", *labels]].to_csv(index=False))
    prepare(read_table(csv, task_name, labels), folder, size=size, for_training=False)
    return Cache.open(folder)


def folder_cohort_cache_dir(cohort: str | Path) -> Path:
    """Where a cohort folder (NIH or Kaggle layout) is decoded: chestaid's cache folder, never a run."""
    root = Path(os.environ.get("CHESTAID_CACHE_DIR") or Path.home() / ".cache" / "chestaid")
    source = Path(cohort).resolve()
    return root / "cohorts" / f"{source.name}-{hashlib.sha256(str(source).encode()).hexdigest()[:12]}"


def too_few(cases: pd.DataFrame, labels: list[str], minimum: int) -> str:
    """"" when some finding has at least `minimum` present and `minimum` absent cases; else what is missing."""
    counts = {f: (int(cases[f].sum()), int(len(cases) - cases[f].sum())) for f in labels}
    if any(p >= minimum and n >= minimum for p, n in counts.values()):
        return ""
    said = ", ".join(f"{f}: {p} present, {n} absent" for f, (p, n) in counts.items())
    return (f"{len(cases)} labelled case(s) ({said}); a figure with an interval needs at least {minimum} present "
            f"and {minimum} absent cases of a finding")
