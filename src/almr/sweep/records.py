"""Run records of an ALMR × LR study: what `almr sweep` writes and `almr frontier` reads.

Each run of a sweep lives in `SWEEP_DIR/runs/<run_id>/` (its own CPT run folder) and writes
its record there as `record.json`, atomically, whenever its status changes; `load_records`
collects them. A record holds only numbers a frontier fit needs and where they came from:

- `almr`, `lr`: the point of the study (lr on its natural scale; fits use log10 lr);
- `status`: pending, running, completed, failed (excluded from fits, reported) or pruned
  (stopped early because its intermediate probe metrics could not catch up);
- `val_loss`: final held-out loss per source/domain; `val_history`: [{tokens, loss{}}];
- `scores`: final benchmark scores on 0-100, from `RUN/final_eval.json` (the `sweep.final_eval`
  suite) when the run has one, else from the last probe — `scores_from` says which;
  `probe_history`: [{tokens, scores{}}]; `averaged_metric`: the weighted mean the study ranks by,
  of the final scores, as `average` defines it (the sweep's `eval.average`: name and weighted
  keys; records written when it was a list of keys read as weights 1);
- `tokens`, `steps`, `wall_time_s`, `error` (why a run failed), `base_hash` (identity of the
  sweep's base config, so that a directory mixing studies is refused).
"""

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from almr.durable import atomic_write_text
from almr.errors import AlmrError, DataError
from almr.evaluate.config import AverageConfig
from almr.evaluate.results import Average, as_average, averaged_metric, load_result, scores

Status = Literal["pending", "running", "completed", "failed", "pruned"]
RECORD = "record.json"
FINAL_EVAL = "final_eval.json"  # the run's final evaluation (sweep.final_eval), an almr-eval result


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
    scores_from: Literal["final_eval", "probe"] | None = None
    probe_history: list[dict] = Field(default_factory=list)
    averaged_metric: float | None = None
    average: AverageConfig | None = None  # the definition averaged_metric follows
    error: str | None = None

    @field_validator("average", mode="before")
    @classmethod
    def _old_average(cls, value: Any) -> Any:
        return None if value == [] else value  # a record from before `average` was kept

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


def fill_from_metrics(record: RunRecord, run_dir: Path, average: Average, final_eval: bool = False) -> RunRecord:
    """`record` with its numbers taken from the run folder: the validation and probe histories of
    metrics.jsonl, the last validation as the final losses, tokens and steps of the last event, and
    the final scores with their averaged metric (`average`) — from RUN/final_eval.json when it is
    there, else from the last probe. With `final_eval` (the sweep evaluates every run) the probe
    never stands in for a missing final evaluation. The averaged metric is None when no scores
    exist or a key is missing: such a run is never ranked, and never scored as 0."""
    average = as_average(average)
    events = read_events(run_dir)
    val = [{"tokens": e["tokens"], "loss": e["loss"]} for e in events if e.get("event") == "val"]
    probe = [{"tokens": e["tokens"], "scores": e["scores"]} for e in events if e.get("event") == "probe"]
    stepped = [e for e in events if "step" in e]
    update: dict = {"val_history": val, "probe_history": probe, "average": average}
    if val:
        update["val_loss"] = val[-1]["loss"]
    final: dict[str, float] | None = None
    if (Path(run_dir) / FINAL_EVAL).is_file():
        try:
            final = scores(load_result(Path(run_dir) / FINAL_EVAL))
            update["scores_from"] = "final_eval"
        except DataError as err:  # a damaged file fails this run, not the driver
            update["error"] = str(err)
    elif probe and not final_eval:
        final = probe[-1]["scores"]
        update["scores_from"] = "probe"
    if final is not None:
        update["scores"] = final
        try:
            update["averaged_metric"] = averaged_metric(final, average)
        except AlmrError:
            update["averaged_metric"] = None
    if stepped:
        update["tokens"] = int(stepped[-1].get("tokens", 0))
        update["steps"] = int(stepped[-1]["step"])
    return record.model_copy(update=update)


def fit_ready(
    records: list[RunRecord], needed: int, what: str = "a fit", target: Literal["metric", "loss"] = "metric"
) -> list[RunRecord]:
    """The completed runs a fit of `target` can use — with an averaged metric (the metric surface and
    frontier, the recommendation by metric) or with validation losses (the loss surfaces and frontier,
    D-CPT, CMR, the recommendation of a study without a metric); refuses with how many more are needed
    when fewer than `needed`, and says what the other kind of fit has. Failed runs are named (they are
    excluded, never scored 0); pruned ones are counted."""
    done = [r for r in records if r.status == "completed"]
    with_metric = [r for r in done if r.averaged_metric is not None]
    with_losses = [r for r in done if r.val_loss]
    usable = with_metric if target == "metric" else with_losses
    if len(usable) >= needed:
        return usable
    failed = [r.run_id for r in records if r.status == "failed"]
    pruned = sum(r.status == "pruned" for r in records)
    if target == "metric":
        having, fits = "an averaged metric", "the metric fits"
        other = f"the loss fits need validation losses only, which {len(with_losses)} have"
    else:
        having, fits = "validation losses", "the loss fits"
        other = f"the metric fits need an averaged metric, which {len(with_metric)} have"
    raise AlmrError(
        f"{what} needs at least {needed} completed runs with {having}; {len(usable)} of {len(records)} "
        f"have them ({len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; {pruned} pruned). "
        f"Run {needed - len(usable)} more (raise sweep.max_runs and resume the sweep) for {fits}; {other}"
    )
