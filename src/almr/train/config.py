"""Config sections of training: the model a stage starts from, the processes it runs on, and
each training stage's optimizer and schedule; the CPT trainer's own section (`cpt`)."""

from typing import Literal

from pydantic import Field, model_validator

from almr.data.config import BatchConfig, ChatDatasetConfig
from almr.section import Section


class ModelConfig(Section):
    """The model a stage starts from."""

    name_or_path: str | None = Field(
        None, description="A local Hugging Face model directory, or a hub id where the machine is online."
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="Training precision: bfloat16 compute over fp32 master weights on GPUs (FSDP2's mixed-precision "
        "policy under torchrun, autocast in one process); a CPU always trains in float32 (bfloat16 there is slower "
        "and is not applied: a warning says so).",
    )
    revision: str | None = Field(None, description="The hub revision (branch, tag or commit) of a hub id.")
    trust_remote_code: bool = Field(
        False, description="Run the model's own Python code from its directory or the hub (custom architectures)."
    )
    attn_implementation: str | None = Field(
        None, description="transformers' attention kernel: sdpa, eager, flash_attention_2, ...; default: its choice."
    )


def local_model(model: ModelConfig, path: str) -> ModelConfig:
    """`model`'s settings (dtype, attention kernel, remote code) for the model directory `path` a
    stage made from it: a local directory, so no hub revision."""
    return model.model_copy(update={"name_or_path": path, "revision": None})


class ParallelConfig(Section):
    """How many processes a stage runs on and how the model is split across them: FSDP2 over
    nodes × gpus_per_node / tensor_parallel data-parallel replicas, each a model split
    tensor_parallel ways (torchtitan's 2-D layout; almr.train.parallel). The CPT trainer takes its
    process count from torchrun and checks it against this section before any model is read."""

    nodes: int = Field(
        1, ge=1,
        description="Machines. With gpus_per_node it declares the process count: when nodes × gpus_per_node > 1 "
        "the CPT trainer refuses a torchrun world size other than that; the batch sizes are checked against it.",
    )  # fmt: skip
    gpus_per_node: int = Field(1, ge=1, description="Processes per machine, one per GPU (declared, as nodes).")
    tensor_parallel: int = Field(
        1, ge=1,
        description="Tensor-parallel degree (Megatron column/row splits with sequence-parallel norms; Llama, Mistral "
        "and Qwen2): each model copy spans this many GPUs, normally within one node; the paper used 2 for 8B, 8 for "
        "70B. It must divide the process count and the model's attention heads, key/value heads and MLP width.",
    )  # fmt: skip
    pipeline_parallel: int = Field(
        1, ge=1,
        description="Only 1: pipeline parallelism is not implemented; the paper's 70B pipeline stages become more "
        "FSDP data parallelism (FSDP × tensor parallelism fits 70B on 80 GB GPUs, as torchtitan trains Llama-3 70B).",
    )  # fmt: skip
    timeout_minutes: float = Field(
        30.0, gt=0, allow_inf_nan=False,
        description="How long a collective (NCCL or gloo) waits for the other processes before the run fails, e.g. "
        "while rank 0 writes a checkpoint export; torch's default is 10 minutes.",
    )  # fmt: skip
    gpu_memory_gib: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="Memory of one GPU (GiB). When set, CPT refuses a model whose weights, gradients and AdamW "
        "states (16 bytes a parameter, sharded over every process) alone exceed it, before any weights are read.",
    )  # fmt: skip

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def data_parallel(self) -> int:
        return self.world_size // self.tensor_parallel

    @model_validator(mode="after")
    def _splits_evenly(self) -> "ParallelConfig":
        if self.pipeline_parallel > 1:
            raise ValueError(
                f"pipeline_parallel={self.pipeline_parallel}: pipeline parallelism is not implemented (its schedules "
                "add bubbles and a second sharding axis that FSDP × tensor parallelism does not need on 80 GB GPUs); "
                "set pipeline_parallel: 1 and let FSDP take its factor: the same GPUs then hold more data-parallel "
                "replicas (the 70B preset: tensor_parallel 8 × 16 FSDP replicas on 16 nodes × 8 GPUs)"
            )
        if self.world_size % self.tensor_parallel:
            raise ValueError(
                f"nodes × gpus_per_node = {self.world_size} is not divisible by tensor_parallel = "
                f"{self.tensor_parallel}; change the GPU count or the parallel degrees"
            )
        return self


class OptimizerConfig(Section):
    name: Literal["adamw"] = Field("adamw", description="The optimizer (the paper: AdamW).")
    lr: float = Field(3e-5, gt=0, allow_inf_nan=False, description="Peak learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0, allow_inf_nan=False, description="AdamW epsilon.")
    weight_decay: float = Field(0.01, ge=0, allow_inf_nan=False, description="Decoupled weight decay.")
    grad_clip: float = Field(1.0, ge=0, allow_inf_nan=False, description="Global gradient-norm clip; 0 disables it.")

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


class ExportConfig(Section):
    """The Hugging Face directory (`hf/`) inside every CPT checkpoint: what serving engines load."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Weight dtype of the export; auto: bfloat16 when the run trained in bfloat16, else "
        "the dtype the model's own config.json names (a bf16 checkpoint comes back bf16), else float32.",
    )
    max_shard_size: str = Field(
        "5GB",
        pattern=r"^\s*\d+(\.\d+)?\s*([KMGT]i?B)\s*$",
        description="Largest safetensors file; bigger models are split into shards with model.safetensors.index.json.",
    )


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
    max_sequences: int | None = Field(
        512,
        ge=1,
        description="Held-out sequences scored per source, spread evenly over its held-out set (the same ones on "
        "every process and after every resume; read from the shard one micro-batch at a time), so a validation "
        "costs the same however large the set (512: the mean's standard error is 1/√512 ≈ 4% of the spread of "
        "per-sequence losses; 2M tokens at seq_len 4096). null: every sequence.",
    )


class ProbeConfig(Section):
    """A benchmark probe suite run during CPT, for metric trajectories (the paper's Fig. 2)."""

    every_tokens: int = Field(0, ge=0, description="Run the probe each time this many more tokens are trained; 0: off.")


class CptConfig(StageConfig):
    """Continual pre-training: the StageConfig batch/optimizer/schedule plus run length, run folder,
    checkpoints, validation, probes and how the model is wrapped."""

    run_dir: str = Field("runs/cpt", description="Run folder: config.yaml, metrics.jsonl, checkpoints/.")
    steps: int | None = Field(
        None,
        ge=1,
        description="Optimizer steps; default: total_tokens / (global_batch_size × seq_len). Alone it sets the token "
        "budget: steps × global_batch_size × seq_len.",
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
    train_new_rows_from: int | None = Field(
        None,
        ge=1,
        description="Phase one after `almr vocab extend`: train only the embedding and output rows from this token "
        "id on (its first_new_id), the rest frozen and weight decay off; then run full CPT from this run's export.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    compile: bool = Field(False, description="torch.compile each decoder layer (no speed-up on a CPU).")
    loss_chunk_tokens: int = Field(
        1024,
        ge=0,
        description="Compute the output projection and cross-entropy this many tokens at a time, never holding the "
        "whole [tokens, vocab] logits (less memory; faster for large vocabularies); 0: the plain full-logits path. "
        "Models with soft-capped or scaled logits (Gemma2, Cohere, Granite) use the plain path.",
    )
    tensorboard: bool = Field(False, description="Also write TensorBoard event files (needs the tensorboard package).")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)

    @model_validator(mode="after")
    def _one_length(self) -> "CptConfig":
        if self.steps is not None and self.total_tokens is not None:
            raise ValueError("set either steps or total_tokens, not both")
        return self


class LoraConfig(Section):
    """Low-rank adapters (peft) for `finetuning: lora`; merged into the weights of the exported model."""

    r: int = Field(16, ge=1, description="Rank of each adapter.")
    alpha: int = Field(32, ge=1, description="Scaling numerator (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapters' input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules that get adapters: all-linear, or names such as [q_proj, v_proj]."
    )


class FinetuneConfig(StageConfig):
    """What SFT and DPO share: where the run goes, how long it is, what is trained, how it is saved."""

    run_dir: str = Field("runs/sft", description="Run folder: config.yaml, metrics.jsonl, checkpoints/, hf/.")
    datasets: list[ChatDatasetConfig] = Field(default_factory=list, description="The training data sets, mixed.")
    exclude_languages: list[str] = Field(
        default_factory=list, description="Leave out data sets with these language tags (the ablation: [zh])."
    )
    epochs: float = Field(1.0, gt=0.0, description="Passes over the mixed data (when steps is not set).")
    steps: int | None = Field(None, ge=1, description="Optimizer steps; default: from epochs.")
    seed: int = Field(0, description="Seeds the data mix, the shuffle and the initialization of new weights.")
    finetuning: Literal["full", "lora"] = Field("full", description="full: every weight; lora: adapters (peft).")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    gradient_checkpointing: bool | None = Field(
        None, description="Recompute activations in backward; default: on for GPUs, off on CPUs (~10× slower there)."
    )
    save_every_steps: int = Field(0, ge=0, description="Checkpoint every N steps (0: only at the end), for --resume.")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept.")
    log_every_steps: int = Field(1, ge=1, description="Write a train event to metrics.jsonl every N steps.")


class SftConfig(FinetuneConfig):
    """Supervised fine-tuning on conversations (TRL's SFTTrainer): loss on assistant tokens only."""

    packing: bool = Field(
        False,
        description="Pack conversations into full sequences without cross-attention between them (TRL's bfd, "
        "padding-free) where the attention implementation allows it; off: pad each batch.",
    )


class DpoConfig(FinetuneConfig):
    """Direct preference optimization (TRL's DPOTrainer) from an SFT checkpoint."""

    run_dir: str = Field("runs/dpo", description="Run folder: config.yaml, metrics.jsonl, checkpoints/, hf/.")
    beta: float = Field(0.1, gt=0.0, description="Strength of the KL penalty toward the reference model.")
    loss_type: list[str] = Field(
        default_factory=lambda: ["sigmoid"],
        description="TRL's DPO loss type(s): sigmoid (the paper's DPO), ipo, hinge, robust, ... (weighted equally).",
    )
    max_prompt_length: int | None = Field(None, ge=1, description="Truncate prompts to this many tokens.")
    cache_reference: bool = Field(
        True,
        description="Compute the reference model's log-probabilities once, cache them on disk keyed by model and "
        "data, and train with one model in memory; off: keep a live reference model.",
    )
