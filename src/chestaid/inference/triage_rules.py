"""A site's triage rules: which findings raise a study to which level, at the run's threshold or at an operating
point the site states; validated when the node starts (every mistake on its own line, naming the file, the line and
the key), versioned (every result names the rules' version and digest beside the run).

    version: site-a-2026-12-01          # required: changes whenever the rules do
    findings:
      Pneumothorax: critical            # flagged at the run's threshold
      Effusion: {level: urgent, threshold: 0.4}
      Mass: {level: urgent, sensitivity: 0.9}   # the threshold that reaches this sensitivity on the site's verdicts
    likely_normal:                      # optional: a study whose every finding scores below rule_out
      rule_out: 0.05                    # would go to "likely normal"; in shadow (recorded, never sent) until
      target_sensitivity: 0.99          # the site's verdicts show the rule-out's sensitivity, one-sided 95% lower
      live: false                       # bound, at or above the target (`chestaid triage report STORE`)

A study's level is the highest level of its flagged findings (routine when none is). The level its order came with
(DICOM RequestedProcedurePriority, where a study carries it) is never lowered: a STAT study stays STAT when chestaid
finds nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import yaml

from chestaid.core.errors import ChestaidError

MIN_POSITIVES = 20  # present verdicts a sensitivity operating point needs (below it the threshold is too uncertain)


class Level(str, Enum):
    """A study's triage level, lowest first (likely normal: only from a live likely-normal tier)."""

    LIKELY_NORMAL = "likely normal"
    ROUTINE = "routine"
    URGENT = "urgent"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Level).index(self)

    @property
    def hl7(self) -> tuple[str, str]:
        """HL7 v2 table 0485 (TQ1-9 Priority): code and text."""
        return {Level.CRITICAL: ("S", "Stat"), Level.URGENT: ("A", "ASAP"), Level.ROUTINE: ("R", "Routine"),
                Level.LIKELY_NORMAL: ("R", "Routine")}[self]


# DICOM RequestedProcedurePriority (0040,1003) → the level it asks for
ORDERED = {"STAT": Level.CRITICAL, "HIGH": Level.URGENT, "MEDIUM": Level.ROUTINE, "ROUTINE": Level.ROUTINE,
           "LOW": Level.ROUTINE}


def highest(levels) -> Level:
    return max(levels, key=lambda level: level.rank, default=Level.ROUTINE)


LEVELS = [level.value for level in Level if level is not Level.LIKELY_NORMAL]  # what a rule may raise a study to


def ordered_level(headers) -> Level | None:
    """The highest level the study's headers' RequestedProcedurePriority asks for (None: none says)."""
    found = [ORDERED.get(str(h.get("RequestedProcedurePriority", "") or "").strip().upper()) for h in headers]
    found = [f for f in found if f is not None]
    return highest(found) if found else None


@dataclass(frozen=True)
class Rule:
    finding: str
    level: Level
    threshold: float | None = None  # None: the run's
    sensitivity: float | None = None  # the operating point stated, resolved to `threshold` on the site's verdicts


@dataclass(frozen=True)
class LikelyNormal:
    rule_out: float
    target_sensitivity: float
    live: bool = False


@dataclass(frozen=True)
class TriageRules:
    version: str
    digest: str
    rules: tuple[Rule, ...]
    likely_normal: LikelyNormal | None = None

    @property
    def identity(self) -> str:
        return f"{self.version} (sha256 {self.digest[:12]})"

    def level_of(self, risk: dict[str, float], thresholds: dict[str, float]) -> tuple[Level, list[str]]:
        """The level a study's findings (per finding its score) reach, and the findings that raised it."""
        raised = [r for r in self.rules if r.finding in risk
                  and risk[r.finding] >= (r.threshold if r.threshold is not None else thresholds[r.finding])]
        level = highest(r.level for r in raised)
        return level, [r.finding for r in raised if r.level is level and level is not Level.ROUTINE]

    def resolved(self, verdict_scores: dict[str, list[tuple[float, bool]]]) -> "TriageRules":
        """Sensitivity operating points turned into thresholds on the site's verdicts ({finding: [(score, present)]}):
        the highest threshold that flags at least that share of the present cases."""
        rules = []
        for r in self.rules:
            if r.sensitivity is None:
                rules.append(r)
                continue
            present = np.sort([s for s, p in verdict_scores.get(r.finding, []) if p])
            if len(present) < MIN_POSITIVES:
                raise ChestaidError(f"triage rules {self.version}: {r.finding} at sensitivity {r.sensitivity} needs "
                                    f"at least {MIN_POSITIVES} present verdicts on it, the store has {len(present)} "
                                    f"({MIN_POSITIVES - len(present)} more); state a threshold until then")
            missed = int(np.floor((1 - r.sensitivity) * len(present)))  # present cases it may leave unflagged
            rules.append(Rule(r.finding, r.level, float(present[missed]), r.sensitivity))
        return TriageRules(self.version, self.digest, tuple(rules), self.likely_normal)


def load_rules(path: str | Path, labels: list[str]) -> TriageRules:
    """The rules file at `path` for a run with `labels`; every mistake raises together, one line each."""
    path = Path(path)
    try:
        text = path.read_text()
        root = yaml.compose(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ChestaidError(f"{path}: not a readable YAML rules file ({str(e).splitlines()[0]})") from e
    problems: list[str] = []

    def say(node, key: str, problem: str) -> None:
        problems.append(f"{path}:{node.start_mark.line + 1}: {key}: {problem}")

    version, rules = "", []
    if not isinstance(root, yaml.MappingNode):
        raise ChestaidError(f"{path}:1: the rules file must be a mapping with version and findings")
    top = {k.value: (k, v) for k, v in root.value}
    for key, (k, _) in top.items():
        if key not in ("version", "findings", "likely_normal"):
            say(k, key, "unknown key (version, findings, likely_normal)")
    if "version" not in top or not isinstance(top["version"][1], yaml.ScalarNode) or not top["version"][1].value:
        say(top.get("version", (root,))[0], "version", "required: a name that changes whenever the rules do")
    else:
        version = str(top["version"][1].value)
    findings = top.get("findings", (root, None))[1]
    if not isinstance(findings, yaml.MappingNode) or not findings.value:
        say(top.get("findings", (root,))[0], "findings", "required: a mapping of finding: level")
    else:
        for k, v in findings.value:
            rule = _rule(k.value, v, labels, lambda node, key, problem: say(node, f"findings.{k.value}{key}", problem))
            if rule is not None:
                rules.append(rule)
    likely = _likely_normal(top["likely_normal"][1], say) if "likely_normal" in top else None
    if problems:  # in the order of the file's lines
        raise ChestaidError("\n".join(sorted(problems, key=lambda p: int(p[len(str(path)) + 1:].split(":")[0]))))
    return TriageRules(version, hashlib.sha256(text.encode()).hexdigest(), tuple(rules), likely)


def _likely_normal(node, say) -> LikelyNormal | None:
    fields = {k.value: v for k, v in node.value} if isinstance(node, yaml.MappingNode) else None
    if fields is None:
        say(node, "likely_normal", "a mapping: rule_out, target_sensitivity, live")
        return None
    values = {}
    for key in fields:
        if key not in ("rule_out", "target_sensitivity", "live"):
            say(fields[key], f"likely_normal.{key}", "unknown key (rule_out, target_sensitivity, live)")
    for key in ("rule_out", "target_sensitivity"):
        try:
            values[key] = float(fields[key].value)
            if not 0 < values[key] < 1:
                raise ValueError
        except (KeyError, ValueError, TypeError, AttributeError):
            say(fields.get(key, node), f"likely_normal.{key}", "required: a number between 0 and 1")
    live = str(getattr(fields.get("live"), "value", "false")).lower()
    if live not in ("true", "false"):
        say(fields["live"], "likely_normal.live", f"{live!r} is not true or false")
    return LikelyNormal(values["rule_out"], values["target_sensitivity"], live == "true") if len(values) == 2 else None


def _rule(finding: str, node, labels: list[str], say) -> Rule | None:
    levels = ", ".join(LEVELS)
    if finding not in labels:
        say(node, "", f"not a finding of the run ({', '.join(labels)})")
        return None
    fields = {"level": node} if isinstance(node, yaml.ScalarNode) else (
        {k.value: v for k, v in node.value} if isinstance(node, yaml.MappingNode) else {})
    for key, value in fields.items():
        if key not in ("level", "threshold", "sensitivity"):
            say(value, f".{key}", "unknown key (level, threshold, sensitivity)")
    level = fields.get("level")
    if level is None or level.value not in LEVELS:
        say(level or node, ".level" if isinstance(node, yaml.MappingNode) else "",
            f"{getattr(level, 'value', None)!r} is not a level ({levels})")
        return None
    numbers = {}
    for key, low, high in (("threshold", 0.0, 1.0), ("sensitivity", 0.0, 1.0)):
        if key in fields:
            try:
                numbers[key] = float(fields[key].value)
                if not low <= numbers[key] <= high or (key == "sensitivity" and numbers[key] in (0.0, 1.0)):
                    raise ValueError
            except (ValueError, TypeError):
                say(fields[key], f".{key}", f"{fields[key].value!r} is not a number within {low}–{high}")
                return None
    if len(numbers) == 2:
        say(node, "", "a threshold or a sensitivity, not both")
        return None
    return Rule(finding, Level(level.value), numbers.get("threshold"), numbers.get("sensitivity"))
