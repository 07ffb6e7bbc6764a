"""Run records of an ALMR × LR study: what `almr sweep` writes and `almr frontier` reads.

Each run of a sweep lives in `SWEEP_DIR/runs/<run_id>/` (its own CPT run folder) and writes
its record there as `record.json`, atomically, whenever its status changes; `load_records`
collects them. A record holds only numbers a frontier fit needs and where they came from:

- `almr`, `lr`: the point of the study (lr on its natural scale; fits use log10 lr);
- `status`: pending, running, completed, failed (excluded from fits, reported) or pruned
  (stopped early because its intermediate probe metrics could not catch up);
- `val_loss`: final held-out loss per source/domain; `val_history`: [{tokens, loss{}}];
- `scores`: final benchmark scores on 0-100 (probe or full suite); `probe_history`:
  [{tokens, scores{}}]; `averaged_metric`: the mean the study ranks by, of the final scores
  named in `average` (the sweep's `eval.average`);
- `tokens`, `steps`, `wall_time_s`, `error` (why a run failed), `base_hash` (identity of the
  sweep's base config, so that a directory mixing studies is refused).
"""

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from almr.durable import atomic_write_text
from almr.errors import AlmrError, DataError
from almr.evaluate.results import averaged_metric

Status = Literal["pending", "running", "completed", "failed", "pruned"]
RECORD = "record.json"


class RunRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    almr: float = Field(ge=0.0, le=1.0)
    lr: float = Field(gt=0.0)
    status: Status = "pending"
    base_hash: str = ""
    tokens: int = 0
    steps: int = 0
    wall_time_s: float = 0.0
    val_loss: dict[str, float] = Field(default_factory=dict)
    val_history: list[dict] = Field(default_factory=list)
    scores: dict[str, float] = Field(default_factory=dict)
    probe_history: list[dict] = Field(default_factory=list)
    averaged_metric: float | None = None
    average: list[str] = Field(default_factory=list)  # the scores averaged_metric is the mean of
    error: str | None = None

    def save(self, run_dir: Path) -> Path:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / RECORD, self.model_dump_json(indent=1) + "\n")
        return run_dir / RECORD


def load_records(sweep_dir: Path) -> list[RunRecord]:
    """Every run's record under `sweep_dir/runs/`, in run_id order."""
    runs = Path(sweep_dir) / "runs"
    records = []
    for path in sorted(runs.glob(f"*/{RECORD}")):
        try:
            records.append(RunRecord.model_validate(json.loads(path.read_text(encoding="utf-8"))))
        except (json.JSONDecodeError, ValueError) as err:
            why = str(err).splitlines()[0]
            raise DataError(f"{path}: not a run record ({why}); remove it or rerun that run") from None
    return records


def read_events(run_dir: Path) -> list[dict]:
    """The events of `run_dir/metrics.jsonl` so far; a line still being written is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def fill_from_metrics(record: RunRecord, run_dir: Path, average: list[str]) -> RunRecord:
    """`record` with its numbers taken from the run folder's metrics.jsonl: the validation and probe
    histories, the last of each as the final values, tokens and steps of the last event, and the
    averaged metric of the final probe scores over `average` (None when no probe ran or a key is
    missing: such a run is never ranked, and never scored as 0)."""
    events = read_events(run_dir)
    val = [{"tokens": e["tokens"], "loss": e["loss"]} for e in events if e.get("event") == "val"]
    probe = [{"tokens": e["tokens"], "scores": e["scores"]} for e in events if e.get("event") == "probe"]
    stepped = [e for e in events if "step" in e]
    update: dict = {"val_history": val, "probe_history": probe, "average": list(average)}
    if val:
        update["val_loss"] = val[-1]["loss"]
    if probe:
        update["scores"] = probe[-1]["scores"]
        try:
            update["averaged_metric"] = averaged_metric(probe[-1]["scores"], average)
        except AlmrError:
            update["averaged_metric"] = None
    if stepped:
        update["tokens"] = int(stepped[-1].get("tokens", 0))
        update["steps"] = int(stepped[-1]["step"])
    return record.model_copy(update=update)


def fit_ready(records: list[RunRecord], needed: int, what: str = "a fit") -> list[RunRecord]:
    """The completed, ranked runs; refuses with how many more are needed when fewer than `needed`.
    Failed runs are named (they are excluded, never scored 0); pruned ones are counted."""
    usable = [r for r in records if r.status == "completed" and r.averaged_metric is not None]
    if len(usable) >= needed:
        return usable
    failed = [r.run_id for r in records if r.status == "failed"]
    pruned = sum(r.status == "pruned" for r in records)
    raise AlmrError(
        f"{what} needs at least {needed} completed runs with an averaged metric; {len(usable)} of {len(records)} "
        f"have one ({len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; {pruned} pruned). "
        f"Run {needed - len(usable)} more (raise sweep.max_runs and resume the sweep)"
    )
