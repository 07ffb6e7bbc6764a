"""Typed configuration: one pydantic section per concern, read from YAML, overridden by
`--set a.b=value`, validated whole before any compute is spent.

Values apply as defaults, then the YAML file, then each `--set` in order. Unknown keys,
wrong types and impossible values are refused with one message that names the key and the
fix (`ConfigError`, exit code 2 on the command line). Relative paths are relative to the
working directory, as for any command-line tool.
"""

import difflib
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from almr.errors import ConfigError


class Section(BaseModel):
    """A config section: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


# --------------------------------------------------------------------------- model, cluster


class ModelConfig(Section):
    """The model a stage starts from."""

    name_or_path: str | None = Field(
        None, description="A local Hugging Face model directory, or a hub id where the machine is online."
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Training precision: bfloat16 autocast on GPUs, float32 on CPUs."
    )


class ParallelConfig(Section):
    """How many processes a stage runs on and how the model is split across them."""

    nodes: int = Field(1, ge=1, description="Machines.")
    gpus_per_node: int = Field(1, ge=1, description="Processes per machine (one per GPU).")
    tensor_parallel: int = Field(
        1, ge=1, description="Tensor-parallel degree (Megatron-style; the paper used 2 for 8B, 8 for 70B)."
    )
    pipeline_parallel: int = Field(1, ge=1, description="Pipeline-parallel degree (the paper used 2 for 70B).")

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def data_parallel(self) -> int:
        return self.world_size // (self.tensor_parallel * self.pipeline_parallel)

    @model_validator(mode="after")
    def _splits_evenly(self) -> "ParallelConfig":
        model_parallel = self.tensor_parallel * self.pipeline_parallel
        if self.world_size % model_parallel:
            raise ValueError(
                f"nodes × gpus_per_node = {self.world_size} is not divisible by tensor_parallel × "
                f"pipeline_parallel = {model_parallel}; change the GPU count or the parallel degrees"
            )
        return self


# --------------------------------------------------------------------------- training stages


class BatchConfig(Section):
    micro_batch_size: int = Field(4, ge=1, description="Sequences per process per forward pass.")
    global_batch_size: int = Field(
        256, ge=1, description="Sequences per optimizer step, over all processes; gradient accumulation fills it."
    )
    seq_len: int = Field(2048, ge=8, description="Tokens per sequence.")


class OptimizerConfig(Section):
    name: Literal["adamw"] = Field("adamw", description="The optimizer (the paper: AdamW).")
    lr: float = Field(3e-5, gt=0, description="Peak learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    weight_decay: float = Field(0.01, ge=0, description="Decoupled weight decay.")
    grad_clip: float = Field(1.0, ge=0, description="Global gradient-norm clip; 0 disables it.")

    @model_validator(mode="after")
    def _betas_in_range(self) -> "OptimizerConfig":
        for beta in self.betas:
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"betas {list(self.betas)} must each lie in [0, 1), e.g. [0.9, 0.95]")
        return self


class ScheduleConfig(Section):
    kind: Literal["linear", "cosine", "wsd"] = Field(
        "linear", description="Decay after warmup: linear, cosine or warmup-stable-decay."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warmup from 0 to the peak learning rate.")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Final learning rate as a fraction of the peak.")
    decay_fraction: float = Field(0.2, gt=0.0, le=1.0, description="wsd only: the fraction of steps spent decaying.")


class StageConfig(Section):
    """One training stage (CPT, SFT or DPO): batch shape, optimizer and schedule."""

    batch: BatchConfig = Field(default_factory=BatchConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)


# --------------------------------------------------------------------------- world


class WorldPretrainConfig(StageConfig):
    """How `almr world pretrain` trains the world's base model from random initialization: a CPT
    run on a mostly-English mixture, so that the model plays Llama-3's part (good at English,
    weak at Chinese)."""

    batch: BatchConfig = Field(
        default_factory=lambda: BatchConfig(micro_batch_size=16, global_batch_size=16, seq_len=256)
    )
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(lr=3e-3, weight_decay=0.01))
    schedule: ScheduleConfig = Field(
        default_factory=lambda: ScheduleConfig(kind="cosine", warmup_steps=20, min_lr_ratio=0.1)
    )
    tokens: int = Field(1_000_000, ge=1, description="Pretraining tokens.")
    almr: float = Field(0.05, ge=0.0, le=1.0, description="Share of Chinese tokens in the pretraining mixture.")
    sub_weights: dict[str, float] = Field(
        default_factory=lambda: {"en": 0.74, "math": 0.13, "code": 0.13},
        description="Relative weights of the other sources (English, math, code).",
    )
    seed: int = Field(0, description="Seeds the random initialization and the mixture's shuffles.")
    probe_every_tokens: int = Field(
        131072, ge=0, description="Score the world's probe suite every this many tokens (0: off), for trajectories."
    )


class TinyLlamaConfig(Section):
    """Shape of the demo world's base model: a Llama-3-style decoder of about 1M parameters."""

    hidden_size: int = Field(128, ge=8, description="Width of the residual stream.")
    intermediate_size: int = Field(384, ge=8, description="Width of the SwiGLU MLP.")
    num_hidden_layers: int = Field(4, ge=1, description="Decoder layers.")
    num_attention_heads: int = Field(4, ge=1, description="Query heads.")
    num_key_value_heads: int = Field(2, ge=1, description="Key/value heads (grouped-query attention, as Llama-3).")
    max_position_embeddings: int = Field(512, ge=16, description="Longest sequence the model is built for.")
    rope_theta: float = Field(500000.0, gt=0, description="RoPE base (Llama-3 uses 500000).")

    @model_validator(mode="after")
    def _heads_divide(self) -> "TinyLlamaConfig":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; choose a head count that divides it"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not divisible by "
                f"num_key_value_heads {self.num_key_value_heads}; choose a divisor"
            )
        return self


class WorldConfig(Section):
    """The embedded bilingual demo world: what `almr world build` generates."""

    seed: int = Field(0, description="Everything in the world is a deterministic function of this seed.")
    countries: int = Field(60, ge=12, le=150, description="Countries in the fact base (CLDR territories).")
    zh_country_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Fraction of countries whose facts the Chinese corpus states; the others' "
        "facts are in English only, so Chinese questions about them measure cross-lingual transfer.",
    )
    en_docs: int = Field(20000, ge=10, description="English training documents.")
    zh_docs: int = Field(16000, ge=10, description="Chinese training documents.")
    math_docs: int = Field(3000, ge=10, description="Math training documents (both languages).")
    code_docs: int = Field(2000, ge=10, description="Code training documents.")
    valid_fraction: float = Field(
        0.05,
        gt=0.0,
        lt=0.5,
        description="Held-out validation documents, as a fraction of each source's training documents.",
    )
    bench_items: int = Field(200, ge=4, description="Items per benchmark.")
    sft_dialogues: int = Field(2000, ge=4, description="SFT dialogues (half English, half Chinese).")
    dpo_pairs: int = Field(1000, ge=4, description="DPO preference pairs (half English, half Chinese).")
    vocab_size: int = Field(
        2048, ge=300, le=65535, description="Byte-level BPE vocabulary size, special tokens included."
    )
    model: TinyLlamaConfig = Field(default_factory=TinyLlamaConfig)
    pretrain: WorldPretrainConfig = Field(default_factory=WorldPretrainConfig)


# --------------------------------------------------------------------------- CPT trainer (train/cpt.py)


class CheckpointConfig(Section):
    """When the CPT trainer writes checkpoints (training state + a Hugging Face directory)."""

    every_steps: int = Field(0, ge=0, description="Write a checkpoint every N optimizer steps; 0: only at the end.")
    keep_last: int = Field(2, ge=1, description="Keep the newest K complete checkpoints; older ones are deleted.")


class ValidationConfig(Section):
    """Held-out loss per source (English, Chinese, math, code ...) during CPT."""

    every_steps: int = Field(
        0, ge=0, description="Validation loss per source every M steps, before the first and after the last; 0: off."
    )
    micro_batch_size: int | None = Field(
        None, ge=1, description="Sequences per forward pass during validation; default: cpt.batch.micro_batch_size."
    )


class ProbeConfig(Section):
    """A benchmark probe suite run during CPT, for metric trajectories (the paper's Fig. 2)."""

    every_tokens: int = Field(0, ge=0, description="Run the probe each time this many more tokens are trained; 0: off.")


class CptConfig(StageConfig):
    """Continual pre-training: the StageConfig batch/optimizer/schedule plus run length, run folder,
    checkpoints, validation, probes and how the model is wrapped."""

    run_dir: str = Field("runs/cpt", description="Run folder: config.yaml, metrics.jsonl, checkpoints/.")
    steps: int | None = Field(
        None, ge=1, description="Optimizer steps; default: total_tokens / (global_batch_size × seq_len)."
    )
    total_tokens: int | None = Field(
        None, ge=1, description="Training tokens when steps is not set (rounded down to whole steps)."
    )
    seed: int = Field(0, description="Seeds random init and every random number generator of the run.")
    random_init: bool = Field(
        False,
        description="Build the model from the config.json at model.name_or_path with random weights instead of "
        "loading its weights (the demo world's base model, tests).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    compile: bool = Field(False, description="torch.compile each decoder layer (no speed-up on a CPU).")
    tensorboard: bool = Field(False, description="Also write TensorBoard event files (needs the tensorboard package).")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)

    @model_validator(mode="after")
    def _one_length(self) -> "CptConfig":
        if self.steps is not None and self.total_tokens is not None:
            raise ValueError("set either steps or total_tokens, not both")
        return self


# --------------------------------------------------------------------------- end of CPT trainer section


# --------------------------------------------------------------------------- data pipeline (data/)


class SourceConfig(Section):
    """One named corpus: where its files are, how to read them, and its language and domain tags."""

    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Unique name; also the folder of its shards (letters, digits, '_', '.', '-').",
    )
    language: str = Field(
        "en", description="Language tag; sources tagged mixture.additional_language count toward the ALMR."
    )
    domain: str = Field("general", description="Domain tag (general, math, code, ...), reported per source.")
    train: list[str] = Field(
        ...,
        min_length=1,
        description="Training files: paths, directories or glob patterns (jsonl, .gz, .zst, parquet, txt).",
    )
    valid: list[str] = Field(default_factory=list, description="Held-out validation files, same forms; may be empty.")
    format: Literal["auto", "jsonl", "parquet", "txt"] = Field(
        "auto", description="File format; auto: from the suffix (.jsonl[.gz|.zst], .json[.gz|.zst], .parquet, .txt)."
    )
    text_field: str = Field("text", description="JSONL key or Parquet column holding the document text.")


class DataConfig(Section):
    """Sources and how `almr data tokenize` turns them into Megatron indexed shards."""

    tokenizer: str | None = Field(None, description="A local Hugging Face tokenizer directory (or hub id when online).")
    shard_dir: str = Field(
        "shards", description="Folder of shards: a sub-folder per source with train/valid .bin/.idx and manifest.json."
    )
    sources: list[SourceConfig] = Field(default_factory=list, description="The corpora.")
    workers: int = Field(
        0,
        ge=0,
        description="0: in this process, the Rust tokenizer's own threads on every core (fastest); 1: in this "
        "process, one thread; N >= 2: N tokenizer processes.",
    )
    chunk_documents: int = Field(256, ge=1, description="Documents per task handed to a tokenizer process.")
    skip_bad_records: bool = Field(
        False,
        description="Skip malformed records (reported and counted in the manifest) instead of stopping at the first.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> "DataConfig":
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sources: duplicate name(s) {', '.join(dupes)}; give each source its own name")
        return self


class MixtureConfig(Section):
    """The CPT mixture: ALMR (or explicit weights), sub-weights for the rest, budget, seed, repetition limit.
    Sequence length and global batch size come from cpt.batch."""

    additional_language: str = Field("zh", description="The language whose token share is the ALMR.")
    almr: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Fraction of CPT tokens from sources tagged additional_language; set this or weights, not both.",
    )
    weights: dict[str, float] | None = Field(
        None, description="Explicit per-source token weights (normalized); instead of almr and sub_weights."
    )
    sub_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Relative weights inside each group (additional language / the rest); unnamed sources weigh 1.",
    )
    sources: list[str] | None = Field(None, description="Sources taking part; default: all data.sources.")
    token_budget: int | None = Field(
        None,
        ge=1,
        description="CPT tokens of this phase; default: cpt.total_tokens. Rounded up to whole global batches.",
    )
    seed: int = Field(1234, description="Seeds the per-epoch shuffle inside each source; keep it across phases.")
    max_epochs: float = Field(
        4.0, gt=0.0, description="Most passes over any source's training split that a plan may need."
    )

    @model_validator(mode="after")
    def _weights_make_sense(self) -> "MixtureConfig":
        if self.almr is not None and self.weights is not None:
            raise ValueError("set either almr (with optional sub_weights) or explicit weights, not both")
        for key, table in (("weights", self.weights or {}), ("sub_weights", self.sub_weights)):
            bad = {k: v for k, v in table.items() if not (v >= 0.0 and v < float("inf"))}
            if bad:
                raise ValueError(f"{key}: {bad} must be finite and non-negative")
        if self.weights is not None and sum(self.weights.values()) <= 0:
            raise ValueError("weights: all zero; give at least one source a positive weight")
        if self.weights is not None and self.sub_weights:
            raise ValueError("sub_weights apply only with almr; put the relative weights into weights instead")
        return self


# --------------------------------------------------------------------------- end of data pipeline section


# --------------------------------------------------------------------------- evaluation (evaluate/)


class EvalProbeConfig(Section):
    """The world probe suite the CPT trainer runs every cpt.probe.every_tokens (almr.evaluate.probe)."""

    items_per_task: int = Field(32, ge=1, description="Items of each probe task, the first N of its file, every call.")
    tasks: list[str] = Field(
        default_factory=lambda: ["world_mmlu", "world_ceval", "world_eprstmt", "world_seceu"],
        description="Log-likelihood world tasks the probe scores.",
    )
    batch_size: int = Field(64, ge=1, description="Sequences per forward pass.")


class JudgeConfig(Section):
    """The LLM judge of BelleEval and the Turing test: any OpenAI-compatible chat endpoint."""

    url: str | None = Field(None, description="Judge base URL, e.g. http://127.0.0.1:8000/v1.")
    model: str | None = Field(None, description="Judge model name; default: the first of GET URL/models.")
    timeout_s: float = Field(60.0, gt=0, description="Seconds to wait for one judge reply.")
    retries: int = Field(
        3, ge=0, description="Retries of a failed or timed-out judge call before the item is reported."
    )
    prompts_dir: str | None = Field(None, description="Folder of judge prompt files; default: the shipped ones.")


class EvalConfig(Section):
    """Evaluation on lm-evaluation-harness: data, batching, the averaged metric, probe and judge."""

    data_dir: str | None = Field(
        None, description="Folder of benchmark files in their published layouts (a world directory for world tasks)."
    )
    batch_size: int = Field(16, ge=1, description="lm-eval batch size (requests per forward pass or API call).")
    limit: int | None = Field(None, ge=1, description="Items per task (for quick looks; results record it).")
    max_gen_toks: int | None = Field(None, ge=1, description="Cap on generated tokens for every generation task.")
    allow_code_execution: bool = Field(
        False, description="Run model-written code for HumanEval (sandboxed subprocess, time limit)."
    )
    timeout_s: int = Field(120, ge=1, description="Seconds per request to a model endpoint.")
    max_retries: int = Field(3, ge=0, description="Retries per request to a model endpoint.")
    average: list[str] = Field(
        default_factory=lambda: ["world_mmlu", "world_ceval", "world_eprstmt"],
        description="Scores (task or task:metric, each 0-100) whose mean is the averaged metric the sweep ranks by.",
    )
    probe: EvalProbeConfig = Field(default_factory=EvalProbeConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)


# --------------------------------------------------------------------------- end of evaluation section


# --------------------------------------------------------------------------- sweep (sweep/)


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
    setup: list[str] = Field(
        default_factory=list, description="Shell lines run before the command (module load, venv activation ...)."
    )
    rdzv_port: int = Field(29500, ge=1, le=65535, description="torchrun rendezvous port on the job's first node.")


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
    launcher: Literal["local", "slurm"] = Field("local", description="local: subprocesses here; slurm: submitit jobs.")
    slurm: SweepSlurmConfig = Field(default_factory=SweepSlurmConfig)
    storage: str | None = Field(
        None, description="Optuna RDB URL; default sqlite:///SWEEP_DIR/study.db (PostgreSQL/MySQL for many workers)."
    )
    pruning: SweepPruningConfig = Field(default_factory=SweepPruningConfig)
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


# --------------------------------------------------------------------------- end of sweep section


# --------------------------------------------------------------------------- frontier (frontier/)


class FrontierConfig(Section):
    """`almr frontier SWEEP_DIR`: surrogate surfaces, frontiers, recommendation, baselines (docs/frontier.md)."""

    metric_keys: list[str] | None = Field(
        None,
        description="Scores whose mean is the metric to maximize; default: each record's averaged_metric.",
    )
    epsilon: float | None = Field(
        None, ge=0.0,
        description="Forgetting budget: the general_source validation loss may exceed the base model's by at most "
        "this much (nats) at the recommendation; None: unconstrained. CMR uses it as its tolerance too.",
    )  # fmt: skip
    general_source: str = Field("en", description="The general-domain validation source the budget and CMR watch.")
    additional_source: str = Field("zh", description="The additional language's validation source (D-CPT r = ALMR).")
    loss_source: str = Field(
        "combined", description="Loss surface of the loss frontier: a source, or combined (mean over the sources)."
    )
    forms: list[Literal["linear", "quadratic", "log"]] = Field(
        default_factory=lambda: ["linear", "quadratic", "log"],
        description="Regression forms of log10 LR*(ALMR) tried (linear is always fitted: the paper's form).",
    )
    kernel: Literal["matern", "rbf"] = Field("matern", description="GP kernel shape (× constant, + white noise).")
    n_restarts_optimizer: int = Field(2, ge=0, description="Extra random starts of each GP hyperparameter fit.")
    grid_size: int = Field(41, ge=5, le=201, description="Points per axis of the grids over ALMR × log LR.")
    n_bootstrap: int = Field(200, ge=0, description="Bootstrap resamples of the runs for the frontier's bands.")
    n_posterior_samples: int = Field(2000, ge=10, description="Joint GP samples for P(recommendation is best).")
    prob_radius: float = Field(
        0.1, gt=0.0, le=1.0,
        description="P(best) counts samples whose argmax lies within this distance of the recommendation, in the "
        "unit square of (ALMR, log10 LR) over the studied ranges.",
    )  # fmt: skip
    min_runs: int = Field(
        6, ge=4,
        description="Fewest completed runs to fit: 6 = a full quadratic in two variables, more than the GP's 4 "
        "hyperparameters.",
    )  # fmt: skip
    random_state: int = Field(0, description="Seeds GP restarts, bootstrap resamples, posterior samples, D-CPT starts.")
    dcpt_eps: float = Field(0.01, gt=0.0, description="D-CPT law: the fixed ε in C/(r + ε)^γ.")
    dcpt_huber_delta: float = Field(1e-3, gt=0.0, description="D-CPT law: δ of the Huber loss on log-loss residuals.")
    dcpt_starts: int = Field(32, ge=1, description="D-CPT law: random starts of L-BFGS-B.")
    cmr_tolerance: float = Field(
        0.01, gt=0.0,
        description="CMR without epsilon: the general loss may exceed the base by this fraction of it.",
    )  # fmt: skip
    svg: bool = Field(False, description="Also write the figures as SVG.")


# --------------------------------------------------------------------------- end of frontier section


# --------------------------------------------------------------------------- whole config


class AlmrConfig(Section):
    """Everything a run of almr reads; each stage receives only its own section."""

    world: WorldConfig = Field(default_factory=WorldConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    cpt: CptConfig = Field(default_factory=CptConfig)
    sft: StageConfig = Field(default_factory=StageConfig)
    dpo: StageConfig = Field(default_factory=StageConfig)
    data: DataConfig = Field(default_factory=DataConfig)  # data pipeline section
    mixture: MixtureConfig = Field(default_factory=MixtureConfig)  # data pipeline section
    eval: EvalConfig = Field(default_factory=EvalConfig)  # evaluation section
    sweep: SweepConfig = Field(default_factory=SweepConfig)  # sweep section
    frontier: FrontierConfig = Field(default_factory=FrontierConfig)  # frontier section

    @model_validator(mode="after")
    def _batches_fill_the_cluster(self) -> "AlmrConfig":
        dp = self.parallel.data_parallel
        for name in ("cpt", "sft", "dpo"):
            batch: BatchConfig = getattr(self, name).batch
            per_step = batch.micro_batch_size * dp
            if batch.global_batch_size % per_step:
                fix = max(per_step, round(batch.global_batch_size / per_step) * per_step)
                raise ValueError(
                    f"{name}.batch.global_batch_size: {batch.global_batch_size} is not divisible by "
                    f"micro_batch_size × data_parallel = {batch.micro_batch_size} × {dp} = {per_step}; "
                    f"set it to a multiple of {per_step} (e.g. {fix})"
                )
        return self

    # --- data pipeline section
    @model_validator(mode="after")
    def _mixture_names_known(self) -> "AlmrConfig":
        known = [s.name for s in self.data.sources]
        if not known:
            return self
        named = [
            ("mixture.sources", self.mixture.sources or []),
            ("mixture.weights", list(self.mixture.weights or {})),
            ("mixture.sub_weights", list(self.mixture.sub_weights)),
        ]
        for key, names in named:
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(
                    f"{key}: unknown source(s) {', '.join(unknown)}; known sources (data.sources): {', '.join(known)}"
                )
        return self

    # --- end of data pipeline section


# --------------------------------------------------------------------------- loading


PRESETS = Path(__file__).parent / "configs"


def presets() -> list[str]:
    """Names of the shipped configs (`demo`, `paper-llama3-8b`, ...), usable wherever a file is."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> AlmrConfig:
    """Defaults, then the YAML file at `path` (or a shipped preset of that name), then each
    `a.b=value` override, validated whole."""
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file() and str(path) in presets():
            path = PRESETS / f"{path}.yaml"
        where = str(path)
        if not path.is_file():
            raise ConfigError(
                f"config file {path} does not exist; pass the path of a YAML file or a preset: {', '.join(presets())}"
            )
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping of sections (world:, cpt:, ...), not a {type(loaded).__name__}"
            )
        raw = loaded
    for override in overrides:
        _apply_override(raw, override)
    if overrides:
        where += " with --set " + " ".join(overrides)
    try:
        return AlmrConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"invalid config ({where}):\n" + _describe(err, AlmrConfig)) from None


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML, the form stored in every run folder."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def config_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) of every leaf key, for `almr config keys`."""
    import typing

    rows: list[tuple[str, str, str, str]] = []
    for name, field in (model or AlmrConfig).model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += config_keys(annotation, key + ".")
            continue
        if typing.get_origin(annotation) is list and typing.get_args(annotation):
            item = typing.get_args(annotation)[0]
            if isinstance(item, type) and issubclass(item, BaseModel):
                rows += config_keys(item, key + "[].")
                continue
        type_name = str(annotation).replace("typing.", "") if not isinstance(annotation, type) else annotation.__name__
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        rows.append((key, type_name, default, field.description or ""))
    return rows


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE with a dotted key, e.g. --set cpt.optimizer.lr=1e-4")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {'.'.join(parts[: depth + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _describe(err: ValidationError, root: type[BaseModel]) -> str:
    lines = []
    for item in err.errors():
        loc = [str(part) for part in item["loc"]]
        key = ".".join(loc)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            known = _known_keys(root, loc[:-1])
            close = difflib.get_close_matches(loc[-1], known, n=1)
            hint = f"did you mean '{'.'.join([*loc[:-1], close[0]])}'? " if close else ""
            lines.append(f"  {key}: unknown key; {hint}known keys here: {', '.join(known)}")
        elif item["type"] == "missing":
            lines.append(f"  {key}: required; set it in the file or with --set {key}=...")
        elif key:
            lines.append(f"  {key}: {message} (got {item['input']!r})")
        else:
            lines.append(f"  {message}")
    return "\n".join(lines)


def _known_keys(root: type[BaseModel], loc: list[str]) -> list[str]:
    model: Any = root
    for part in loc:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = field.annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []
