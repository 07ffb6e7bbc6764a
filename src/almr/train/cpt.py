"""Continual pre-training (CPT) of a Hugging Face causal LM on a mixture loader.

`train_cpt` reads top to bottom as the run goes: build (processes, model, optimizer, schedule,
checkpointer, measurements), resume, loop (step, log, validate, probe, save), close. Each part
lives in its own module and is only asked here: the step and its gradient accumulation in
step.py, the loss in loss.py, "is it due" and the measurements in validate.py and
checkpoint.py, schedule math in schedule.py, resume rules in resume.py, process groups and
FSDP2 in parallel.py, the metrics log in metrics.py. Building the loader from the data plan is
the stage's job (`almr.stages.cpt`), so the trainer runs on any loader that keeps the protocol.

The loader yields this process's micro-batches in global order: `input_ids` and `labels`
([micro, seq_len], labels already the next-token targets: no shift here) and `source_ids`
([micro]); it keeps its position in `state_dict()`.
"""

import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from rich.progress import Progress

from almr.errors import AlmrError, ConfigError, DataError
from almr.train import checkpoint as ckpt
from almr.train.config import CptConfig, ModelConfig
from almr.train.loss import chunked_loss_unsupported
from almr.train.metrics import (
    MetricsLog,
    logged_steps,
    model_flops_per_token,
    peak_flops,
    training_bar,
    truncate_after,
)
from almr.train.model import vocab_size
from almr.train.new_rows import embedding_matrices, train_only_new_rows, zero_old_rows
from almr.train.optimizer import build_optimizer
from almr.train.parallel import Distributed, autocast_for, close_distributed, init_distributed, parallelize
from almr.train.preempt import STOP_SIGNAL, stop_on_signal
from almr.train.resume import resume_point, write_run_config
from almr.train.schedule import lr_factor
from almr.train.sharded_load import build_parallel_model
from almr.train.state import RngState, TrainState, seed_everything
from almr.train.step import StepResult, train_step
from almr.train.validate import Probe, Prober, Validation, Validator, selected_batches


class Loader(Protocol):
    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class CptResult:
    run_dir: Path
    steps: int
    tokens: int
    checkpoint: Path | None
    losses: list[float] = field(default_factory=list)  # training loss of each step this call ran
    finished_before: bool = False  # a --resume of a run that had already done all its steps: nothing ran
    is_main: bool = True  # the process that prints and writes (rank 0)
    stopped: bool = False  # stopped early on SIGUSR2 after a checkpoint (almr.train.preempt): --resume continues


def train_cpt(
    model_config: ModelConfig,
    cfg: CptConfig,
    loader: Loader,
    validation: Validation | None = None,
    *,
    probe: Probe | None = None,
    resume: bool = False,
    progress: bool = False,
    record: Mapping[str, Any] | None = None,
) -> CptResult:
    """Run (or with `resume`, continue) CPT of `model_config`'s model as `cfg` says, on `loader`.
    `record` is the resolved config the run folder and its checkpoints store and a resume is
    checked against (default: the model and cpt sections)."""
    record = dict(record or {"model": model_config.model_dump(mode="json"), "cpt": cfg.model_dump(mode="json")})
    owns_group = not torch.distributed.is_initialized()
    # ---------------------------------------------------------------- build
    with stop_on_signal() as stop:
        dist_env = init_distributed(cfg.device)
        try:
            accum = _accumulation_steps(cfg, dist_env)
            checkpointer = ckpt.Checkpointer(Path(cfg.run_dir) / "checkpoints", cfg.checkpoint.keep_last, dist_env.rank,
                                             cfg.checkpoint.every_steps)  # fmt: skip
            data_id = getattr(loader, "fingerprint", None)  # the packed loader's plan and shards
            resume_from = resume_point(checkpointer, record, resume, cfg.run_dir, data=data_id)
            steps = _total_steps(cfg, loader, accum)
            lr_factor(0, steps, cfg.schedule)  # refuse an impossible schedule before any compute
            if resume_from is not None:
                checkpointer.recover()  # what a kill left: unfinished writes and prunes
                done = ckpt.read_meta(resume_from)
                if done["step"] >= steps:
                    _close_finished(Path(cfg.run_dir), done, resume_from, dist_env.is_main)
                    return CptResult(Path(cfg.run_dir), done["step"], done.get("tokens", 0), resume_from,
                                     finished_before=True, is_main=dist_env.is_main)  # fmt: skip
            dtype = _training_dtype(model_config.dtype, dist_env.device)
            precision = autocast_for(dtype, dist_env)  # autocast in one process; FSDP's policy under torchrun
            prober = Prober(probe, cfg.probe.every_tokens, precision)
            seed_everything(cfg.seed)
            first_new = cfg.train_new_rows_from

            def shard(built: torch.nn.Module, env: Distributed) -> torch.nn.Module:
                if first_new:  # before sharding: FSDP2 keeps requires_grad
                    train_only_new_rows(built, first_new)
                return parallelize(built, env, gradient_checkpointing=cfg.gradient_checkpointing, compile=cfg.compile,
                                   dtype=dtype)  # fmt: skip

            # under torchrun each process reads only its shards of the weights (sharded_load.py)
            loaded = build_parallel_model(model_config, dist_env, shard, random_init=cfg.random_init)
            model, tokenizer = loaded.model, loaded.tokenizer
            vocab = vocab_size(model)
            _check_validation(validation or {}, vocab, cfg.validation.max_sequences)
            run = _Run(cfg, dist_env, model, steps, record, dtype, _export_dtype(cfg, dtype, loaded.stored_dtype))
            loss_chunk = _loss_chunk_tokens(cfg, model, dist_env)
            learning = embedding_matrices(model) if first_new else []
            # decoupled weight decay would shrink the frozen old rows of the matrices that learn
            optimizer_config = cfg.optimizer.model_copy(update={"weight_decay": 0.0}) if first_new else cfg.optimizer
            optimizer = build_optimizer(model, optimizer_config, dist_env.device)
            keep_old_rows = (lambda: zero_old_rows(learning, first_new)) if first_new else None
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, cfg.schedule))
            validator = Validator(validation or {}, cfg.validation.micro_batch_size or cfg.batch.micro_batch_size,
                                  cfg.validation.every_steps, dist_env, precision,
                                  max_sequences=cfg.validation.max_sequences)  # fmt: skip
            state = TrainState()
            stateful = {"model_optim": ckpt.ModelAndOptimizer(model, optimizer), "scheduler": scheduler,
                        "loader": loader, "train": state, "rng": RngState()}  # fmt: skip

            # ---------------------------------------------------------------- resume
            if resume_from is not None:
                checkpointer.load(resume_from, stateful)
            log = run.open_log(state, resume_from, accum)
            if resume_from is None:  # the starting point of the trajectories: the model before any step
                if validator.should_validate(0, steps):
                    log.write("val", step=0, tokens=0, loss=validator(model))
                if prober.enabled:
                    log.write("probe", step=0, tokens=0, scores=prober(model, 0, 0))

            # ---------------------------------------------------------------- loop
            bar = training_bar("CPT", steps, state.step) if progress and dist_env.is_main else None
            tokens_per_step = cfg.batch.global_batch_size * cfg.batch.seq_len
            data, losses, last_saved, saved_step = iter(loader), [], None, -1

            def save() -> Path:
                meta = {"tokens": state.tokens, **({"data": data_id} if data_id is not None else {})}
                folder = checkpointer.save(state.step, stateful, lambda out: run.export(out, tokenizer), meta)
                log.write("checkpoint", step=state.step, tokens=state.tokens, path=str(folder))
                checkpointer.prune()  # after the event: a kill while pruning loses no record (recover redoes it)
                return folder

            model.train()
            while state.step < steps:
                started = time.perf_counter()
                micro_batches = [_next_batch(data, vocab, loader) for _ in range(accum)]
                result = train_step(model, optimizer, scheduler, micro_batches, dist_env, precision,
                                    cfg.optimizer.grad_clip, keep_old_rows, loss_chunk)  # fmt: skip
                state.step += 1
                state.tokens += tokens_per_step
                losses.append(result.loss)
                run.log_step(log, bar, state, result, time.perf_counter() - started)
                if validator.should_validate(state.step, steps):
                    log.write("val", step=state.step, tokens=state.tokens, loss=validator(model))
                if prober.should_probe(state.tokens - tokens_per_step, state.tokens):
                    scores = prober(model, state.step, state.tokens)
                    log.write("probe", step=state.step, tokens=state.tokens, scores=scores)
                if checkpointer.should_save(state.step, steps):
                    last_saved, saved_step = save(), state.step
                if state.step < steps and stop.agreed(dist_env):  # the scheduler's warning: save, then stop
                    last_saved = save() if saved_step != state.step else last_saved
                    log.write("stopped", step=state.step, tokens=state.tokens, checkpoint=str(last_saved),
                              reason=f"signal {STOP_SIGNAL.name}")  # fmt: skip
                    break

            # ---------------------------------------------------------------- close
            if bar:
                bar.stop()
            stopped = state.step < steps
            if not stopped:
                log.write("end", step=state.step, tokens=state.tokens, checkpoint=str(last_saved))
            log.close()
            return CptResult(Path(cfg.run_dir), state.step, state.tokens, last_saved or checkpointer.latest(), losses,
                             is_main=dist_env.is_main, stopped=stopped)  # fmt: skip
        finally:
            if owns_group:
                close_distributed()


class _Run:
    """What the loop writes about the run: the run folder's config and metrics log, the step
    lines with throughput and MFU, the exported model. Only the main process writes."""

    def __init__(self, cfg: CptConfig, dist_env: Distributed, model: torch.nn.Module, steps: int,
                 record: dict[str, Any], dtype: str, export_dtype: torch.dtype) -> None:  # fmt: skip
        self.cfg, self.dist_env, self.model, self.steps, self.record = cfg, dist_env, model, steps, record
        self.dtype, self.export_dtype = dtype, export_dtype
        bf16 = self.dtype == "bfloat16"
        self.flops_per_token = model_flops_per_token(model, cfg.batch.seq_len)
        self.parameters = sum(p.numel() for p in model.parameters())
        self.peak, self.peak_source = peak_flops(dist_env.device.type, "bfloat16" if bf16 else "float32")

    def open_log(self, state: TrainState, resume_from: Path | None, accum: int) -> MetricsLog:
        run_dir, batch = Path(self.cfg.run_dir), self.cfg.batch
        if not self.dist_env.is_main:
            return MetricsLog(None)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_config(run_dir / "config.yaml", self.record)
        if resume_from is None:
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        else:
            truncate_after(run_dir / "metrics.jsonl", state.step)
        log = MetricsLog(run_dir / "metrics.jsonl", tensorboard=self.cfg.tensorboard)
        if resume_from is not None and state.step not in logged_steps(run_dir / "metrics.jsonl", "checkpoint"):
            # killed between the checkpoint's rename and its event: the checkpoint is there, so is its record
            log.write("checkpoint", step=state.step, tokens=state.tokens, path=str(resume_from))
        log.write(
            "resume" if resume_from else "start", step=state.step, tokens=state.tokens,
            checkpoint=str(resume_from) if resume_from else None, steps=self.steps,
            world_size=self.dist_env.world_size, device=str(self.dist_env.device), dtype=self.dtype,
            parameters=self.parameters, flops_per_token=self.flops_per_token, peak_flops=self.peak,
            peak_flops_source=self.peak_source, micro_batch_size=batch.micro_batch_size,
            global_batch_size=batch.global_batch_size, grad_accumulation=accum, seq_len=batch.seq_len,
        )  # fmt: skip
        return log

    def log_step(self, log: MetricsLog, bar: Progress | None, state: TrainState, result: StepResult,
                 elapsed: float) -> None:  # fmt: skip
        tokens_per_s = self.cfg.batch.global_batch_size * self.cfg.batch.seq_len / elapsed
        mfu = self.flops_per_token * tokens_per_s / (self.peak * self.dist_env.world_size)
        aux = {} if result.aux_loss is None else {"aux_loss": result.aux_loss}
        log.write(
            "train", step=state.step, tokens=state.tokens, loss=result.loss, lr=result.lr,
            grad_norm=result.grad_norm, tokens_per_s=tokens_per_s, mfu=mfu, step_time=elapsed, **aux,
        )  # fmt: skip
        if bar:
            bar.update(bar.task_ids[0], advance=1, tps=f"{tokens_per_s:,.0f}", loss=f"{result.loss:.4f}")
        if not math.isfinite(result.loss):
            raise AlmrError(
                f"the training loss became {result.loss} at step {state.step}; lower cpt.optimizer.lr "
                "or add warmup (cpt.schedule.warmup_steps), then resume from the last checkpoint"
            )

    def export(self, folder: Path, tokenizer: Any) -> None:
        ckpt.export_hf(self.model, tokenizer, folder, self.dist_env.is_main, dtype=self.export_dtype,
                       max_shard_size=self.cfg.export.max_shard_size)  # fmt: skip
        if self.dist_env.is_main:
            write_run_config(folder / "config.yaml", self.record)


def _accumulation_steps(cfg: CptConfig, dist_env: Distributed) -> int:
    batch = cfg.batch
    per_pass = batch.micro_batch_size * dist_env.dp_size  # the tp ranks of one replica read the same batch
    if batch.global_batch_size % per_pass:
        raise ConfigError(
            f"cpt.batch.global_batch_size={batch.global_batch_size} is not divisible by micro_batch_size × "
            f"data-parallel processes = {batch.micro_batch_size} × {dist_env.dp_size} = {per_pass} (torchrun started "
            f"{dist_env.world_size}, tensor_parallel {dist_env.tensor_parallel}); set it to a multiple of {per_pass} "
            "or change the process count"
        )
    return batch.global_batch_size // per_pass


def _total_steps(cfg: CptConfig, loader: Loader, accum: int) -> int:
    """cpt.steps, or cpt.total_tokens in whole steps, or the loader's length; refused when the
    loader says it holds fewer steps than asked (before any compute, not when it runs out)."""
    available = len(loader) // accum if hasattr(loader, "__len__") else None
    tokens_per_step = cfg.batch.global_batch_size * cfg.batch.seq_len
    if cfg.steps is not None:
        steps, key = cfg.steps, f"cpt.steps={cfg.steps}"
    elif cfg.total_tokens is not None:
        if cfg.total_tokens < tokens_per_step:
            raise ConfigError(
                f"cpt.total_tokens={cfg.total_tokens} is less than one step of {tokens_per_step} tokens "
                "(global_batch_size × seq_len); raise it or shrink the batch"
            )
        steps = cfg.total_tokens // tokens_per_step
        key = f"cpt.total_tokens={cfg.total_tokens} ({steps} steps)"
    elif available is not None:
        return available
    else:
        raise ConfigError("set cpt.steps or cpt.total_tokens: the loader does not say how long it is")
    if available is not None and steps > available:
        raise ConfigError(
            f"{key} asks for more than the data plan holds: {available} steps of {tokens_per_step:,} tokens; "
            "lower it, or raise mixture.token_budget (unset, the budget is cpt.total_tokens, else cpt.steps × "
            "global_batch_size × seq_len)"
        )
    return steps


def _loss_chunk_tokens(cfg: CptConfig, model: torch.nn.Module, dist_env: Distributed) -> int:
    """cpt.loss_chunk_tokens, or 0 (the plain loss, with a warning, once) for a model the chunked
    loss does not apply to. Under tensor parallelism the output layer is split by vocabulary row and
    returns whole logits (`parallel.tensor_parallel_plan`), while the chunked loss multiplies by the
    whole weight."""
    if not cfg.loss_chunk_tokens:
        return 0
    if dist_env.tensor_parallel > 1:
        reason = f"the output layer is split over parallel.tensor_parallel={dist_env.tensor_parallel} ranks"
    else:
        reason = chunked_loss_unsupported(model)
    if reason is None:
        return cfg.loss_chunk_tokens
    warnings.warn(
        f"cpt.loss_chunk_tokens={cfg.loss_chunk_tokens} is not applied to {type(model).__name__}: {reason}; this run "
        "computes the full logits (set cpt.loss_chunk_tokens=0 to silence this)",
        stacklevel=3,
    )
    return 0


def _training_dtype(dtype: str, device: torch.device) -> str:
    """The precision the run trains in: `model.dtype`, except bfloat16 on a CPU, which trains in
    float32 (bf16 matmuls are many times slower there and the docs promise fp32), with a warning."""
    if dtype == "bfloat16" and device.type == "cpu":
        warnings.warn(
            "model.dtype=bfloat16 is not applied on a CPU: this run trains in float32 (set model.dtype=float32 to "
            "silence this, or train on a GPU for bf16)",
            stacklevel=3,
        )
        return "float32"
    return dtype


def _export_dtype(cfg: CptConfig, dtype: str, stored: torch.dtype | None) -> torch.dtype:
    """cpt.export.dtype; auto: bfloat16 when trained in bf16, else the dtype the model's
    config.json names, else float32."""
    if cfg.export.dtype != "auto":
        return getattr(torch, cfg.export.dtype)
    if dtype == "bfloat16":
        return torch.bfloat16
    return stored if stored in (torch.float32, torch.bfloat16, torch.float16) else torch.float32


def _close_finished(run_dir: Path, done: Mapping[str, Any], checkpoint: Path, is_main: bool) -> None:
    """A --resume of a finished run changes nothing; only the events a kill after the last
    checkpoint may have cost (its checkpoint and end events) are added to metrics.jsonl."""
    log_path = run_dir / "metrics.jsonl"
    if not is_main:
        return
    step, tokens = done["step"], done.get("tokens", 0)
    missing_checkpoint = step not in logged_steps(log_path, "checkpoint")
    missing_end = step not in logged_steps(log_path, "end")
    if missing_checkpoint or missing_end:
        truncate_after(log_path, step)
        log = MetricsLog(log_path)
        if missing_checkpoint:
            log.write("checkpoint", step=step, tokens=tokens, path=str(checkpoint))
        log.write("end", step=step, tokens=tokens, checkpoint=str(checkpoint))
        log.close()


def _check_validation(validation: Validation, vocab: int, max_sequences: int | None) -> None:
    for source, inputs, labels in selected_batches(validation, max_sequences):
        _check_ids(inputs, labels, vocab, f"validation set {source!r}")


def _next_batch(data: Iterator[dict[str, torch.Tensor]], vocab: int, loader: Iterable[Any]) -> dict[str, torch.Tensor]:
    try:
        batch = next(data)
    except StopIteration:
        raise DataError(
            f"the loader ran out of data at {loader.state_dict()}; the data plan holds fewer tokens than "  # type: ignore[attr-defined]
            "cpt.steps × global_batch_size × seq_len: lower cpt.steps/total_tokens or add data"
        ) from None
    _check_ids(batch["input_ids"], batch["labels"], vocab, "a training batch")
    return batch


def _check_ids(inputs: torch.Tensor, labels: torch.Tensor, vocab: int, what: str) -> None:
    if inputs.shape != labels.shape or inputs.ndim != 2:
        raise DataError(
            f"{what}: input_ids {tuple(inputs.shape)} and labels {tuple(labels.shape)} must both be [n, seq_len]"
        )
    top = max(int(inputs.max()), int(labels.max())) if inputs.numel() else 0
    if top >= vocab or int(inputs.min()) < 0:
        raise DataError(
            f"{what} holds token id {top} but the model's vocabulary has {vocab} entries (ids 0..{vocab - 1}); the "
            "data was tokenized with a different tokenizer: re-tokenize it with the model's tokenizer"
        )
