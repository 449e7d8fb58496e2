"""What the node decided about an instance, as a typed record the store owns: written by the worker through
`Store.finish`, read by the worklist, the page, the monitor, evaluation and export (`Decision.of(row)`) — no
reader parses the JSON columns or matches a reason's words itself."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum

from chestaid.core.refusals import GATE_REASON, Refusal


NO_RESULT_OBJECTS = "no result objects"  # how the reason of a scored instance whose results could not be made begins


class State(str, Enum):
    """An instance's state in the worklist."""

    QUEUED = "queued"
    SCORED = "scored"
    NOT_READ = "not read"  # another image of a chest study (a lateral, a CT scout): not read by this model
    REFUSED = "refused"
    UNREADABLE = "unreadable"
    IGNORED = "ignored"


@dataclass(frozen=True)
class FindingScore:
    """A finding's score as the node recorded it: the risk score, the decision, and the raw logit (None in rows
    written before it was recorded; ROC-AUC is computed on it, as everywhere in chestaid)."""

    risk: float
    decision: bool
    logit: float | None = None


@dataclass(frozen=True)
class Decision:
    """One instance's record: state, reason, refusal kind, per-finding scores and decisions, the input gate's
    distance, the header mix the monitor compares (`meta`) and the identity of the model that decided (None when
    not recorded)."""

    sop_uid: str
    state: State
    reason: str = ""
    refusal: Refusal = Refusal.NONE
    scores: dict[str, FindingScore] = field(default_factory=dict)
    distance: float | None = None
    meta: dict = field(default_factory=dict)
    model: dict | None = None

    @classmethod
    def of(cls, row) -> "Decision":
        """The record of a store row (a dict or sqlite3.Row of `instances`)."""
        get = row.get if isinstance(row, dict) else (lambda k, d=None: row[k] if k in row.keys() else d)
        state = State(get("state"))
        scores = json.loads(get("scores") or "{}")
        refusal = Refusal(get("refusal") or "") if get("refusal") else _legacy_refusal(state, get("reason") or "")
        return cls(get("sop_uid"), state, get("reason") or "", refusal,
                   {name: FindingScore(float(v["risk"]), bool(v["decision"]), v.get("logit"))
                    for name, v in scores.items()},
                   get("distance"), json.loads(get("meta") or "{}"), json.loads(get("model") or "null"))

    @property
    def without_results(self) -> bool:
        """Scored, but its result objects could not be made (the reason says why: the PACS study lacks them)."""
        return self.state is State.SCORED and self.reason.startswith(NO_RESULT_OBJECTS)

    @property
    def gate_judged(self) -> bool:
        """Whether the input gate judged this instance (scored, or refused by the gate; not refused by its tags)."""
        return self.distance is not None and (self.state is State.SCORED or self.refusal is Refusal.GATE)


def _legacy_refusal(state: State, reason: str) -> Refusal:
    """Rows written before the kind was recorded: the gate's reason has one beginning."""
    if state is not State.REFUSED:
        return Refusal.NONE
    return Refusal.GATE if reason.startswith(GATE_REASON) else Refusal.HEADER


def scores_json(scores: dict[str, FindingScore]) -> str:
    return json.dumps({name: {"risk": s.risk, "decision": int(s.decision), "logit": s.logit}
                       for name, s in scores.items()})
