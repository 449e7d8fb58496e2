"""`chestaid monitor STORE`: is what the node sees, and what it says, still like the run's reference?

Per model (the store records which run scored each instance; two runs' results are never pooled) and per window
(a count of instances, or a duration: 12h, 1d, 1w), the signals of chestaid.evaluation.drift against the run's
reference (RUN/monitor_reference.json, written by `calibrate` from its validation data, so a copied run carries
it): the input gate's distances and refusals, per finding the score distribution and the flag rate, the sex and
view mix against the training manifest, and the unit/modality/age mix against the model's first window. Holm's
method keeps the chance of any false alarm in a window at most `level`. With verdicts, per window and finding:
sensitivity, specificity and PPV with Wilson intervals (or "too few verdicts"), per read image and per study (a
study flagged when any of its read images is). Drift stays per image: the reference's distributions are of images,
and a study's highest score is not distributed like one image's.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import write_json
from chestaid.core.run_paths import RunPaths
from chestaid.evaluation import drift
from chestaid.evaluation.bootstrap import wilson_interval
from chestaid.inference.identity import SAME_MODEL, describe_model, same_model
from chestaid.core.refusals import Refusal
from chestaid.store import Decision, State, Store

log = logging.getLogger(__name__)
REFERENCE_SAMPLE = 5000  # values kept per distribution in the reference file
MIN_VERDICTS = 10  # per class, before a window's sensitivity or specificity is given
UNITS = {"h": 3600, "d": 86400, "w": 604800}


def write_reference(paths: RunPaths, predictor, logits: np.ndarray, features: np.ndarray, source: str) -> None:
    """RUN/monitor_reference.json from the validation images a calibration used: their gate distances and
    refusals; per finding the scores and flags (with the run's calibration and thresholds now) of the images the
    gate lets through, as the node scores only those; the training manifest's sex and view mix; and the digests
    of the model it describes (a reference of other weights or calibration is never used)."""
    from chestaid.data.provenance import manifest_of
    from chestaid.inference.identity import run_identity

    distances = predictor.distances(features) if predictor.gate is not None else None
    passed = np.ones(len(logits), bool) if distances is None else distances <= predictor.gate.threshold
    rng = np.random.default_rng(0)
    keep = np.sort(rng.permutation(len(logits))[:REFERENCE_SAMPLE])
    kept_passed = np.sort(rng.permutation(np.flatnonzero(passed))[:REFERENCE_SAMPLE])
    risks = predictor.risk_scores(logits)
    flags = predictor.decisions(risks)
    manifest = manifest_of(paths)
    data = manifest.data if manifest is not None else {}
    identity = run_identity(paths.root)
    write_json(paths.monitor_reference, {
        "source": source, "images": int(len(logits)), "scored": int(passed.sum()),
        "model": {key: identity[key] for key in SAME_MODEL},
        "distances": None if distances is None else [float(d) for d in distances[keep]],
        "refused": None if distances is None else int((~passed).sum()),
        "findings": {name: {"scores": [float(v) for v in risks[kept_passed, k]], "flags": int(flags[passed, k].sum())}
                     for k, name in enumerate(predictor.task.labels)},
        "mix": {"sex": data.get("sex", {}), "view": data.get("view", {})}})


def parse_window(text: str) -> tuple[str, float]:
    """'200' → ("count", 200); '1d' / '12h' / '1w' → ("seconds", …)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([hdw]?)\s*", str(text))
    if not match or float(match.group(1)) <= 0 or (
            not match.group(2) and (not match.group(1).isdigit() or int(match.group(1)) < drift.MIN_SAMPLE)):
        raise ChestaidError(f"--window must be a count of instances ({drift.MIN_SAMPLE} or more, e.g. 200) or a "
                            f"duration (12h, 1d, 1w), got {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return ("seconds", value * UNITS[unit]) if unit else ("count", value)


def _windows(rows: list[dict], window: str) -> list[list[dict]]:
    kind, size = parse_window(window)
    if kind == "count":
        n = int(size)
        return [rows[i:i + n] for i in range(0, len(rows), n)]
    out: list[list[dict]] = []
    start = rows[0]["received_at"] if rows else 0.0
    for row in rows:
        k = int((row["received_at"] - start) // size)
        while len(out) <= k:
            out.append([])
        out[k].append(row)
    return [w for w in out if w]


def _reference(identity: dict, run: str | Path | None) -> tuple[dict | None, str]:
    """(the reference of the model that scored a group, "") or (None, why there is none)."""
    folder = Path(run) if run is not None else Path(identity.get("path", ""))
    path = RunPaths(folder).monitor_reference
    if not identity:
        return None, "the model that scored these instances is not recorded"
    if not path.is_file():
        return None, f"{folder}: no monitoring reference (chestaid calibrate RUN records one)"
    reference = json.loads(path.read_text())
    if not same_model(reference.get("model"), identity):
        return None, (f"{folder}: its reference describes other weights, calibration or thresholds than the model "
                      "that scored these instances (recalibrated in place?)")
    return reference, ""


def window_signals(rows: list[dict], reference: dict, first: list[dict] | None) -> list[drift.Signal]:
    """Every signal of one window of one model's instances against its reference (and its first window)."""
    signals = []
    decisions = [Decision.of(r) for r in rows]
    measured = [d for d in decisions if d.gate_judged]  # what the gate judged: not tag refusals
    if reference.get("distances") is not None:
        signals.append(drift.distribution("input gate distance", [d.distance for d in measured],
                                          reference["distances"]))
        refused = sum(d.refusal is Refusal.GATE for d in measured)
        signals.append(drift.rate("refusals by the input gate", refused, len(measured), reference["refused"],
                                  reference["images"]))
    scored = [d.scores for d in decisions if d.state is State.SCORED and d.scores]
    for name, ref in reference["findings"].items():
        values = [s[name].risk for s in scored if name in s]
        signals.append(drift.distribution(f"{name}: score", values, ref["scores"]))
        signals.append(drift.rate(f"{name}: flag rate", sum(s[name].decision for s in scored if name in s),
                                  len(values), ref["flags"], reference.get("scored", reference["images"])))
    meta = [d.meta for d in decisions if d.meta]
    for key in ("sex", "view"):
        known = Counter(m[key] for m in meta if m.get(key))
        training = {k: v for k, v in reference.get("mix", {}).get(key, {}).items() if k in ("M", "F", "PA", "AP")}
        if training:
            signals.append(drift.mix(f"{key} mix (against training)", dict(known), training))
    if first is not None:
        before = [d.meta for d in map(Decision.of, first) if d.meta]
        for key in ("manufacturer", "station", "modality", "age_band"):
            signals.append(drift.mix(f"{key} mix (against the first window)", dict(Counter(m[key] for m in meta)),
                                     dict(Counter(m[key] for m in before))))
    return signals


def _read_units(rows: list[dict], verdicts: dict[str, dict[str, str]], by_study: bool) -> list[tuple[dict, dict]]:
    """(per finding the flag, per finding the verdict) of each read image; `by_study`: of each study instead — a
    finding flagged when any of its read images is, present when any of them is, absent when all of them are."""
    read = [(r, d) for r, d in ((r, Decision.of(r)) for r in rows) if d.state is State.SCORED and d.scores]
    if not by_study:
        return [({n: s.decision for n, s in d.scores.items()}, verdicts.get(d.sop_uid, {})) for _, d in read]
    studies: dict[str, list] = {}
    for row, d in read:
        studies.setdefault(row.get("study_uid") or d.sop_uid, []).append(d)
    units = []
    for members in studies.values():
        names = set.intersection(*(set(d.scores) for d in members))
        given = [verdicts.get(d.sop_uid, {}) for d in members]
        said = {}
        for name in names:
            calls = [g.get(name) for g in given]
            if "present" in calls:
                said[name] = "present"
            elif all(c == "absent" for c in calls):
                said[name] = "absent"
        units.append(({n: any(d.scores[n].decision for d in members) for n in names}, said))
    return units


def performance(rows: list[dict], verdicts: dict[str, dict[str, str]], labels: list[str],
                by_study: bool = False) -> dict:
    """Per finding, where verdicts exist: sensitivity, specificity and PPV of the flags with Wilson intervals, and
    agreement with the clinicians; "too few verdicts" under MIN_VERDICTS positives or negatives. Per read image,
    or `by_study` per study (see `_read_units`)."""
    found = {}
    units = _read_units(rows, verdicts, by_study)  # each row's scores read once, for every finding
    for name in labels:
        pairs = [(flags[name], given[name] == "present") for flags, given in units
                 if name in flags and given.get(name) in ("present", "absent")]
        if not pairs:
            continue
        flag, truth = np.array(pairs, dtype=bool).T
        tp, fn, fp, tn = (int(x) for x in ((flag & truth).sum(), (~flag & truth).sum(), (flag & ~truth).sum(),
                                           (~flag & ~truth).sum()))
        entry = {"verdicts": len(pairs), "positives": tp + fn, "agreement": (tp + tn) / len(pairs)}
        for metric, k, n, enough in (("sensitivity", tp, tp + fn, tp + fn >= MIN_VERDICTS),
                                     ("specificity", tn, tn + fp, tn + fp >= MIN_VERDICTS),
                                     ("ppv", tp, tp + fp, tp + fp >= MIN_VERDICTS)):
            low, high = wilson_interval(k / n, n, 0.95) if n else (None, None)
            entry[metric] = {"estimate": k / n, "ci_low": low, "ci_high": high} if enough else (
                f"too few verdicts ({n})")
        found[name] = entry
    return found


def monitor(store: str | Path, window: str = "200", level: float = 0.01, run: str | Path | None = None) -> dict:
    """The windows of every model in the store, their signals and alarms; see the module docstring."""
    if not 0 < level < 0.5:
        raise ChestaidError(f"--level must be within 0-0.5, got {level}")
    parse_window(window)
    opened = Store.open(store)
    try:
        rows = sorted((r for r in opened.instances() if r["state"] in ("scored", "refused", "unreadable")),
                      key=lambda r: r["received_at"])
        verdicts = opened.latest_verdicts()
    finally:
        opened.close()
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        identity = Decision.of(row).model or {}
        groups.setdefault(tuple(identity.get(k) for k in SAME_MODEL), []).append(row)
    result: dict = {"level": level, "window": window, "windows": [], "alarms": [], "latest_alarms": [],
                    "not_monitored": []}
    for key, members in groups.items():
        identity = Decision.of(members[0]).model or {}
        reference, why = _reference(identity, run)
        if reference is None:
            result["not_monitored"].append({"model": describe_model(identity), "instances": len(members),
                                            "why": why})
            log.warning("monitor: %d instance(s) of %s not monitored: %s", len(members), describe_model(identity), why)
            continue
        parts = _windows(members, window)
        for k, part in enumerate(parts):
            signals = window_signals(part, reference, parts[0] if k else None)
            alarms = drift.holm(signals, level)
            labels = list(reference["findings"])
            entry = {"model": describe_model(identity), "index": k, "start": part[0]["received_at"],
                     "end": part[-1]["received_at"], "n": len(part), "states": dict(Counter(r["state"] for r in part)),
                     "refusals_by_reason": dict(Counter(r["reason"].split(":")[0] for r in part if r["state"] == "refused")),
                     "signals": [s.to_json() for s in signals], "alarms": [s.name for s in alarms],
                     "performance": performance(part, verdicts, labels),
                     "performance_by_study": performance(part, verdicts, labels, by_study=True)}
            result["windows"].append(entry)
            for s in alarms:
                alarm = {"model": entry["model"], "window": k, "start": entry["start"], "signal": s.name,
                         "statistic": s.statistic, "p": s.p, "p_holm": s.p_holm, "window_shows": s.window,
                         "reference": s.reference}
                result["alarms"].append(alarm)
                if k == len(parts) - 1:  # what --fail-on-alarm judges: each model's latest window
                    result["latest_alarms"].append(alarm)
                log.warning("monitor alarm: %s, window %d (%d instances): %s (%s; reference %s), Holm p %.2g",
                            entry["model"], k, len(part), s.name, s.window, s.reference, s.p_holm)
    result["status"], result["status_detail"] = _status(result, len(rows))
    return result


def _status(result: dict, instances: int) -> tuple[str, str]:
    """("monitored" | "nothing monitored", what was seen), so that a cron job tells "nothing to monitor" from
    "all fine"."""
    if result["windows"]:
        seen = sum(w["n"] for w in result["windows"])
        return "monitored", f"{seen} instance(s) in {len(result['windows'])} window(s)"
    if not instances:
        return "nothing monitored", "the store has no scored, refused or unreadable instance yet"
    return "nothing monitored", (f"{instances} instance(s), none of a model with a monitoring reference "
                                 "(see not monitored)")


def write_html(result: dict, out: str | Path) -> Path:
    """The monitor's page (chestaid.reporting.monitor_report)."""
    from chestaid.reporting.monitor_report import write_monitor_page

    return write_monitor_page(result, out)
