"""The paper's findings, each decided from our numbers with their noise: reproduced, not
reproduced, inconclusive, or not measured.

A finding is one or more comparisons of two models (a over b) on a set of scores. For each, d is
the mean over the scores of the difference in the direction the paper claims (lower is better for
a distance), and SE = √(Σ (SE_a² + SE_b²)) / k over the k scores that have a standard error (the
evaluation's own, or that of a proportion over the items evaluated; scores without one are left
out and listed). A "better" claim is reproduced when d > 2·SE, not reproduced when d < −2·SE,
inconclusive otherwise. A "keeps" claim (no loss) is reproduced when d − 2·SE ≥ −MARGIN, not
reproduced when d + 2·SE < −MARGIN, inconclusive otherwise. A finding is reproduced when all its
measured comparisons are, not reproduced when any is not, and inconclusive otherwise. A pairwise
win rate (WinRate) is decided by its bootstrap interval instead: above 50%, below, or across it.
"""

import math
from dataclasses import dataclass, field
from typing import Literal

from almr.report.collect import Measured

Z = 2.0  # ≈ the two-sided 95% normal quantile
MARGIN = 2.0  # points on a 0–100 scale: the loss a "keeps" claim tolerates ("almost the same" in the paper)
Verdict = Literal["reproduced", "not reproduced", "inconclusive", "not measured"]

RULE = (
    f"Rule: d is the mean difference over the listed scores in the direction the paper claims, SE = √(Σ(SE_a² + "
    f"SE_b²))/k (each SE the evaluation's own, or, where it has none or 0, √(p(1−p)/n) of a proportion over the "
    "n items evaluated). "
    f'"Better": reproduced if d > {Z:g}·SE, not reproduced if d < −{Z:g}·SE, else inconclusive. "Keeps" (no '
    f"loss): reproduced if d − {Z:g}·SE ≥ −{MARGIN:g} points, not reproduced if d + {Z:g}·SE < −{MARGIN:g} points, "
    "else inconclusive. A win rate: reproduced if its bootstrap interval lies above 50%, not reproduced if below, "
    "else inconclusive. A finding is reproduced when all its measured comparisons are, not reproduced when any "
    "is not, inconclusive otherwise."
)


@dataclass
class Comparison:
    what: str  # "C-SFT over Instruct on the Chinese benchmarks"
    claim: Literal["better", "keeps"]
    a: dict[str, Measured]  # score title -> model a's score
    b: dict[str, Measured]
    lower_is_better: frozenset[str] = frozenset()
    d: float | None = None
    se: float | None = None
    used: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # measured, but without a standard error
    verdict: Verdict = "not measured"

    def decide(self) -> "Comparison":
        diffs, variances = [], []
        for title, ma in self.a.items():
            mb = self.b.get(title)
            if mb is None or ma.value is None or mb.value is None:
                continue
            if ma.se is None or mb.se is None:
                self.unused.append(title)
                continue
            sign = -1.0 if title in self.lower_is_better else 1.0
            diffs.append(sign * (ma.value - mb.value))
            variances.append(ma.se**2 + mb.se**2)
            self.used.append(title)
        if not diffs:
            self.verdict = "inconclusive" if self.unused else "not measured"
            return self
        k = len(diffs)
        self.d, self.se = sum(diffs) / k, math.sqrt(sum(variances)) / k
        lo, hi = self.d - Z * self.se, self.d + Z * self.se
        if self.claim == "better":
            self.verdict = "reproduced" if lo > 0 else "not reproduced" if hi < 0 else "inconclusive"
        else:
            self.verdict = "reproduced" if lo >= -MARGIN else "not reproduced" if hi < -MARGIN else "inconclusive"
        return self

    def sources(self) -> list[str]:
        """The files of the scores compared, in order of first use."""
        found = [m.source for m in (*self.a.values(), *self.b.values()) if m.value is not None and m.source]
        return list(dict.fromkeys(found))

    def words(self) -> str:
        if self.d is None or self.se is None:
            why = "no standard error for " + ", ".join(self.unused) if self.unused else "no numbers for both models"
            return f"{self.what}: {why}"
        left = f"; without a standard error, left out: {', '.join(self.unused)}" if self.unused else ""
        return (f"{self.what}: d = {self.d:+.2f} ± {self.se:.2f} (SE) over {', '.join(self.used)}{left} → "
                f"{self.verdict}")  # fmt: skip


@dataclass
class WinRate:
    """A pairwise win rate (W + ½T)/N ×100 of a over b with its bootstrap interval: the claim "a wins" is
    reproduced when the whole interval lies above 50, not reproduced when it lies below, else inconclusive."""

    what: str
    rate: float | None
    interval: tuple[float, float] | None
    source: str | None

    @property
    def verdict(self) -> Verdict:
        if self.rate is None or self.interval is None:
            return "not measured"
        lo, hi = self.interval
        return "reproduced" if lo > 50 else "not reproduced" if hi < 50 else "inconclusive"

    def sources(self) -> list[str]:
        return [self.source] if self.source and self.rate is not None else []

    def words(self) -> str:
        if self.rate is None or self.interval is None:
            return f"{self.what}: no votes"
        return (f"{self.what}: {self.rate:.1f}% [{self.interval[0]:.1f}, {self.interval[1]:.1f}] (bootstrap) → "
                f"{self.verdict}")  # fmt: skip


@dataclass
class Finding:
    claim: str  # the paper's finding, in words
    where: str  # the table it rests on
    comparisons: list[Comparison | WinRate]

    @property
    def verdict(self) -> Verdict:
        measured = [c.verdict for c in self.comparisons if c.verdict != "not measured"]
        if not measured:
            return "not measured"
        if "not reproduced" in measured:
            return "not reproduced"
        if all(v == "reproduced" for v in measured):
            return "reproduced"
        return "inconclusive"


def compare(what: str, claim: Literal["better", "keeps"], a: dict[str, Measured], b: dict[str, Measured],
            lower_is_better: frozenset[str] = frozenset()) -> Comparison:  # fmt: skip
    return Comparison(what, claim, a, b, lower_is_better).decide()
