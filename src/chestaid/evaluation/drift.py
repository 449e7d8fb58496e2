"""Tests for monitoring without labels: is a window of recent instances unlike the run's reference?

Each signal is one test with a valid p-value under "the window is drawn like the reference":
- a distribution (the input gate's distance, a finding's risk score): two-sample Kolmogorov–Smirnov against the
  reference sample (exact for small samples; the reference's own size counts);
- a rate (refusals by the gate, a finding's flags): Fisher's exact test of the window's count against the
  reference's count (both samples' uncertainty counts, not only the window's);
- a mix (sex, view against the training manifest; manufacturer, station, modality, age band against the first
  window): the chi-square test of the two sets of counts (categories seen in either; none with fewer than two
  categories).
Over all signals of a window, Holm's step-down keeps the chance of any false alarm at most `level` (the
family-wise error rate), whatever the dependence between the signals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

MIN_SAMPLE = 5  # fewer values on either side: the signal is reported as not tested


@dataclass
class Signal:
    """One test of one window: its name, the test, the statistic, the p-value, the Holm-adjusted p-value and
    what the window and the reference show (for a person)."""

    name: str
    test: str
    statistic: float | None
    p: float | None
    window: str
    reference: str
    p_holm: float | None = None
    alarm: bool = False

    def to_json(self) -> dict:
        return asdict(self)


def distribution(name: str, window: np.ndarray, reference: np.ndarray) -> Signal:
    window, reference = np.asarray(window, float), np.asarray(reference, float)
    if len(window) < MIN_SAMPLE or len(reference) < MIN_SAMPLE:
        return Signal(name, "two-sample Kolmogorov-Smirnov", None, None, f"n={len(window)}",
                      f"n={len(reference)}")
    result = stats.ks_2samp(window, reference)
    return Signal(name, "two-sample Kolmogorov-Smirnov", float(result.statistic), float(result.pvalue),
                  f"median {np.median(window):.4g} (n={len(window)})",
                  f"median {np.median(reference):.4g} (n={len(reference)})")


def rate(name: str, count: int, n: int, reference_count: int, reference_n: int) -> Signal:
    if n < MIN_SAMPLE or reference_n < MIN_SAMPLE:
        return Signal(name, "Fisher's exact test", None, None, f"{count}/{n}", f"{reference_count}/{reference_n}")
    odds, p = stats.fisher_exact([[count, n - count], [reference_count, reference_n - reference_count]])
    return Signal(name, "Fisher's exact test", float(odds) if np.isfinite(odds) else None, float(p),
                  f"{count}/{n} ({count / n:.1%})", f"{reference_count}/{reference_n} ({reference_count / reference_n:.1%})")


def mix(name: str, window: dict[str, int], reference: dict[str, int]) -> Signal:
    window, reference = _pool_rare(window, reference)
    categories = sorted(set(window) | set(reference))
    table = np.array([[window.get(c, 0) for c in categories], [reference.get(c, 0) for c in categories]])
    shown = lambda counts: ", ".join(f"{c or 'unknown'} {counts.get(c, 0)}" for c in categories)  # noqa: E731
    if len(categories) < 2 or table[0].sum() < MIN_SAMPLE or table[1].sum() < MIN_SAMPLE:
        return Signal(name, "chi-square test of the two mixes", None, None, shown(window), shown(reference))
    statistic, p, _, _ = stats.chi2_contingency(table)
    return Signal(name, "chi-square test of the two mixes", float(statistic), float(p), shown(window),
                  shown(reference))


def _pool_rare(window: dict[str, int], reference: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """Categories whose expected count is under 5 in either sample pooled into "other" (Cochran's rule: the
    chi-square approximation is anti-conservative for them, which would mean false alarms)."""
    n_window, n_reference = sum(window.values()), sum(reference.values())
    total = n_window + n_reference
    if not total:
        return window, reference
    rare = {c for c in set(window) | set(reference)
            if min(n_window, n_reference) * (window.get(c, 0) + reference.get(c, 0)) / total < 5}
    if len(rare) == 1:  # a lone rare category joins the next smallest one
        others = sorted((c for c in set(window) | set(reference) if c not in rare),
                        key=lambda c: window.get(c, 0) + reference.get(c, 0))
        if len(others) >= 2:
            rare.add(others[0])
    if len(rare) < 2:
        return window, reference

    def pooled(counts: dict[str, int]) -> dict[str, int]:
        kept = {c: v for c, v in counts.items() if c not in rare}
        return {**kept, "other": sum(v for c, v in counts.items() if c in rare)}

    return pooled(window), pooled(reference)


def holm(signals: list[Signal], level: float) -> list[Signal]:
    """Holm-adjusted p-values on the tested signals; alarm where the adjusted p is below `level`."""
    tested = sorted((s for s in signals if s.p is not None), key=lambda s: s.p)
    running, m = 0.0, len(tested)
    for k, signal in enumerate(tested):
        running = max(running, min(1.0, (m - k) * signal.p))
        signal.p_holm = running
        signal.alarm = running < level
    return [s for s in signals if s.alarm]
