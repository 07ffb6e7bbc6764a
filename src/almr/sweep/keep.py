"""What a study keeps of its ended runs (`sweep.keep`), applied by the driver whenever runs end.

Contract of `apply_keep(sweep_dir, records, keep)` — for every run that has ended (completed,
failed or pruned; a running run is never touched, and an ended run is never run again):

- `keep.training_state: false`: every checkpoint but the newest complete one is deleted, and the
  newest loses its `state/` (weights + optimizer of the trainer) and its `complete` marker — it is
  no longer a checkpoint a run can resume from, only a home for its export;
- `keep.exports`: `all` keeps each checkpoint's `hf/`; `none` deletes them; `best` keeps the `hf/`
  of the newest checkpoint of the `keep.best` completed runs with the highest averaged metric (as
  the study stands: a run that drops out of them loses its export when a better one ends) and
  deletes the rest, older checkpoints' exports included;
- a checkpoint folder left with neither `state/` nor `hf/` is deleted whole.

It returns the bytes it freed. The run's record, metrics.jsonl, run.log and final_eval.json stay:
they are what the frontier analysis reads.
"""

import shutil
from pathlib import Path

from almr.sweep.config import SweepKeepConfig
from almr.sweep.records import RunRecord

ENDED = ("completed", "failed", "pruned")


def best_runs(records: list[RunRecord], k: int) -> set[str]:
    ranked = [r for r in records if r.status == "completed" and r.averaged_metric is not None]
    ranked.sort(key=lambda r: (-(r.averaged_metric or 0.0), r.run_id))
    return {r.run_id for r in ranked[:k]}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _remove(path: Path) -> int:
    freed = _size(path)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    return freed


def apply_keep(sweep_dir: Path, records: list[RunRecord], keep: SweepKeepConfig) -> int:
    """Delete what `keep` does not keep of the ended runs (module docstring); returns the bytes freed."""
    if keep.training_state and keep.exports == "all":
        return 0
    best = best_runs(records, keep.best) if keep.exports == "best" else set()
    freed = 0
    for record in records:
        if record.status not in ENDED:
            continue
        steps = sorted((Path(sweep_dir) / "runs" / record.run_id / "checkpoints").glob("step_*"))
        steps = [s for s in steps if s.is_dir() and not s.name.endswith(".tmp")]
        complete = [s for s in steps if (s / "complete").is_file()]
        # the final checkpoint; once its state went (training_state: false) it is the one folder left
        newest = complete[-1] if complete else (steps[-1] if steps else None)
        for step in steps:
            if not keep.training_state:
                if step != newest:
                    freed += _remove(step)
                    continue
                freed += _remove(step / "state") + _remove(step / "complete")
            if keep.exports == "none" or (keep.exports == "best" and (record.run_id not in best or step != newest)):
                freed += _remove(step / "hf")
            if step.is_dir() and not (step / "state").exists() and not (step / "hf").exists():
                freed += _remove(step)
    return freed
