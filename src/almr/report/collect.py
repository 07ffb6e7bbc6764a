"""Reading a pipeline's output folder (OUT) for the report, forgivingly: a file that is missing or
unreadable is reported as such — with the stage that writes it — and never stops the report.

Every number read carries the relative path of the file it came from, and a standard error: the
one the evaluation stored; for a proportion (accuracy, exact match, pass@1, %Chinese, … on 0–100)
without one, or with lm-eval's 0 at 0% and 100%, √(p(1−p)/n) over the n items evaluated, with p
taken as (x + ½)/(n + 1) so that 0% and 100% still have a width; none for other metrics without a
stored one (BLEU, EQ).
"""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from almr.evaluate.results import FORMAT, FRACTIONS

SHARES = "eval/chinese_share.json"  # {label: share of Chinese (0..1) in chat replies to the world's Chinese questions}


@dataclass(frozen=True)
class Measured:
    """One score of one model: value (None: not measured), standard error, items, where from."""

    value: float | None
    se: float | None = None
    n: int | None = None
    key: str | None = None  # the score key read (`task` or `task:metric`)
    source: str | None = None  # file, relative to OUT


@dataclass(frozen=True)
class Loaded:
    """A JSON file of OUT: its content (None: missing or unreadable), its relative path, and why not."""

    data: dict[str, Any] | None
    path: str
    problem: str | None = None


class Outputs:
    """The files of one pipeline folder; `config_name` names the config in rerun hints; `needs` is
    the pipeline's stages in order, each with the stages it needs done first (the runner's table)."""

    def __init__(self, out_dir: Path, needs: Mapping[str, Sequence[str]], config_name: str = "CONFIG") -> None:
        self.out_dir = Path(out_dir)
        self.needs = dict(needs)
        self.config_name = config_name
        self._cache: dict[str, Loaded] = {}

    def rerun(self, stage: str, *also: str) -> str:
        """The command that makes `stage`'s output: `--only STAGE` when the stages it needs (and `also`)
        are done, else `--until STAGE` (which runs what is missing before it)."""
        ready = all(self.stage(need) is not None for need in (*self.needs.get(stage, ()), *also))
        return f"`almr run {self.config_name} --{'only' if ready else 'until'} {stage}`"

    def missing_note(self, loaded: Loaded, stage: str) -> str:
        return f"{loaded.path} {loaded.problem}: run {self.rerun(stage)}"

    def json(self, relative: str) -> Loaded:
        if relative not in self._cache:
            self._cache[relative] = self._read(relative)
        return self._cache[relative]

    def _read(self, relative: str) -> Loaded:
        path = self.out_dir / relative
        if not path.is_file():
            return Loaded(None, relative, "missing")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            return Loaded(None, relative, f"unreadable ({type(err).__name__})")
        if not isinstance(data, dict):
            return Loaded(None, relative, "unreadable (not a JSON object)")
        return Loaded(data, relative)

    def result(self, relative: str) -> Loaded:
        """An almr evaluation result (`almr-eval/1`), or a Loaded saying why not."""
        loaded = self.json(relative)
        if loaded.data is not None and (loaded.data.get("format") != FORMAT or not isinstance(
                loaded.data.get("tasks"), dict)):  # fmt: skip
            return Loaded(None, relative, "is not an almr evaluation result")
        return loaded

    def eval_result(self, label: str) -> Loaded:
        return self.result(f"eval/{label}.json")

    def stage(self, name: str) -> dict[str, Any] | None:
        return self.json(f"{name}/stage.json").data

    def zh_shares(self, n: int | None) -> dict[str, Measured]:
        """%Chinese per model label from the eval stage's chinese_share.json (a share in [0, 1], or
        `{"share": …}`), with the standard error of a proportion over the `n` questions asked."""
        loaded = self.json(SHARES)
        out = {}
        for label, v in (loaded.data or {}).items():
            share = v.get("share") if isinstance(v, dict) else v
            if isinstance(share, int | float) and not isinstance(share, bool):
                percent = 100 * float(share)
                out[label] = Measured(percent, proportion_se(percent, n), n, None, loaded.path)
        return out

    def loaded(self) -> list[tuple[str, str | None]]:
        """(relative path, problem or None) of every file asked for so far."""
        return [(path, got.problem) for path, got in self._cache.items()]

    def first(self, candidates: Sequence[str]) -> Loaded:
        """The first of `candidates` that loads; else the first one's Loaded (its path names what is missing)."""
        for candidate in candidates:
            if self.json(candidate).data is not None:
                for other in candidates:  # the other names were only guesses: not files this report read
                    if other != candidate:
                        self._cache.pop(other, None)
                return self._cache[candidate]
        return self.json(candidates[0])


def _entry(result: dict[str, Any], key: str) -> tuple[dict[str, Any] | None, str, str]:
    task, _, metric = key.partition(":")
    entry = result["tasks"].get(task)
    if not isinstance(entry, dict):
        return None, task, metric
    return entry, task, metric or str(entry.get("primary"))


def measure(result: dict[str, Any] | None, candidates: Sequence[str], source: str | None) -> Measured:
    """The first of the score keys `candidates` that `result` holds a value for, with its standard error."""
    if result is None:
        return Measured(None, source=source)
    for key in candidates:
        entry, _, metric = _entry(result, key)
        if entry is None:
            continue
        m = entry.get("metrics", {}).get(metric)
        if not isinstance(m, dict) or not isinstance(m.get("value"), int | float):
            continue
        n = entry.get("n_samples")
        n = int(n) if isinstance(n, int | float) and n > 0 else None
        value = float(m["value"])
        se = m.get("stderr")
        se = float(se) if isinstance(se, int | float) and math.isfinite(se) else None
        if not se and metric.split(",")[0] in FRACTIONS:  # none stored, or lm-eval's 0 at 0% and 100%
            se = proportion_se(value, n)
        return Measured(value, se, n, key, source)
    return Measured(None, source=source)


def proportion_se(percent: float, n: int | None) -> float | None:
    """100·√(p(1−p)/n) of a percentage over n items, p = (x + ½)/(n + 1) (never 0 at 0% or 100%)."""
    if n is None or n <= 0 or not 0.0 <= percent <= 100.0:
        return None
    p = (percent / 100 * n + 0.5) / (n + 1)
    return 100 * math.sqrt(p * (1 - p) / n)
