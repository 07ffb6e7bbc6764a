"""Supervised fine-tuning on conversations with TRL's SFTTrainer (one of the two modules that import
trl). The loss is on the assistant's replies and their end-of-turn tokens only (the chat
template's `{% generation %}` markers, checked by `chat_model.check_loss_mask` before this runs).

`train_sft` reads top to bottom: fit the conversations to the sequence length, build (trainer
arguments from the sft section and the device, the model, LoRA, the trainer), resume, train,
export. What almr adds to TRL lives here, small:

- `fit_to_length`: a conversation longer than `sft.batch.seq_len` is cut after its last
  assistant turn that fits (whole turns only, so every trained reply keeps its end-of-turn
  token; counted as truncated); one whose first reply does not fit is dropped (counted). TRL's
  own truncation, which can cut a reply in half, then never fires.
- `packing_mode`: packing with TRL's best-fit-decreasing strategy, padding-free (no
  attention between packed conversations: transformers builds a block-diagonal mask from the
  position ids), for attention implementations known to honour that; plain padding otherwise,
  with the reason logged.
- `AlmrSFTTrainer`: the optimizer (almr.train.optimizer: AdamW, matrices decay) and the LR
  schedule (almr.train.schedule, the one CPT uses) created by overriding `create_optimizer` and
  `create_scheduler` (passing `optimizers=` is refused under FSDP), and a count of real and
  padded tokens per step.
- `SftMetrics`: metrics.jsonl in the CPT trainer's event style (start/resume, train, checkpoint,
  end) and the progress bar; config.yaml in the run folder and in every checkpoint.
- resume: the newest complete checkpoint under run_dir/checkpoints, refused when a key that
  decides the trajectory (model., sft. but run folder, saving and logging) or the data changed;
  HF Trainer restores model, optimizer, schedule and RNG states and skips the batches already
  trained, so no example is repeated or skipped.

Processes: under `accelerate launch` or `torchrun` the same code runs in each process;
TrainingArguments reads the environment (rank, world size, the accelerate FSDP config) and the
gradient accumulation is global_batch_size / (micro_batch_size × processes).
"""

import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from datasets import Dataset
from rich.progress import Progress
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import SFTConfig, SFTTrainer

from almr.data.chat import fingerprint
from almr.errors import AlmrError, ConfigError, DataError
from almr.processes import is_main_process
from almr.train.chat_model import (
    device_settings,
    end_of_turn_token,
    load_chat_model,
    quiet_libraries,
    save_chat_model,
    write_chat_files,
)
from almr.train.config import ModelConfig, SftConfig
from almr.train.metrics import MetricsLog, training_bar, truncate_after
from almr.train.optimizer import build_optimizer
from almr.train.resume import config_differences, refuse_differences, write_run_config
from almr.train.schedule import lr_factor

# Attention implementations that keep packed conversations apart when TRL's padding-free
# collator hands them over as one row with restarting position ids (varlen kernels, or the
# block-diagonal mask transformers derives from the position ids).
PACKING_ATTENTION = ("flash_attention_2", "flash_attention_3", "sdpa", "eager", "flex_attention")
# A resume must continue the same trajectory: these keys decide it, except those that only
# change where the run is written, how often it is saved or logged, or where it runs.
RESUME_MUST_MATCH = ("model.", "sft.")
RESUME_MAY_CHANGE = (
    "sft.run_dir", "sft.save_every_steps", "sft.keep_last", "sft.log_every_steps", "sft.device",
    "sft.gradient_checkpointing",
)  # fmt: skip
CHECKPOINT_PREFIX = "checkpoint-"


@dataclass
class FittedData:
    """The conversations that fit `seq_len`, and what fitting them did."""

    examples: list[dict[str, Any]]
    lengths: list[int]  # tokens of each kept conversation
    truncated: int  # cut after their last assistant turn that fits
    dropped: int  # not even their first reply fits


@dataclass
class SftResult:
    run_dir: Path
    steps: int
    hf_dir: Path | None
    examples: int  # conversations trained on
    truncated: int
    dropped: int
    tokens: int  # real (non-padding) tokens trained in this call
    padding_waste: float  # padded positions / all positions of the batches run in this call
    packing: bool  # packing used (it may have been asked for and refused: see notes)
    pack_fill: float | None  # packed tokens / (packed rows × seq_len), when packing
    tokens_per_s: float | None
    final_loss: float | None
    losses: list[float] = field(default_factory=list)  # the train events' losses of this call
    notes: list[str] = field(default_factory=list)  # what was asked for and done otherwise, and why


def train_sft(
    model_config: ModelConfig,
    cfg: SftConfig,
    examples: Sequence[Mapping[str, Any]],
    *,
    model: Any = None,
    tokenizer: Any = None,
    resume: bool = False,
    record: Mapping[str, Any] | None = None,
    progress: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
    new_token_ids: Sequence[int] = (),
) -> SftResult:
    """Fine-tune the model at `model_config` (or `model`/`tokenizer` already loaded) on
    `examples` ({"messages": [...]} each) as `cfg` says; write run_dir/{config.yaml,
    metrics.jsonl, checkpoints/, hf/}. `record` is the resolved config stored and checked on
    resume (default: the model and sft sections). `new_token_ids`: chat tokens whose embedding
    rows were just initialized (LoRA trains those rows too)."""
    record = dict(record or {"model": model_config.model_dump(mode="json"), "sft": cfg.model_dump(mode="json")})
    run_dir = Path(cfg.run_dir)
    # ---------------------------------------------------------------- data and run folder
    if model is None or tokenizer is None:
        model, tokenizer = load_chat_model(model_config)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and cfg.batch.seq_len > positions:
        raise ConfigError(
            f"sft.batch.seq_len={cfg.batch.seq_len} is longer than the model's max_position_embeddings={positions}; "
            f"set seq_len to at most {positions}"
        )
    if not examples:
        raise DataError("no conversations to train on: sft.datasets gave none")
    fitted = fit_to_length(tokenizer, examples, cfg.batch.seq_len)
    if not fitted.examples:
        raise DataError(
            f"none of the {len(examples)} conversations fits sft.batch.seq_len={cfg.batch.seq_len} tokens up to its "
            "first assistant reply; raise seq_len or shorten the data"
        )
    data_print = _data_fingerprint(fitted.examples)
    checkpoints = run_dir / "checkpoints"
    resume_from = resume_checkpoint(checkpoints, record, data_print, resume, run_dir)
    # ---------------------------------------------------------------- build
    packing, packing_note = packing_mode(model, cfg.packing)
    args = sft_arguments(model_config, cfg, packing=packing)
    peft_config, lora_note = _lora_config(cfg, model, new_token_ids) if cfg.finetuning == "lora" else (None, None)
    counter = _TokenCounter()
    metrics = SftMetrics(cfg, record, data_print, counter, progress=progress)
    dataset = Dataset.from_list([{"messages": e["messages"]} for e in fitted.examples])
    with quiet_libraries(tqdm_bars=True):
        trainer = AlmrSFTTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
            callbacks=[metrics, *callbacks], almr_cfg=cfg, counter=counter,
        )  # fmt: skip
        for noisy in (PrinterCallback, ProgressCallback):  # metrics.jsonl and our bar say it
            trainer.remove_callback(noisy)
        if peft_config is not None and trainer.is_fsdp_enabled:
            raise ConfigError(
                "sft.finetuning=lora is not supported under FSDP here (the merged export needs whole weights); LoRA "
                "keeps the base frozen, so launch without an FSDP config (plain data parallel), or use finetuning: full"
            )
        _check_prepared(trainer.train_dataset, fitted, cfg, packing)
        pack_fill = _pack_fill(trainer.train_dataset, cfg.batch.seq_len) if packing else None
        metrics.describe(
            examples=len(fitted.examples), truncated=fitted.truncated, dropped=fitted.dropped, packing=packing,
            packing_note=packing_note, lora_note=lora_note, pack_fill=pack_fill, resume_from=resume_from,
        )  # fmt: skip
        # ------------------------------------------------------------ train
        try:
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        finally:
            metrics.stop_bar()
        # ------------------------------------------------------------ export
        hf_dir = export_chat_model(trainer, tokenizer, run_dir / "hf", [end_of_turn_token(tokenizer)])
    metrics.finish(trainer.state.global_step, hf_dir)
    return SftResult(
        run_dir=run_dir, steps=trainer.state.global_step, hf_dir=hf_dir, examples=len(fitted.examples),
        truncated=fitted.truncated, dropped=fitted.dropped, tokens=counter.total_real,
        padding_waste=counter.waste(), packing=packing, pack_fill=pack_fill,
        notes=[note for note in (packing_note, lora_note) if note],
        tokens_per_s=metrics.tokens_per_s(), final_loss=metrics.losses[-1] if metrics.losses else None,
        losses=list(metrics.losses),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------- data


def fit_to_length(tokenizer: Any, examples: Sequence[Mapping[str, Any]], seq_len: int) -> FittedData:
    """Keep conversations of at most `seq_len` tokens as they are; cut a longer one after its
    last assistant turn that fits (whole turns, so each kept reply ends with its end-of-turn
    token); drop one whose first assistant turn does not fit. Counted, never silent."""
    rendered = tokenizer.apply_chat_template([list(e["messages"]) for e in examples], tokenize=False)
    lengths = [len(ids) for ids in tokenizer(rendered, add_special_tokens=False)["input_ids"]]
    kept, kept_lengths, truncated, dropped = [], [], 0, 0
    for example, length in zip(examples, lengths, strict=True):
        messages = list(example["messages"])
        if length <= seq_len:
            kept.append(dict(example))
            kept_lengths.append(length)
            continue
        cut = _longest_fitting_prefix(tokenizer, messages, seq_len)
        if cut is None:
            dropped += 1
            continue
        prefix, prefix_length = cut
        kept.append({**example, "messages": prefix})
        kept_lengths.append(prefix_length)
        truncated += 1
    return FittedData(kept, kept_lengths, truncated, dropped)


def _longest_fitting_prefix(tokenizer: Any, messages: list[dict[str, Any]], seq_len: int) -> tuple[list, int] | None:
    ends = [i + 1 for i, m in enumerate(messages) if m.get("role") == "assistant"]
    for end in reversed(ends[:-1] if ends and ends[-1] == len(messages) else ends):
        prefix = messages[:end]
        length = len(tokenizer.apply_chat_template(prefix, tokenize=True, return_dict=True)["input_ids"])
        if length <= seq_len:
            return prefix, length
    return None


def _data_fingerprint(examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a resume checks the data against: the trained conversations, in order."""
    return {"examples": len(examples), "sha256": fingerprint([{"messages": e["messages"]} for e in examples])}


def _check_prepared(dataset: Any, fitted: FittedData, cfg: SftConfig, packing: bool) -> None:
    """TRL's preparation must keep every fitted conversation whole (it truncates and drops
    fully masked examples on its own; neither may happen after fit_to_length)."""
    if packing:
        tokens = sum(len(ids) for ids in dataset["input_ids"])
        if tokens != sum(fitted.lengths):
            raise AlmrError(f"packing kept {tokens} of {sum(fitted.lengths)} tokens; report this as a bug")
        return
    if len(dataset) != len(fitted.examples):
        raise AlmrError(
            f"the trainer kept {len(dataset)} of {len(fitted.examples)} conversations (it drops those without a "
            "trained token); check the data's assistant turns"
        )
    longest = max((len(ids) for ids in dataset["input_ids"]), default=0)
    if longest > cfg.batch.seq_len:
        raise AlmrError(f"a prepared conversation has {longest} > seq_len tokens; report this as a bug")


def _pack_fill(dataset: Any, seq_len: int) -> float:
    rows = len(dataset)
    return sum(len(ids) for ids in dataset["input_ids"]) / (rows * seq_len) if rows else 0.0


# ---------------------------------------------------------------------------------------- build


def packing_mode(model: Any, requested: bool) -> tuple[bool, str | None]:
    """(pack?, why not) for `sft.packing`: TRL's bfd packing is padding-free, which keeps the
    packed conversations apart only with attention implementations that read sequence
    boundaries from the position ids; with any other, fall back to padding and say why."""
    if not requested:
        return False, None
    implementation = str(getattr(model.config, "_attn_implementation", None) or "eager")
    if implementation in PACKING_ATTENTION or implementation.endswith("flash-attn2") or "flash" in implementation:
        return True, None
    return False, (
        f"sft.packing: the attention implementation {implementation!r} is not known to keep packed conversations "
        f"apart (known: {', '.join(PACKING_ATTENTION)}); training with padding instead"
    )


def sft_arguments(model_config: ModelConfig, cfg: SftConfig, *, packing: bool) -> SFTConfig:
    """TRL's SFTConfig from the sft section, the device and the process count (WORLD_SIZE, set by
    torchrun and accelerate launch)."""
    batch = cfg.batch
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    per_pass = batch.micro_batch_size * processes
    if batch.global_batch_size % per_pass:
        raise ConfigError(
            f"sft.batch.global_batch_size={batch.global_batch_size} is not divisible by micro_batch_size × processes "
            f"= {batch.micro_batch_size} × {processes}; set it to a multiple of {per_pass} or change the process count"
        )
    device = device_settings(cfg.device, cfg.gradient_checkpointing, model_config.dtype)
    save = {"save_strategy": "steps", "save_steps": cfg.save_every_steps} if cfg.save_every_steps else {
        "save_strategy": "no"}  # fmt: skip
    length = {"max_steps": cfg.steps} if cfg.steps else {"num_train_epochs": cfg.epochs}
    return SFTConfig(
        output_dir=str(Path(cfg.run_dir) / "checkpoints"),
        # what is trained, and how the data becomes batches
        assistant_only_loss=True, max_length=batch.seq_len, packing=packing, packing_strategy="bfd",
        padding_free=packing, per_device_train_batch_size=batch.micro_batch_size,
        gradient_accumulation_steps=batch.global_batch_size // per_pass,
        # the optimizer and schedule are almr's (AlmrSFTTrainer); these mirror them for the records
        learning_rate=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay, adam_beta1=cfg.optimizer.betas[0],
        adam_beta2=cfg.optimizer.betas[1], adam_epsilon=cfg.optimizer.eps, max_grad_norm=cfg.optimizer.grad_clip,
        warmup_steps=cfg.schedule.warmup_steps,
        # run length, saving, logging
        **length, **save, save_total_limit=cfg.keep_last, logging_steps=cfg.log_every_steps, report_to=[],
        disable_tqdm=True, save_only_model=False,
        # determinism
        seed=cfg.seed, data_seed=cfg.seed, dataloader_num_workers=0, dataloader_drop_last=False,
        # the device: bf16 / fp32, gradient checkpointing, use_cpu
        **device,
    )  # fmt: skip


def _lora_config(cfg: SftConfig, model: Any, new_token_ids: Sequence[int]) -> tuple[Any, str | None]:
    """peft's LoraConfig from sft.lora, and a note when something asked for cannot be done. The
    rows of chat tokens just initialized are trained too (peft's trainable tokens) when the
    embeddings are untied (Llama-3 8B/70B); with tied ones peft wraps the LM head, which TRL's
    fused LM head cannot read, so those rows stay at the mean embedding."""
    from peft import LoraConfig  # heavy: only for finetuning: lora

    output = model.get_output_embeddings()
    tied = output is None or output.weight is model.get_input_embeddings().weight
    trainable = list(new_token_ids) if new_token_ids and not tied else None
    note = None
    if new_token_ids and tied:
        note = (
            "sft.finetuning=lora: the chat tokens just initialized keep the mean embedding (the embeddings are "
            "tied, and a trainable LM head does not combine with TRL's fused LM head); fine-tune fully to train them"
        )
    config = LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM", trainable_token_indices=trainable,
    )  # fmt: skip
    return config, note


class _TokenCounter:
    """Real and padded positions of the micro-batches, kept on the device between log events
    (no host sync per step), with a checksum of the token ids trained (equal in two runs that
    trained the same examples in the same order: what a resume test compares)."""

    def __init__(self) -> None:
        self.window: list[torch.Tensor] = []
        self.total_real = 0
        self.total_slots = 0
        self.last: tuple[int, int, int] = (0, 0, 0)

    def add(self, inputs: Mapping[str, Any]) -> None:
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        real = mask.sum() if mask is not None else torch.tensor(ids.numel(), device=ids.device)
        weights = torch.arange(1, ids.shape[-1] + 1, device=ids.device, dtype=torch.int64)
        checksum = (ids.to(torch.int64) * weights).sum() % 1_000_000_007
        self.window.append(torch.stack([real.to(torch.int64), torch.tensor(ids.numel(), device=ids.device), checksum]))

    def drain(self) -> tuple[int, int, int]:
        """(real tokens, positions, checksum) since the last drain, summed over the processes
        (every process logs at the same steps, so each reaches this all-reduce)."""
        if not self.window:
            return 0, 0, 0
        sums = torch.stack(self.window).sum(dim=0)
        self.window.clear()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        real, slots, checksum = (int(v) for v in sums.tolist())
        self.total_real += real
        self.total_slots += slots
        return real, slots, checksum % 1_000_000_007

    def waste(self) -> float:
        """Padded positions / all positions over everything drained so far."""
        return 1.0 - self.total_real / self.total_slots if self.total_slots else 0.0


class AlmrSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer with almr's optimizer and LR schedule, and a count of the tokens."""

    def __init__(self, *args: Any, almr_cfg: SftConfig, counter: _TokenCounter, **kwargs: Any) -> None:
        self.almr_cfg = almr_cfg
        self.token_counter = counter
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            target = self.model if model is None else model
            self.optimizer = build_optimizer(target, self.almr_cfg.optimizer, self.args.device)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        if self.lr_scheduler is None:
            schedule = self.almr_cfg.schedule
            if schedule.warmup_steps >= num_training_steps:
                raise ConfigError(
                    f"sft.schedule.warmup_steps={schedule.warmup_steps} leaves no step after warmup in a run of "
                    f"{num_training_steps} steps; set warmup_steps below {num_training_steps}"
                )
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, lambda step: lr_factor(step, num_training_steps, schedule)
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        self.token_counter.add(inputs)
        return super().training_step(model, inputs, num_items_in_batch)


# ---------------------------------------------------------------------------------------- resume


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """The checkpoint folders whose trainer state was written (the last file HF Trainer writes),
    oldest first."""
    found = []
    for folder in checkpoints.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = folder.name[len(CHECKPOINT_PREFIX) :]
        if not suffix.isdigit():
            continue
        try:
            json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        found.append((int(suffix), folder))
    return [folder for _, folder in sorted(found)]


def resume_checkpoint(checkpoints: Path, record: Mapping[str, Any], data: Mapping[str, Any], resume: bool,
                      run_dir: Path) -> Path | None:  # fmt: skip
    """The checkpoint to continue from, or None for a fresh start. A fresh start refuses a run
    folder that holds checkpoints or a finished model; a resume refuses a checkpoint written by a
    config that differs on a trajectory key, or for other data, naming each difference."""
    complete = complete_checkpoints(checkpoints)
    if not resume:
        if complete or (run_dir / "hf").exists():
            what = f"checkpoints (newest {complete[-1].name})" if complete else "a finished model (hf/)"
            raise ConfigError(f"{run_dir} already holds {what}; continue it with --resume, or choose a new sft.run_dir")
        if checkpoints.is_dir() and is_main_process():
            shutil.rmtree(checkpoints)  # only unfinished checkpoints of an earlier attempt
        return None
    if not complete:
        raise ConfigError(f"--resume: no complete checkpoint under {checkpoints}; start the run without --resume")
    latest = complete[-1]
    saved_path = latest / "config.yaml" if (latest / "config.yaml").is_file() else run_dir / "config.yaml"
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) if saved_path.is_file() else {}
    differences = sft_config_differences(saved or {}, dict(record))
    saved_data = _read_json(latest / "data.json") or _read_json(run_dir / "data.json")
    if saved_data is not None and saved_data.get("sha256") != data.get("sha256"):
        differences.append(("the training conversations (sha256)", saved_data.get("sha256"), data.get("sha256")))
    refuse_differences(latest, differences, "sft.run_dir")
    if is_main_process():  # later, unfinished checkpoint folders of the killed run
        for folder in checkpoints.glob(f"{CHECKPOINT_PREFIX}*"):
            if folder not in complete:
                shutil.rmtree(folder, ignore_errors=True)
    return latest


def sft_config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) of every key deciding an SFT trajectory whose value differs."""
    return config_differences(old, new, RESUME_MUST_MATCH, RESUME_MAY_CHANGE)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------------------------------- export


def export_chat_model(trainer: SFTTrainer, tokenizer: Any, hf_dir: Path, eos_tokens: Sequence[str]) -> Path:
    """The trained model as a Hugging Face chat directory at `hf_dir`, written beside it and
    renamed into place: in one process (or data parallel) from the model in memory, LoRA merged;
    under FSDP through the trainer, which gathers the shards."""
    tmp = hf_dir.with_name(hf_dir.name + ".tmp")
    if trainer.is_fsdp_enabled:
        trainer.save_model(str(tmp))
        if trainer.args.should_save:
            write_chat_files(tmp, tokenizer, eos_tokens, trainer.model.generation_config)
    elif trainer.args.should_save:
        save_chat_model(trainer.model, tokenizer, tmp, eos_tokens)
    if trainer.args.should_save:
        if hf_dir.exists():
            shutil.rmtree(hf_dir)
        os.replace(tmp, hf_dir)
    trainer.accelerator.wait_for_everyone()
    return hf_dir


# ---------------------------------------------------------------------------------------- metrics


class SftMetrics(TrainerCallback):
    """metrics.jsonl events in the CPT trainer's style, config.yaml and data.json in the run folder
    and each checkpoint, and the progress bar. Only the main process writes."""

    def __init__(self, cfg: SftConfig, record: Mapping[str, Any], data: Mapping[str, Any], counter: _TokenCounter,
                 progress: bool) -> None:  # fmt: skip
        self.cfg, self.record, self.data, self.counter, self.progress = cfg, dict(record), dict(data), counter, progress
        self.run_dir = Path(cfg.run_dir)
        self.log: MetricsLog | None = None
        self.bar: Progress | None = None
        self.described: dict[str, Any] = {}
        self.losses: list[float] = []
        self.window_started = 0.0
        self.train_seconds = 0.0
        self.tokens = 0  # real tokens trained by all processes, counting those before a resume
        self.step_seconds_tokens: list[tuple[float, int]] = []

    def describe(self, **fields: Any) -> None:
        self.described = fields

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        resume_from = self.described.pop("resume_from", None)
        if state.is_world_process_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_run_config(self.run_dir / "config.yaml", self.record)
            (self.run_dir / "data.json").write_text(json.dumps(self.data) + "\n", encoding="utf-8")
            metrics_path = self.run_dir / "metrics.jsonl"
            if resume_from is None:
                metrics_path.unlink(missing_ok=True)
            else:
                truncate_after(metrics_path, state.global_step)
                self.tokens = _last_tokens(metrics_path)
            self.log = MetricsLog(metrics_path)
            model = kwargs.get("model")
            batch = self.cfg.batch
            self.log.write(
                "resume" if resume_from else "start", step=state.global_step, tokens=self.tokens,
                checkpoint=str(resume_from) if resume_from else None, steps=state.max_steps,
                world_size=args.world_size, device=str(args.device), bf16=bool(args.bf16),
                gradient_checkpointing=bool(args.gradient_checkpointing),
                parameters=sum(p.numel() for p in model.parameters()) if model is not None else None,
                trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad)
                if model is not None else None,
                micro_batch_size=batch.micro_batch_size, global_batch_size=batch.global_batch_size,
                grad_accumulation=args.gradient_accumulation_steps, seq_len=batch.seq_len, **self.described,
            )  # fmt: skip
            if self.progress:
                self.bar = training_bar("SFT", state.max_steps, state.global_step)
        self.window_started = time.perf_counter()

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" not in logs:
            return  # the trainer's closing summary (train_runtime, ...): the end event says it
        real, slots, checksum = self.counter.drain()
        elapsed = time.perf_counter() - self.window_started
        self.window_started = time.perf_counter()
        self.train_seconds += elapsed
        self.tokens += real
        self.step_seconds_tokens.append((elapsed, real))
        loss = float(logs["loss"])
        self.losses.append(loss)
        if not math.isfinite(loss):
            raise AlmrError(
                f"the training loss became {loss} at step {state.global_step}; lower sft.optimizer.lr or add warmup "
                "(sft.schedule.warmup_steps), then resume from the last checkpoint"
            )
        if self.log is None:
            return
        tokens_per_s = real / elapsed if elapsed > 0 else None
        self.log.write(
            "train", step=state.global_step, tokens=self.tokens, loss=loss, lr=logs.get("learning_rate"),
            grad_norm=logs.get("grad_norm"), tokens_per_s=tokens_per_s, step_time=elapsed / max(1, args.logging_steps),
            padding_waste=1.0 - real / slots if slots else 0.0, epoch=logs.get("epoch"),
            token_accuracy=logs.get("mean_token_accuracy"), batch_checksum=checksum,
        )  # fmt: skip
        if self.bar is not None:
            self.bar.update(self.bar.task_ids[0], completed=state.global_step, loss=f"{loss:.4f}",
                            tps=f"{tokens_per_s:,.0f}" if tokens_per_s else "-")  # fmt: skip

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(self.bar.task_ids[0], completed=state.global_step)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            write_run_config(folder / "config.yaml", self.record)
            (folder / "data.json").write_text(json.dumps(self.data) + "\n", encoding="utf-8")
            if self.log is not None:
                self.log.write("checkpoint", step=state.global_step, tokens=self.tokens, path=str(folder))

    def stop_bar(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def finish(self, step: int, hf_dir: Path) -> None:
        self.stop_bar()
        if self.log is not None:
            self.log.write(
                "end", step=step, tokens=self.tokens, loss=self.losses[-1] if self.losses else None,
                hf=str(hf_dir), padding_waste=self.counter.waste(), tokens_per_s=self.tokens_per_s(),
            )  # fmt: skip
            self.log.close()
            self.log = None

    def tokens_per_s(self) -> float | None:
        """Real tokens per second, all processes, over this call's train events but the first
        (which also holds the start-up: the first batches, allocations, warm caches)."""
        windows = self.step_seconds_tokens[1:] or self.step_seconds_tokens
        seconds = sum(s for s, _ in windows)
        return sum(t for _, t in windows) / seconds if seconds > 0 else None


def _last_tokens(path: Path) -> int:
    tokens = 0
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                tokens = int(json.loads(line).get("tokens") or tokens)
            except (json.JSONDecodeError, TypeError, ValueError):
                continue
    return tokens
