"""`chestaid triage report STORE --rules FILE`: what the likely-normal tier would have done, per day and overall,
against the site's own verdicts — the evidence it must earn before it may go live.

A study would be lowered to "likely normal" when every finding's study score (the highest of its read images) is
below the rule-out point and its order asked for nothing above routine. A study is **abnormal** when any verdict on
any of its images says a finding is present, **normal** when it has verdicts and all of them are absent; others are
unlabelled. The rule-out's sensitivity is the share of abnormal studies it would *not* have lowered, with an exact
(Clopper–Pearson) two-sided 95% interval and the one-sided 95% lower bound that going live is judged on: live is
allowed only when that bound reaches the target. With no abnormal study lowered, the bound is 0.05^(1/n), so the
target needs at least ceil(ln 0.05 / ln target) abnormal studies (299 for 0.99) — a number, never a feeling.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

from scipy.stats import beta

from chestaid.core.errors import ChestaidError
from chestaid.data.patient import read_header
from chestaid.inference.identity import same_model
from chestaid.inference.triage_rules import ORDERED, Level, LikelyNormal, load_rules
from chestaid.store import Decision, State, Store


def needed(target: float) -> int:
    """Abnormal studies, none lowered, whose one-sided 95% lower bound of sensitivity reaches `target`."""
    return math.ceil(math.log(0.05) / math.log(target))


def sensitivity(kept: int, abnormal: int) -> dict:
    """The rule-out's sensitivity (abnormal studies not lowered), Clopper–Pearson: a two-sided 95% interval and the
    one-sided 95% lower bound."""
    if abnormal == 0:
        return {"estimate": None, "ci_low": None, "ci_high": None, "lower_bound_95": None}
    low = 0.0 if kept == 0 else float(beta.ppf(0.025, kept, abnormal - kept + 1))
    high = 1.0 if kept == abnormal else float(beta.ppf(0.975, kept + 1, abnormal - kept))
    bound = 0.0 if kept == 0 else float(beta.ppf(0.05, kept, abnormal - kept + 1))
    return {"estimate": kept / abnormal, "ci_low": low, "ci_high": high, "lower_bound_95": bound}


def study_cases(store: Store, tier: LikelyNormal, model: dict | None = None) -> list[dict]:
    """Per study with a read image: its day, whether the tier would lower it, and its verdict (abnormal, normal
    or None); with `model` (a run identity), only the studies that model scored."""
    verdicts = store.latest_verdicts()
    cases = []
    for study, rows in store.instances_by_study().items():
        if not rows[0]["study_uid"]:  # an instance without a study is no study
            continue
        read = [Decision.of(r) for r in rows if r["state"] == State.SCORED.value]
        read = [d for d in read if d.scores]
        if not read or (model is not None and not all(same_model(d.model, model) for d in read)):
            continue
        scores = {f: max(d.scores[f].risk for d in read if f in d.scores) for d in read for f in d.scores}
        lowered = all(v < tier.rule_out for v in scores.values()) and _ordered_routine(store, rows)
        given = [v for r in rows for v in verdicts.get(r["sop_uid"], {}).values()]
        label = "abnormal" if "present" in given else "normal" if given and set(given) <= {"absent"} else None
        day = datetime.fromtimestamp(max(r["received_at"] for r in rows), timezone.utc).strftime("%Y-%m-%d")
        cases.append({"study_uid": study, "day": day, "lowered": lowered, "label": label})
    return cases


def _ordered_routine(store: Store, rows: list[dict]) -> bool:
    """Whether no image's order asked for more than routine (RequestedProcedurePriority): never lowered if so."""
    headers = [read_header(store.file_of(r)) for r in rows]
    return all(ORDERED.get(str(h.get("RequestedProcedurePriority", "") or "").strip().upper(), Level.ROUTINE)
               is Level.ROUTINE for h in headers if h is not None)


def _summary(cases: list[dict]) -> dict:
    abnormal = [c for c in cases if c["label"] == "abnormal"]
    missed = sum(c["lowered"] for c in abnormal)
    return {"studies": len(cases), "would_lower": sum(c["lowered"] for c in cases),
            "abnormal": len(abnormal), "abnormal_lowered": missed,
            "normal": sum(c["label"] == "normal" for c in cases),
            "normal_lowered": sum(c["lowered"] and c["label"] == "normal" for c in cases),
            "sensitivity": sensitivity(len(abnormal) - missed, len(abnormal))}


def triage_report(store: str | Path, rules_path: str | Path, labels: list[str] | None = None) -> dict:
    """The shadow report of the rules' likely-normal tier on the store; see the module docstring."""
    opened = Store.open(store)
    try:
        known = labels or sorted({f for r in opened.instances() for f in Decision.of(r).scores})
        rules = load_rules(rules_path, known)
        if rules.likely_normal is None:
            raise ChestaidError(f"{rules_path}: no likely_normal section: nothing to report")
        cases = study_cases(opened, rules.likely_normal)
    finally:
        opened.close()
    tier = rules.likely_normal
    overall = _summary(cases)
    bound = overall["sensitivity"]["lower_bound_95"]
    need = needed(tier.target_sensitivity)
    allowed = bound is not None and bound >= tier.target_sensitivity
    more = max(0, need - overall["abnormal"]) if overall["abnormal_lowered"] == 0 else None
    return {"rules": rules.identity, "rule_out": tier.rule_out, "target_sensitivity": tier.target_sensitivity,
            "abnormal_needed_if_none_lowered": need, "live_allowed": allowed,
            "why": "the one-sided 95% lower bound reaches the target" if allowed else (
                f"{overall['abnormal']} abnormal stud(ies) with verdicts; "
                + (f"{more} more needed with none lowered" if more is not None else
                   f"{overall['abnormal_lowered']} abnormal stud(ies) would have been lowered")),
            "overall": overall,
            "days": {day: _summary([c for c in cases if c["day"] == day]) for day in sorted({c["day"] for c in cases})}}


def refuse_live_without_evidence(store: Store, rules, model: dict | None = None) -> None:
    """At the node's start: a live tier needs the evidence the report shows, on the studies `model` (this run)
    scored — another run's evidence is not this one's; a line saying how much is missing."""
    tier = rules.likely_normal
    if tier is None or not tier.live:
        return
    overall = _summary(study_cases(store, tier, model))
    bound = overall["sensitivity"]["lower_bound_95"]
    if bound is None or bound < tier.target_sensitivity:
        need = needed(tier.target_sensitivity)
        raise ChestaidError(
            f"triage rules {rules.identity}: likely_normal.live refused: the rule-out's sensitivity has a one-sided "
            f"95% lower bound of {bound if bound is not None else 'none'} on {overall['abnormal']} abnormal "
            f"stud(ies) with verdicts ({overall['abnormal_lowered']} would have been lowered), under the target "
            f"{tier.target_sensitivity}; with none lowered it needs {need} "
            f"({max(0, need - overall['abnormal'])} more). Run it in shadow (live: false) and see "
            "`chestaid triage report`")
