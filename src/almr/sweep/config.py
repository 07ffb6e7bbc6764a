"""Config section of the ALMR × LR study (`sweep`)."""

import math
from typing import Literal

from pydantic import Field, model_validator

from almr.section import Section


class SweepRange(Section):
    """One axis of the study: a closed range, and optionally the exact values a grid uses."""

    low: float = Field(..., description="Lower end of the range (inclusive).")
    high: float = Field(..., description="Upper end of the range (inclusive).")
    values: list[float] | None = Field(
        None, description="Grid design: exactly these values (inside [low, high]); default: evenly spaced points."
    )


class AlmrRange(SweepRange):
    """The ALMR axis: a share of CPT tokens, inside [0, 1]."""

    low: float = Field(0.1, description="Lowest ALMR (inclusive).")
    high: float = Field(0.9, description="Highest ALMR (inclusive).")


class LrRange(SweepRange):
    """The peak-LR axis (cpt.optimizer.lr), positive."""

    low: float = Field(1e-5, description="Lowest peak LR (inclusive).")
    high: float = Field(1e-3, description="Highest peak LR (inclusive).")


class SweepSlurmConfig(Section):
    """Resources of each run's Slurm job (`sweep.launcher: slurm`, through submitit)."""

    partition: str | None = Field(None, description="Slurm partition (sbatch --partition).")
    account: str | None = Field(None, description="Slurm account (sbatch --account).")
    nodes: int = Field(1, ge=1, description="Nodes per run (torchrun --nnodes).")
    gpus_per_node: int = Field(8, ge=1, description="GPUs per node (--gpus-per-node, torchrun --nproc_per_node).")
    cpus_per_task: int | None = Field(None, ge=1, description="CPU cores per node (sbatch --cpus-per-task).")
    time_min: int = Field(1440, ge=1, description="Wall-time limit of each job in minutes (sbatch --time).")
    mem: str | None = Field(
        None, description="Memory per node (sbatch --mem, e.g. 0 for all of it, 512G); default: the partition's."
    )
    exclusive: bool = Field(False, description="Whole nodes for each run (sbatch --exclusive).")
    requeue: bool = Field(
        True,
        description="Requeue a job that reaches its time limit (sbatch --requeue and submitit's timeout signal, "
        "--signal=USR2@signal_s); it resumes from its newest complete checkpoint.",
    )
    signal_s: int = Field(
        90, ge=1, description="Seconds before the time limit at which the job is signalled (checkpoint, requeue)."
    )
    max_requeues: int = Field(
        3, ge=0, description="Times a run that reached its time limit is requeued or resubmitted with --resume."
    )
    setup: list[str] = Field(
        default_factory=list, description="Shell lines run before the command (module load, venv activation ...)."
    )
    rdzv_port: int = Field(
        29500, ge=1024, le=55535,
        description="Base of the torchrun rendezvous ports: each job uses rdzv_port + (its Slurm job id mod 10000), "
        "so runs that share a node never share a port.",
    )  # fmt: skip


class SweepKeepConfig(Section):
    """What each run folder keeps once its run has ended (the rest is deleted by the driver)."""

    exports: Literal["all", "best", "none"] = Field(
        "all",
        description="Hugging Face exports (checkpoints/step_N/hf) kept: all; best: those of the `best` runs with "
        "the highest averaged metric; none.",
    )
    best: int = Field(3, ge=1, description="With exports: best, how many runs keep their export.")
    training_state: bool = Field(
        True,
        description="Keep the training state (checkpoints/step_N/state: weights + optimizer, ~12 bytes a parameter) "
        "after a run has ended; false deletes it (the run can then no longer be extended with --resume).",
    )


class SweepPruningConfig(Section):
    """Early stopping: runs whose intermediate probe averaged metric falls behind are stopped (Optuna pruner)."""

    enabled: bool = Field(False, description="Stop runs early whose intermediate averaged metric cannot catch up.")
    percentile: float = Field(
        75.0, gt=0.0, lt=100.0,
        description="Keep runs whose best averaged metric so far is in the top `percentile`% of the completed "
        "runs' values at the same token count; stop the rest (75: the bottom quarter; 50: the median rule; "
        "lower stops more). 75 solved every synthetic surface, 50 saved more tokens (docs/benchmarks.md, Sweep).",
    )  # fmt: skip
    min_tokens: int = Field(0, ge=0, description="Never stop a run before it has trained this many tokens.")
    n_startup_runs: int = Field(4, ge=1, description="Stop nothing until this many runs have completed.")


class SweepFinalEvalConfig(Section):
    """Per-run final evaluation: an `almr eval` suite on each completed run's final checkpoint, in the
    run's own job after training; its scores rank the run (the probe still drives early stopping)."""

    enabled: bool = Field(False, description="Evaluate each completed run's final checkpoint (RUN/final_eval.json).")
    suite: str | None = Field(None, description="Suite to run (`almr eval tasks` lists them), e.g. world, paper-base.")
    tasks: list[str] = Field(default_factory=list, description="Tasks to run (added to the suite).")
    limit: int | None = Field(None, ge=1, description="Items per task; default eval.limit (None: all items).")

    @model_validator(mode="after")
    def _names_what_to_run(self) -> "SweepFinalEvalConfig":
        if self.enabled and not self.suite and not self.tasks:
            raise ValueError(
                "enabled without a suite or tasks; set sweep.final_eval.suite (e.g. world) or sweep.final_eval.tasks"
            )
        return self


class SweepConfig(Section):
    """An ALMR × LR study of short CPT runs from the base config (`almr sweep`, docs/sweep.md)."""

    design: Literal["grid", "adaptive"] = Field(
        "grid", description="grid: every ALMR × LR point; adaptive: space-filling start, then Bayesian optimization."
    )
    almr: AlmrRange = Field(default_factory=AlmrRange, description="ALMR range (mixture.almr).")
    lr: LrRange = Field(default_factory=LrRange, description="Peak LR range (cpt.optimizer.lr; log scale: lr_log).")
    lr_log: bool = Field(True, description="Search and space the LR on a log scale.")
    grid_almr: int = Field(7, ge=1, description="Grid design: ALMR values when sweep.almr.values is not set.")
    grid_lr: int = Field(7, ge=1, description="Grid design: LR values when sweep.lr.values is not set.")
    n_initial: int = Field(8, ge=1, description="Adaptive design: space-filling (Sobol) runs before the GP proposes.")
    max_runs: int = Field(16, ge=1, description="Adaptive design: runs in all (failed and pruned ones count).")
    parallel: int = Field(1, ge=1, description="Runs at a time; the adaptive design proposes batches of this size.")
    threads_per_run: int | None = Field(
        None, ge=1, description="Local launcher: CPU threads per run; default: CPU cores // parallel."
    )
    gpus_per_run: int | None = Field(
        None, ge=0,
        description="Local launcher: GPUs per run, each run under torchrun on its own GPUs (CUDA_VISIBLE_DEVICES) "
        "with a free rendezvous port; default: the visible GPUs // parallel (0 on a machine without GPUs or "
        "with cpt.device: cpu: one plain process per run).",
    )  # fmt: skip
    gpus: list[int] | None = Field(
        None, description="Local launcher: the GPU ids the runs share out; default: all visible ones."
    )
    launcher: Literal["local", "slurm"] = Field("local", description="local: subprocesses here; slurm: submitit jobs.")
    slurm: SweepSlurmConfig = Field(default_factory=SweepSlurmConfig)
    storage: str | None = Field(
        None, description="Optuna RDB URL; default sqlite:///SWEEP_DIR/study.db (PostgreSQL/MySQL for many workers)."
    )
    pruning: SweepPruningConfig = Field(default_factory=SweepPruningConfig)
    final_eval: SweepFinalEvalConfig = Field(default_factory=SweepFinalEvalConfig)
    keep: SweepKeepConfig = Field(default_factory=SweepKeepConfig)
    sweep_dir: str = Field("sweeps/sweep", description="Folder of the study: sweep.yaml, study.db, runs/<run_id>/.")
    seed: int = Field(0, description="Seeds the space-filling design and the Bayesian optimizer.")
    poll_s: float = Field(5.0, gt=0, description="Seconds between looks at running runs' metrics and exit status.")

    @model_validator(mode="after")
    def _ranges_make_sense(self) -> "SweepConfig":
        if self.almr.low < 0.0 or self.almr.high > 1.0:
            raise ValueError(f"sweep.almr: [{self.almr.low}, {self.almr.high}] must lie inside [0, 1] (a token share)")
        if self.lr.low <= 0.0 or not math.isfinite(self.lr.high):
            raise ValueError(f"sweep.lr: [{self.lr.low}, {self.lr.high}] must be positive and finite (learning rates)")
        for axis, rng in (("almr", self.almr), ("lr", self.lr)):
            if not rng.low < rng.high:
                raise ValueError(
                    f"sweep.{axis}: low {rng.low} must be below high {rng.high}; the range is empty or reversed"
                )
            if rng.values is not None:
                outside = [v for v in rng.values if not rng.low <= v <= rng.high]
                if outside:
                    raise ValueError(f"sweep.{axis}.values: {outside} outside [low, high] = [{rng.low}, {rng.high}]")
                if len(set(rng.values)) != len(rng.values):
                    raise ValueError(f"sweep.{axis}.values: {rng.values} repeats a value; list each once")
        if self.design == "grid":
            for axis, n, rng in (("almr", self.grid_almr, self.almr), ("lr", self.grid_lr, self.lr)):
                count = len(rng.values) if rng.values is not None else n
                if count < 2:
                    where = f"sweep.{axis}.values" if rng.values is not None else f"sweep.grid_{axis}"
                    raise ValueError(f"{where}: a grid needs at least 2 values per axis to show a trend (got {count})")
        elif self.n_initial > self.max_runs:
            raise ValueError(
                f"sweep.n_initial: {self.n_initial} space-filling runs exceed sweep.max_runs={self.max_runs}; "
                "raise max_runs or lower n_initial"
            )
        return self
