"""Direct preference optimization (DPO) on TRL's DPOTrainer, from an SFT checkpoint.

`train_dpo` reads as the run goes: build (device, batch shape, run folder and resume point, model,
reference, trainer), train, save (`hf/`), close (`end` event, summary.json). TRL does the loss,
the batching and the checkpoints; almr adds what TRL leaves out or gets wrong on a CPU:

- precision and activation checkpointing from the device (TRL defaults to bf16 and activation
  checkpointing, ~10× slower on a CPU);
- the optimizer and schedule of every almr stage (`build_optimizer`, `lr_factor`), in a small
  DPOTrainer subclass;
- `max_prompt_length` (TRL 1.16 dropped it): prompts are cut to their last N tokens, the end that
  leads into the reply; pairs that are cut or dropped are counted and reported;
- **the reference model's log-probabilities, computed once and cached on disk**
  (`almr.train.ref_cache`): with `cache_reference`, TRL's `precompute_ref_log_probs` computes
  them with the policy itself before its first step (so one model is ever in memory), and the
  subclass keeps them under `ref_cache/<key>/` beside the run; a rerun on the same reference and
  data adds the cached columns to the data set and TRL's reference pass never runs. Without the
  cache, a second copy of the model is the live reference (never `ref_model=None`, which makes
  TRL load from the in-memory model's empty path); with LoRA the reference is the base with the
  adapters disabled (TRL's own), cached as well when asked.

The run folder: `config.yaml`, `metrics.jsonl` (start, reference, train, checkpoint, end; the
train events carry TRL's rewards/accuracies, rewards/margins, rewards/chosen, rewards/rejected),
`checkpoints/checkpoint-N/` (Hugging Face Trainer checkpoints; `config.yaml` inside marks one
complete), `hf/` and `summary.json`. TRL is imported here and in `train/sft.py` only.
"""

import contextlib
import copy
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import yaml
from rich.progress import Progress
from torch.utils.data import DataLoader
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import DPOConfig, DPOTrainer

from almr.errors import AlmrError, ConfigError, DataError
from almr.processes import is_main_process
from almr.train.chat_model import (
    chat_model_path,
    device_settings,
    end_of_turn_token,
    load_chat_model,
    quiet_libraries,
    save_chat_model,
    start_processes,
)  # fmt: skip
from almr.train.config import DpoConfig, ModelConfig
from almr.train.metrics import MetricsLog, training_bar, truncate_after
from almr.train.optimizer import build_optimizer
from almr.train.ref_cache import RefLogpCache, RefLogps, cache_key, data_fingerprint, model_fingerprint
from almr.train.resume import config_differences, refuse_differences, write_run_config
from almr.train.schedule import lr_factor

# A resume continues one trajectory: every model and dpo key must match the checkpoint's config,
# except these, which change where and how the run is stored, observed or placed.
RESUME_MAY_CHANGE = (
    "dpo.run_dir", "dpo.device", "dpo.gradient_checkpointing", "dpo.save_every_steps", "dpo.keep_last",
    "dpo.log_every_steps", "dpo.cache_reference",
)  # fmt: skip
PAIR_KEYS = ("prompt", "chosen", "rejected")
# TRL 1.16's DPO losses (DPOTrainer._compute_loss) that need no setting almr leaves at TRL's default;
# exo_pair needs label smoothing > 0, which almr does not expose.
LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired", "apo_zero",
    "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip


@dataclass
class DpoResult:
    run_dir: Path
    model_dir: Path  # the final Hugging Face directory (run_dir/hf)
    steps: int
    pairs: int  # pairs trained on (after dropping prompts that fill the sequence)
    reference: str  # cached | computed | live model | adapters disabled
    reference_batches: int  # reference forward batches TRL ran before training (0: read from the cache)
    cache_dir: Path | None  # the cache entry used or written
    losses: list[float] = field(default_factory=list)  # training loss of each logged step of this call
    last: dict[str, float] = field(default_factory=dict)  # the last train event's numbers
    summary: str = ""


def train_dpo(
    model_config: ModelConfig,
    cfg: DpoConfig,
    examples: Sequence[Mapping[str, Any]],
    *,
    resume: bool = False,
    record: Mapping[str, Any] | None = None,
    progress: bool = True,
    cache_dir: Path | None = None,
) -> DpoResult:
    """Run (or with `resume`, continue) DPO of `model_config`'s model on preference `examples`
    (TRL's conversational format: `prompt`, `chosen`, `rejected`, each a list of messages).
    `record` is the resolved config the run folder stores and a resume is checked against
    (default: the model and dpo sections); `cache_dir` holds the reference cache (default:
    `ref_cache/` beside the run folder)."""
    record = dict(record or {"model": model_config.model_dump(mode="json"), "dpo": cfg.model_dump(mode="json")})
    # ---------------------------------------------------------------- build
    path = chat_model_path(model_config)
    device = device_settings(cfg.device, cfg.gradient_checkpointing, model_config.dtype)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    is_main = is_main_process()
    accum = _accumulation_steps(cfg, world_size)
    _check_pairs(examples)
    steps = _total_steps(cfg, len(examples), world_size, accum)
    _check_schedule(cfg, steps)
    _check_loss_types(cfg)
    run_dir = Path(cfg.run_dir)
    resume_from = _resume_point(run_dir / "checkpoints", record, resume, is_main)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir(cfg)

    start_processes(cfg.device)  # before loading: FSDP's rank-0-only loading needs the process group
    args = _trl_config(cfg, run_dir, steps, accum, device)
    reference = _Reference(cache_root if cfg.cache_reference else None, path, cfg.max_prompt_length)
    log = _open_log(run_dir, record, resume_from, is_main)
    metrics = _MetricsCallback(log, record, bar=progress and is_main)
    with quiet_libraries(tqdm_bars=progress), contextlib.closing(log), warnings.catch_warnings():
        # TRL 1.16 still asks transformers 5 for the deprecated is_gradient_checkpointing: noise, not news
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        model, tokenizer = load_chat_model(model_config)
        ref_model = None
        if not cfg.cache_reference and cfg.finetuning == "full":
            ref_model, _ = load_chat_model(model_config)  # the live reference: a second copy, never trained
        trainer = _AlmrDpoTrainer(
            model=model, ref_model=ref_model, args=args, train_dataset=_pairs_dataset(examples),
            processing_class=tokenizer, peft_config=_peft_config(cfg), callbacks=[metrics], almr_cfg=cfg,
            reference=reference,
        )  # fmt: skip
        for noisy in (PrinterCallback, ProgressCallback):  # metrics.jsonl and our bar say it
            trainer.remove_callback(noisy)
        _log_start(log, trainer, cfg, model_config, steps, accum, world_size, resume_from, len(examples))

        # ---------------------------------------------------------------- train
        try:
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        finally:
            metrics.stop_bar()

        # ---------------------------------------------------------------- save, close
        hf_dir = run_dir / "hf"
        _save(trainer, tokenizer, hf_dir, is_main)
        first = _step_of(resume_from) if resume_from else 0  # a resumed Trainer's history holds earlier steps too
        history = [entry for entry in trainer.state.log_history if "loss" in entry and entry["step"] > first]
        result = DpoResult(
            run_dir=run_dir, model_dir=hf_dir, steps=trainer.state.global_step, pairs=len(trainer.train_dataset),
            reference=reference.source, reference_batches=trainer.reference_batches, cache_dir=reference.entry,
            losses=[float(entry["loss"]) for entry in history],
            last={key: float(value) for key, value in (history[-1] if history else {}).items()},
        )  # fmt: skip
        result.summary = _summary_line(result, cfg)
        log.write("end", step=result.steps, model=str(hf_dir), summary=result.summary)
    if is_main:
        _write_summary(run_dir / "summary.json", result, trainer)
    return result


def default_cache_dir(cfg: DpoConfig) -> Path:
    """`ref_cache/` beside the run folder, so that sibling runs on the same reference and data
    (another beta, loss type or learning rate) share one entry."""
    return Path(cfg.run_dir).resolve().parent / "ref_cache"


def pair_logps(
    model: torch.nn.Module, tokenizer: Any, examples: Sequence[Mapping[str, Any]], *, batch_size: int = 8,
    max_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The summed log-probability of each pair's chosen and of its rejected response tokens given
    the prompt, tokenized as TRL does (the prompt with the generation prompt; the response is
    what the full conversation adds after the longest common prefix), cut to `max_length`."""
    sequences: list[tuple[list[int], int]] = []  # (ids, where the response starts)
    for example in examples:
        prompt = _template_ids(tokenizer, example["prompt"], generation_prompt=True)
        for side in ("chosen", "rejected"):
            full = _template_ids(tokenizer, list(example["prompt"]) + list(example[side]))
            start = _common_prefix(prompt, full)
            sequences.append((full[:max_length] if max_length else full, start))
    device = next(model.parameters()).device
    scores: list[float] = []
    model.eval()
    with torch.no_grad():
        for first in range(0, len(sequences), batch_size):
            batch = sequences[first : first + batch_size]
            width = max(len(ids) for ids, _ in batch)
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (seq, _) in enumerate(batch):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None].to(device))[..., 0]
            for row, (seq, start) in enumerate(batch):
                scores.append(float(logp[row, max(start, 1) - 1 : len(seq) - 1].sum()))
    values = torch.tensor(scores, dtype=torch.float64).view(-1, 2)
    return values[:, 0], values[:, 1]


# --------------------------------------------------------------------------- the trainer


class _Reference:
    """Where the reference log-probabilities come from, and what happened: set by the trainer
    while it is built (TRL computes them inside its constructor)."""

    def __init__(self, cache_root: Path | None, model_dir: str, max_prompt_length: int | None) -> None:
        self.cache_root, self.model_dir, self.max_prompt_length = cache_root, model_dir, max_prompt_length
        self.source = "live model"
        self.entry: Path | None = None
        self.key: str | None = None
        self.data: dict[str, int] = {}  # pairs in, prompts cut, sequences cut, pairs dropped


class _AlmrDpoTrainer(DPOTrainer):
    """DPOTrainer with almr's optimizer and schedule, max_prompt_length, and the on-disk cache of
    the reference log-probabilities around TRL's own precomputation."""

    def __init__(self, *args: Any, almr_cfg: DpoConfig, reference: _Reference, **kwargs: Any) -> None:
        self.almr_cfg, self.reference = almr_cfg, reference
        self.reference_batches = 0
        if kwargs.get("peft_config") is not None:
            reference.source = "adapters disabled"  # TRL's reference for LoRA, unless the cache serves it
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            self.optimizer = build_optimizer(model if model is not None else self.model, self.almr_cfg.optimizer,
                                             self.args.device)  # fmt: skip
        return self.optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        if self.lr_scheduler is None:
            schedule = self.almr_cfg.schedule
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, lambda step: lr_factor(step, num_training_steps, schedule)
            )
        return self.lr_scheduler

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: DPOConfig, dataset_name: str) -> Any:
        # TRL tokenizes and drops prompts that fill max_length; here prompts are cut to
        # max_prompt_length first (which may save them from being dropped), and both are counted.
        uncapped = copy.copy(args)
        uncapped.max_length = None
        dataset = super()._prepare_dataset(dataset, processing_class, uncapped, dataset_name)
        keep, limit = self.reference.max_prompt_length, args.max_length
        pairs = len(dataset)
        cut_prompts = 0
        if keep is not None:
            cut_prompts = sum(len(ids) > keep for ids in dataset["prompt_ids"])
            dataset = dataset.map(lambda row: {"prompt_ids": row["prompt_ids"][-keep:]}, desc="Cutting prompts")
        cut = dropped = 0
        if limit is not None:
            lengths = zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
            for prompt, chosen, rejected in lengths:
                dropped += len(prompt) >= limit
                cut += len(prompt) < limit < len(prompt) + max(len(chosen), len(rejected))
            dataset = dataset.filter(lambda row: len(row["prompt_ids"]) < limit, desc="Dropping full prompts")
        self.reference.data = {"pairs_in": pairs, "prompts_cut": cut_prompts, "cut": cut, "dropped": dropped}
        if len(dataset) == 0:
            raise DataError(
                f"every one of the {pairs} preference pairs has a prompt of at least dpo.batch.seq_len={limit} "
                "tokens, leaving no response to train on; raise dpo.batch.seq_len or set dpo.max_prompt_length"
            )
        return dataset

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        if self.reference.cache_root is None or name != "train" or self.is_deepspeed_enabled:
            return super()._precompute_ref_logps(dataset, name, batch_size)  # TRL's own, uncached
        if not Path(self.reference.model_dir).is_dir():  # a hub id: no local files to fingerprint
            self.reference.source = "computed (not cached: the model is not a local directory)"
            return self._with_ref_logps(dataset, self._compute_ref_logps(dataset, batch_size))
        precision = "bf16" if self.args.bf16 else "fp16" if self.args.fp16 else "fp32"
        rows = zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
        data_fp = data_fingerprint(rows, max_length=self.args.max_length, truncation=self.args.truncation_mode,
                                   precision=precision)  # fmt: skip
        model_fp = model_fingerprint(self.reference.model_dir)
        cache = RefLogpCache(self.reference.cache_root, cache_key(model_fp, data_fp))
        self.reference.key, self.reference.entry = cache.key, cache.path
        cached = cache.load(len(dataset))
        if cached is not None:
            self.reference.source = "cached"
            return self._with_ref_logps(dataset, cached)
        logps = self._compute_ref_logps(dataset, batch_size)
        self.reference.source = "computed"
        if self.accelerator.is_main_process:
            cache.save(logps, {"reference": str(Path(self.reference.model_dir).resolve()), "model_fingerprint":
                               model_fp, "data_fingerprint": data_fp, "precision": precision})  # fmt: skip
        return self._with_ref_logps(dataset, logps)

    def _compute_ref_logps(self, dataset: Any, batch_size: int) -> RefLogps:
        """TRL's reference pass (its collator and `compute_ref_log_probs`, the policy itself as the
        reference unless a reference copy is held), every process a share of the batches, gathered
        in data-set order. TRL's own `_precompute_ref_logps` keeps the result in a `datasets` cache
        file whose name, for an in-memory data set, differs between processes: under torchrun
        the other ranks cannot read it."""
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False,
                            num_workers=self.args.dataloader_num_workers)  # fmt: skip
        model = self.ref_model or self.model
        chosen, rejected = [], []
        for batch in self.accelerator.prepare(loader):
            logps = self.compute_ref_log_probs(model, batch)
            batch_chosen, batch_rejected = self.accelerator.gather_for_metrics(logps)
            chosen.append(batch_chosen.float().cpu())
            rejected.append(batch_rejected.float().cpu())
        return RefLogps(torch.cat(chosen).numpy(), torch.cat(rejected).numpy())

    @staticmethod
    def _with_ref_logps(dataset: Any, logps: RefLogps) -> Any:
        dataset = dataset.add_column("ref_chosen_logps", logps.chosen.tolist())
        return dataset.add_column("ref_rejected_logps", logps.rejected.tolist())

    def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
        self.reference_batches += 1  # one reference forward over a batch: the evidence a rerun reads the cache
        return super().compute_ref_log_probs(model, inputs)


class _MetricsCallback(TrainerCallback):
    """TRL's logs as `train` events of metrics.jsonl (CPT's schema: step, tokens, loss, lr,
    grad_norm, tokens_per_s, plus the DPO rewards), a `checkpoint` event with config.yaml in each
    checkpoint folder, written after the Trainer's own files: its mark of completeness; and the
    progress bar (`bar`). Only the main process writes."""

    def __init__(self, log: MetricsLog, record: dict[str, Any], *, bar: bool) -> None:
        self.log, self.record, self.show_bar = log, record, bar
        self.bar: Progress | None = None
        self._last: tuple[float, float] | None = None  # (time, tokens) at the previous train event

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last = (time.perf_counter(), 0.0)  # TRL counts the tokens of this call from 0
        if self.show_bar and self.bar is None:
            self.bar = training_bar("DPO", state.max_steps, state.global_step, acc="reward acc")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(self.bar.task_ids[0], completed=state.global_step)

    def stop_bar(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        now, tokens = time.perf_counter(), float(logs.get("num_tokens", 0.0))
        then, before = self._last or (now, tokens)
        speed = (tokens - before) / (now - then) if now > then else None
        self._last = (now, tokens)
        reward_keys = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")
        self.log.write(
            "train", step=state.global_step, tokens=int(tokens), loss=logs["loss"], lr=logs.get("learning_rate"),
            grad_norm=logs.get("grad_norm"), **{key: logs[key] for key in reward_keys if key in logs},
            **{key: logs[key] for key in ("logps/chosen", "logps/rejected") if key in logs},
            tokens_per_s=speed, epoch=logs.get("epoch"),
        )  # fmt: skip
        if self.bar is not None:
            accuracy = logs.get("rewards/accuracies", float("nan"))
            self.bar.update(self.bar.task_ids[0], completed=state.global_step, loss=f"{logs['loss']:.4f}",
                            acc=f"{accuracy:.2f}", tps=f"{speed or 0:,.0f}")  # fmt: skip
        if not math.isfinite(logs["loss"]):
            raise AlmrError(
                f"the DPO loss became {logs['loss']} at step {state.global_step}; lower dpo.optimizer.lr or add "
                "warmup (dpo.schedule.warmup_steps), then resume from the last checkpoint"
            )

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if folder.is_dir():
            write_run_config(folder / "config.yaml", self.record)
            self.log.write("checkpoint", step=state.global_step, path=str(folder))


# --------------------------------------------------------------------------- build


def _trl_config(cfg: DpoConfig, run_dir: Path, steps: int, accum: int, device: Mapping[str, Any]) -> DPOConfig:
    optimizer = cfg.optimizer
    save_steps = cfg.save_every_steps or steps  # 0: only at the end
    return DPOConfig(
        output_dir=str(run_dir / "checkpoints"), report_to=[], **device,  # use_cpu, bf16, checkpointing
        per_device_train_batch_size=cfg.batch.micro_batch_size, gradient_accumulation_steps=accum,
        precompute_ref_batch_size=cfg.batch.micro_batch_size, max_steps=cfg.steps or -1,
        num_train_epochs=cfg.epochs, learning_rate=optimizer.lr, weight_decay=optimizer.weight_decay,
        adam_beta1=optimizer.betas[0], adam_beta2=optimizer.betas[1], adam_epsilon=optimizer.eps,
        max_grad_norm=optimizer.grad_clip, seed=cfg.seed, data_seed=cfg.seed, logging_steps=cfg.log_every_steps,
        save_strategy="steps", save_steps=save_steps, save_total_limit=cfg.keep_last, beta=cfg.beta,
        loss_type=list(cfg.loss_type), max_length=cfg.batch.seq_len, precompute_ref_log_probs=cfg.cache_reference,
        disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=True,  # our bar, not tqdm
    )  # fmt: skip


def _accumulation_steps(cfg: DpoConfig, world_size: int) -> int:
    batch = cfg.batch
    per_pass = batch.micro_batch_size * world_size
    if batch.global_batch_size % per_pass:
        raise ConfigError(
            f"dpo.batch.global_batch_size={batch.global_batch_size} is not divisible by micro_batch_size × processes "
            f"= {batch.micro_batch_size} × {world_size} = {per_pass}; set it to a multiple of {per_pass}"
        )
    return batch.global_batch_size // per_pass


def _total_steps(cfg: DpoConfig, pairs: int, world_size: int, accum: int) -> int:
    """Optimizer steps as the Hugging Face Trainer counts them: dpo.steps, or epochs × the
    passes of a data loader that keeps its last, short batch."""
    if cfg.steps is not None:
        return cfg.steps
    batches = math.ceil(pairs / (cfg.batch.micro_batch_size * world_size))
    return math.ceil(cfg.epochs * max(math.ceil(batches / accum), 1))


def _check_schedule(cfg: DpoConfig, steps: int) -> None:
    if cfg.schedule.warmup_steps >= steps:
        raise ConfigError(
            f"dpo.schedule.warmup_steps={cfg.schedule.warmup_steps} leaves no step after warmup in a run of {steps} "
            f"steps; set warmup_steps below {steps} (or train longer: dpo.steps / dpo.epochs)"
        )


def _check_loss_types(cfg: DpoConfig) -> None:
    unknown = [name for name in cfg.loss_type if name not in LOSS_TYPES]
    if unknown or not cfg.loss_type:
        raise ConfigError(
            f"dpo.loss_type={list(cfg.loss_type)}: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}; choose "
            f"one or more of {', '.join(LOSS_TYPES)} (several are summed, as TRL's multi-loss)"
        )


def _check_pairs(examples: Sequence[Mapping[str, Any]]) -> None:
    if not examples:
        raise DataError("no preference pairs to train on: dpo.datasets is empty or every pair was left out")
    for index, example in enumerate(examples):
        missing = [key for key in PAIR_KEYS if not example.get(key)]
        if missing:
            raise DataError(f"preference pair {index} ({_where(example)}) has no {', '.join(missing)}")
        if example["chosen"] == example["rejected"]:
            raise DataError(
                f"preference pair {index} ({_where(example)}): chosen equals rejected, so it prefers nothing; "
                "remove the pair or fix its rejected reply"
            )


def _where(example: Mapping[str, Any]) -> str:
    return str(example.get("dataset") or example.get("source") or "no data set named")


def _pairs_dataset(examples: Sequence[Mapping[str, Any]]) -> datasets.Dataset:
    return datasets.Dataset.from_list([{key: list(example[key]) for key in PAIR_KEYS} for example in examples])


def _peft_config(cfg: DpoConfig) -> Any:
    if cfg.finetuning != "lora":
        return None
    from peft import LoraConfig  # only for LoRA runs

    lora = cfg.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                      task_type="CAUSAL_LM")  # fmt: skip


def _resume_point(root: Path, record: Mapping[str, Any], resume: bool, is_main: bool) -> Path | None:
    """The newest complete checkpoint (its config.yaml written) to continue from, or None. A
    fresh start refuses a folder with complete checkpoints and clears unfinished ones; a resume
    refuses a checkpoint whose config differs on a key that decides the trajectory."""
    complete = sorted((p for p in root.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if (p / "config.yaml").is_file()),
                      key=_step_of)  # fmt: skip
    latest = complete[-1] if complete else None
    if not resume:
        if latest is not None:
            raise ConfigError(
                f"{root.parent} already holds checkpoints (newest {latest.name}); continue it with --resume, "
                "or choose a new dpo.run_dir"
            )
        if is_main and root.is_dir():
            shutil.rmtree(root)  # only unfinished checkpoints of an earlier attempt
        return None
    if latest is None:
        raise ConfigError(f"--resume: no complete checkpoint under {root}; start the run without --resume")
    saved = yaml.safe_load((latest / "config.yaml").read_text(encoding="utf-8"))
    refuse_differences(latest, config_differences(saved, record, ("model.", "dpo."), RESUME_MAY_CHANGE), "dpo.run_dir")
    return latest


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


# --------------------------------------------------------------------------- log, save


def _open_log(run_dir: Path, record: dict[str, Any], resume_from: Path | None, is_main: bool) -> MetricsLog:
    if not is_main:
        return MetricsLog(None)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(run_dir / "config.yaml", record)
    (run_dir / "summary.json").unlink(missing_ok=True)
    if resume_from is None:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    else:
        truncate_after(run_dir / "metrics.jsonl", _step_of(resume_from))
    return MetricsLog(run_dir / "metrics.jsonl")


def _log_start(log: MetricsLog, trainer: _AlmrDpoTrainer, cfg: DpoConfig, model_config: ModelConfig, steps: int,
               accum: int, world_size: int, resume_from: Path | None, pairs_given: int) -> None:  # fmt: skip
    model = trainer.model
    reference = trainer.reference
    log.write(
        "resume" if resume_from else "start", step=_step_of(resume_from) if resume_from else 0,
        checkpoint=str(resume_from) if resume_from else None, steps=steps, model=model_config.name_or_path,
        pairs=len(trainer.train_dataset), pairs_given=pairs_given, **reference.data,
        device=str(trainer.args.device), precision="bf16" if trainer.args.bf16 else "fp32",
        activation_checkpointing=bool(trainer.args.activation_checkpointing), world_size=world_size,
        parameters=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad), finetuning=cfg.finetuning,
        micro_batch_size=cfg.batch.micro_batch_size, global_batch_size=cfg.batch.global_batch_size,
        grad_accumulation=accum, seq_len=cfg.batch.seq_len, max_prompt_length=cfg.max_prompt_length,
        beta=cfg.beta, loss_type=list(cfg.loss_type),
    )  # fmt: skip
    log.write("reference", source=reference.source, batches=trainer.reference_batches, key=reference.key,
              path=str(reference.entry) if reference.entry else None)  # fmt: skip


def _save(trainer: _AlmrDpoTrainer, tokenizer: Any, out_dir: Path, is_main: bool) -> None:
    """The final model as a chat model directory (chat_model.save_chat_model: LoRA merged, the
    generation config's EOS with the end-of-turn token); sharded weights are gathered first."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    state_dict = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if is_main:
        save_chat_model(model, tokenizer, out_dir, [end_of_turn_token(tokenizer)], state_dict=state_dict)


def _template_ids(
    tokenizer: Any, messages: Sequence[Mapping[str, str]], *, generation_prompt: bool = False
) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        list(messages), tokenize=True, add_generation_prompt=generation_prompt, return_dict=True
    )  # as TRL tokenizes a conversational pair
    return list(encoded["input_ids"])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _summary_line(result: DpoResult, cfg: DpoConfig) -> str:
    last = result.last
    numbers = ""
    if last:
        numbers = (
            f", loss {last.get('loss', float('nan')):.4f}, reward accuracy {last.get('rewards/accuracies', 0.0):.2f}, "
            f"margin {last.get('rewards/margins', 0.0):.3f}"
        )
    return (
        f"DPO ({'+'.join(cfg.loss_type)}, beta {cfg.beta}): {result.steps} steps on {result.pairs} pairs{numbers}; "
        f"reference {result.reference}; model {result.model_dir}"
    )


def _write_summary(path: Path, result: DpoResult, trainer: _AlmrDpoTrainer) -> None:
    summary = {
        "summary": result.summary, "steps": result.steps, "pairs": result.pairs, **trainer.reference.data,
        "reference": result.reference, "reference_batches": result.reference_batches,
        "reference_cache": str(result.cache_dir) if result.cache_dir else None, "model": str(result.model_dir),
        "final": result.last, "first_loss": result.losses[0] if result.losses else None,
    }  # fmt: skip
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
