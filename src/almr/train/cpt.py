"""Continual pre-training (CPT) of a Hugging Face causal LM on a mixture loader.

This file reads top to bottom as the run goes: build (processes, model, data, optimizer,
schedule, checkpointer, metrics), resume, loop (step with visible gradient accumulation, log,
validate, probe, save), close. Schedule math is in schedule.py, checkpoint I/O in checkpoint.py,
process groups and FSDP2 in parallel.py, measurements in metrics.py, loaders in almr.data.

The loader yields this process's micro-batches in global order: `input_ids` and `labels`
([micro, seq_len], labels already the next-token targets: no shift here) and `source_ids`
([micro]); it keeps its position in `state_dict()`. Validation data is a mapping
`{source: (input_ids [N, seq_len], labels [N, seq_len])}`.
"""

import math
import random
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.distributed.checkpoint.stateful import Stateful
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from almr.config import AlmrConfig, dump_config
from almr.errors import AlmrError, ConfigError, DataError
from almr.train import checkpoint as ckpt
from almr.train.config import CptConfig, ModelConfig
from almr.train.metrics import MetricsLog, model_flops_per_token, peak_flops, truncate_after
from almr.train.parallel import Distributed, all_reduce_sum, close_distributed, init_distributed, parallelize
from almr.train.schedule import lr_factor

IGNORE_INDEX = -100

# A resume must continue the same trajectory: these sections decide it and must match the
# checkpoint's config, except for the keys after them, which change how the run is observed,
# stored or placed. Other sections (world, eval, sweep, ...) never affect a CPT run.
RESUME_MUST_MATCH = ("model.", "cpt.", "data.", "mixture.")
RESUME_MAY_CHANGE = (
    "cpt.run_dir", "cpt.checkpoint.", "cpt.validation.", "cpt.probe.",
    "cpt.tensorboard", "cpt.device", "cpt.compile", "cpt.gradient_checkpointing",
)  # fmt: skip


class Loader(Protocol):
    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


Validation = Mapping[str, tuple[torch.Tensor, torch.Tensor]]
Probe = Callable[[torch.nn.Module, int, int], Mapping[str, float]]


@dataclass
class TrainState(Stateful):
    step: int = 0  # optimizer steps done
    tokens: int = 0  # tokens trained, all processes together

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "tokens": self.tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.tokens = int(state["step"]), int(state["tokens"])


class RngState(Stateful):
    """Every random number generator the step may draw from, so a resume continues them exactly."""

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])


@dataclass
class CptResult:
    run_dir: Path
    steps: int
    tokens: int
    checkpoint: Path | None
    losses: list[float] = field(default_factory=list)  # training loss of each step this call ran


def build_data(config: AlmrConfig, dist_env: Distributed) -> tuple[Loader, Validation]:
    """THE integration point with almr.data: the packed mixture loader for this data-parallel rank
    and the held-out sets per source, from the plan that config.data + config.mixture + cpt.batch
    determine (the plan `almr data plan` prints). `train_cpt` calls it only when no loader is given."""
    from almr.data.loader import PackedLoader, validation_sequences
    from almr.data.plan import build_plan

    cpt = config.cpt
    budget = config.mixture.token_budget or cpt.total_tokens
    plan = build_plan(config.data, config.mixture, cpt.batch, token_budget=budget)
    loader = PackedLoader(plan, cpt.batch.micro_batch_size, dp_rank=dist_env.rank, dp_size=dist_env.world_size)
    validation = {}
    for source in plan.sources:
        if source.valid_sequences:
            held_out = validation_sequences(plan, source.name)
            validation[source.name] = (held_out["input_ids"], held_out["labels"])
    return loader, validation


def train_cpt(
    config: AlmrConfig,
    *,
    resume: bool = False,
    loader: Loader | None = None,
    validation: Validation | None = None,
    probe: Probe | None = None,
    progress: bool = False,
) -> CptResult:
    """Run (or with `resume`, continue) the CPT stage described by `config`."""
    cfg = config.cpt
    run_dir = Path(cfg.run_dir)
    owns_group = not torch.distributed.is_initialized()

    # ---------------------------------------------------------------- build
    dist_env = init_distributed(cfg.device)
    try:
        batch = cfg.batch
        per_pass = batch.micro_batch_size * dist_env.world_size
        if batch.global_batch_size % per_pass:
            raise ConfigError(
                f"cpt.batch.global_batch_size={batch.global_batch_size} is not divisible by micro_batch_size × "
                f"processes = {batch.micro_batch_size} × {dist_env.world_size} = {per_pass} (torchrun started "
                f"{dist_env.world_size}); set it to a multiple of {per_pass} or change the process count"
            )
        accum = batch.global_batch_size // per_pass
        checkpointer = ckpt.Checkpointer(run_dir / "checkpoints", cfg.checkpoint.keep_last, dist_env.rank)
        resume_from = _resume_point(config, checkpointer, resume)
        if probe is None and cfg.probe.every_tokens:
            raise ConfigError(
                "cpt.probe.every_tokens is set but no probe suite was given; pass probe= to train_cpt, "
                "or set cpt.probe.every_tokens=0"
            )

        _seed_everything(cfg.seed)
        model, tokenizer = build_model(config.model, cfg)
        vocab = model.get_input_embeddings().weight.shape[0]
        if loader is None:
            loader, validation = build_data(config, dist_env)
        validation = dict(validation or {})
        for source, (inputs, labels) in validation.items():
            _check_ids(inputs, labels, vocab, f"validation set {source!r}")
        steps = _total_steps(cfg, loader, accum)
        lr_factor(0, steps, cfg.schedule)  # refuse an impossible schedule before any compute

        flops_per_token = model_flops_per_token(model, batch.seq_len)
        n_params = sum(p.numel() for p in model.parameters())
        model = parallelize(model, dist_env, gradient_checkpointing=cfg.gradient_checkpointing, compile=cfg.compile)
        bf16 = config.model.dtype == "bfloat16"
        autocast = torch.autocast(dist_env.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        optimizer = _adamw(model, cfg, dist_env.device)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, cfg.schedule))
        peak, peak_source = peak_flops(dist_env.device.type, "bfloat16" if bf16 else "float32")
        train_state = TrainState()
        stateful: dict[str, Any] = {
            "model_optim": ckpt.ModelAndOptimizer(model, optimizer),
            "scheduler": scheduler,
            "loader": loader,
            "train": train_state,
            "rng": RngState(),
        }

        # ---------------------------------------------------------------- resume
        if resume_from is not None:
            checkpointer.load(resume_from, stateful)
        log = None
        if dist_env.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
            if resume_from is None:
                (run_dir / "metrics.jsonl").unlink(missing_ok=True)
            else:
                truncate_after(run_dir / "metrics.jsonl", train_state.step)
            log = MetricsLog(run_dir / "metrics.jsonl", tensorboard=cfg.tensorboard)
            log.write(
                "resume" if resume_from else "start", step=train_state.step, tokens=train_state.tokens,
                checkpoint=str(resume_from) if resume_from else None, steps=steps, world_size=dist_env.world_size,
                device=str(dist_env.device), dtype=config.model.dtype, parameters=n_params,
                flops_per_token=flops_per_token, peak_flops=peak, peak_flops_source=peak_source,
                micro_batch_size=batch.micro_batch_size, global_batch_size=batch.global_batch_size,
                grad_accumulation=accum, seq_len=batch.seq_len,
            )  # fmt: skip

        def save() -> Path:
            meta = {"tokens": train_state.tokens}
            path = checkpointer.save(train_state.step, stateful, lambda folder: _write_exports(folder), meta)
            if log:
                log.write("checkpoint", step=train_state.step, tokens=train_state.tokens, path=str(path))
            return path

        def _write_exports(folder: Path) -> None:
            ckpt.export_hf(model, tokenizer, folder, dist_env.is_main)
            if dist_env.is_main:
                (folder / "config.yaml").write_text(dump_config(config), encoding="utf-8")

        def run_validation() -> None:
            if not validation:
                return
            losses = validate(model, validation, cfg.validation.micro_batch_size or batch.micro_batch_size,
                              dist_env, autocast)  # fmt: skip
            if log:
                log.write("val", step=train_state.step, tokens=train_state.tokens, loss=losses)

        def run_probe() -> None:
            model.eval()
            with torch.no_grad(), autocast:
                scores = dict(probe(model, train_state.step, train_state.tokens))  # type: ignore[misc]
            model.train()
            if log:
                log.write("probe", step=train_state.step, tokens=train_state.tokens, scores=scores)

        # ---------------------------------------------------------------- loop
        tokens_per_step = batch.global_batch_size * batch.seq_len
        max_norm = cfg.optimizer.grad_clip or math.inf
        fsdp = isinstance(model, FSDPModule)
        data = iter(loader)
        losses: list[float] = []
        last_saved: Path | None = None
        if resume_from is None:  # the starting point of the trajectories: the model before any step
            if cfg.validation.every_steps:
                run_validation()
            if probe and cfg.probe.every_tokens:
                run_probe()
        bar = _progress_bar(progress and dist_env.is_main, steps, train_state.step)
        model.train()
        while train_state.step < steps:
            start = time.perf_counter()
            micro_batches = [_next_batch(data, vocab, loader) for _ in range(accum)]
            # Normalize by the tokens of the whole global batch, counted before any backward, so that
            # accumulation over micro-batches and processes gives the gradient of one large batch.
            local = sum((b["labels"] != IGNORE_INDEX).sum() for b in micro_batches)
            global_tokens = all_reduce_sum(torch.as_tensor(local, dtype=torch.float32, device=dist_env.device))
            loss_sum = torch.zeros((), device=dist_env.device)
            for i, micro in enumerate(micro_batches):
                if fsdp:
                    model.set_requires_gradient_sync(i == accum - 1)  # reduce-scatter once per step
                input_ids = micro["input_ids"].to(dist_env.device, non_blocking=True)
                labels = micro["labels"].to(dist_env.device, non_blocking=True)
                with autocast:
                    logits = model(input_ids=input_ids, use_cache=False).logits
                loss = F.cross_entropy(
                    logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
                )
                # FSDP averages gradients over processes; the world-size factor turns that into a sum.
                (loss * (dist_env.world_size / global_tokens)).backward()
                loss_sum += loss.detach()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            if isinstance(grad_norm, DTensor):
                grad_norm = grad_norm.full_tensor()
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            train_state.step += 1
            train_state.tokens += tokens_per_step

            step_loss = (all_reduce_sum(loss_sum) / global_tokens).item()
            elapsed = time.perf_counter() - start
            tokens_per_s = tokens_per_step / elapsed
            mfu = flops_per_token * tokens_per_s / (peak * dist_env.world_size)
            losses.append(step_loss)
            if log:
                log.write(
                    "train", step=train_state.step, tokens=train_state.tokens, loss=step_loss, lr=lr,
                    grad_norm=grad_norm.item(), tokens_per_s=tokens_per_s, mfu=mfu, step_time=elapsed,
                )  # fmt: skip
            if bar:
                bar.update(bar.task_ids[0], advance=1, tps=f"{tokens_per_s:,.0f}", loss=f"{step_loss:.4f}")
            if not math.isfinite(step_loss):
                raise AlmrError(
                    f"the training loss became {step_loss} at step {train_state.step}; lower cpt.optimizer.lr "
                    "or add warmup (cpt.schedule.warmup_steps), then resume from the last checkpoint"
                )
            done = train_state.step == steps
            every = cfg.validation.every_steps
            if every and (train_state.step % every == 0 or done):
                run_validation()
            every_tokens = cfg.probe.every_tokens
            before = train_state.tokens - tokens_per_step
            crossed = every_tokens and train_state.tokens // every_tokens > before // every_tokens
            if probe and crossed:
                run_probe()
            every = cfg.checkpoint.every_steps
            if done or (every and train_state.step % every == 0):
                last_saved = save()

        # ---------------------------------------------------------------- close
        if bar:
            bar.stop()
        if log:
            log.write("end", step=train_state.step, tokens=train_state.tokens, checkpoint=str(last_saved))
            log.close()
        return CptResult(run_dir, train_state.step, train_state.tokens, last_saved or checkpointer.latest(), losses)
    finally:
        if owns_group:
            close_distributed()


# --------------------------------------------------------------------------- parts of the build


def build_model(model_cfg: ModelConfig, cfg: CptConfig) -> tuple[torch.nn.Module, Any]:
    """The causal LM (fp32 master weights) and its tokenizer from model.name_or_path; with
    cpt.random_init, the architecture from its config.json with weights drawn from the seeded RNG."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = model_cfg.name_or_path
    if not path:
        raise ConfigError("model.name_or_path is not set; point it at a Hugging Face model directory (or hub id)")
    try:
        if cfg.random_init:
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float32)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except ValueError as err:
        raise ConfigError(
            f"model.name_or_path={path} is not a causal language model that transformers can train "
            f"({str(err).splitlines()[0]}); point it at a *ForCausalLM checkpoint such as a Llama"
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read a model from model.name_or_path={path}: {str(err).splitlines()[0]}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model.name_or_path={path} has no tokenizer that transformers can load ({str(err).splitlines()[0]}); "
            "checkpoints must ship one, so save the tokenizer into that directory"
        ) from None
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise ConfigError(
            f"the tokenizer at {path} has {len(tokenizer)} tokens but the model's embedding has {vocab} rows; "
            "use the tokenizer the model was built for (or resize the model's embeddings)"
        )
    model.config.use_cache = False
    return model, tokenizer


def _adamw(model: torch.nn.Module, cfg: CptConfig, device: torch.device) -> torch.optim.Optimizer:
    # nanoGPT's rule: matrices decay, gains and biases do not.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.optimizer.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    opt = cfg.optimizer
    return torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas, eps=opt.eps, fused=device.type in ("cpu", "cuda"))


def _total_steps(cfg: CptConfig, loader: Loader, accum: int) -> int:
    if cfg.steps is not None:
        return cfg.steps
    tokens_per_step = cfg.batch.global_batch_size * cfg.batch.seq_len
    if cfg.total_tokens is not None:
        if cfg.total_tokens < tokens_per_step:
            raise ConfigError(
                f"cpt.total_tokens={cfg.total_tokens} is less than one step of {tokens_per_step} tokens "
                "(global_batch_size × seq_len); raise it or shrink the batch"
            )
        return cfg.total_tokens // tokens_per_step
    if hasattr(loader, "__len__"):
        return len(loader) // accum  # type: ignore[arg-type]
    raise ConfigError("set cpt.steps or cpt.total_tokens: the loader does not say how long it is")


def _resume_point(config: AlmrConfig, checkpointer: ckpt.Checkpointer, resume: bool) -> Path | None:
    latest = checkpointer.latest()
    if not resume:
        if latest is not None:
            raise ConfigError(
                f"{config.cpt.run_dir} already holds checkpoints (newest {latest.name}); continue it with "
                "--resume, or choose a new cpt.run_dir"
            )
        if checkpointer.is_writer and checkpointer.root.is_dir():
            shutil.rmtree(checkpointer.root)  # only unfinished .tmp folders of an earlier attempt
        return None
    if latest is None:
        raise ConfigError(f"--resume: no complete checkpoint under {checkpointer.root}; start the run without --resume")
    saved = yaml.safe_load((latest / "config.yaml").read_text(encoding="utf-8"))
    differences = _config_differences(saved, config.model_dump(mode="json"))
    if differences:
        raise ConfigError(
            f"--resume: the checkpoint {latest} was written by a different config or data plan; refused because\n"
            + "\n".join(f"  {key}: checkpoint {old!r}, now {new!r}" for key, old, new in differences)
            + "\nrestore those values, or start a new run_dir"
        )
    return latest


def _config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = sorted(set(flat_old) | set(flat_new))
    return [
        (key, flat_old.get(key), flat_new.get(key))
        for key in keys
        if flat_old.get(key) != flat_new.get(key)
        and key.startswith(RESUME_MUST_MATCH)
        and not key.startswith(RESUME_MAY_CHANGE)
    ]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- parts of the loop


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


@torch.no_grad()
def validate(
    model: torch.nn.Module, validation: Validation, micro: int, dist_env: Distributed, autocast: Any
) -> dict[str, float]:
    """Mean next-token loss per source over exactly its held-out sequences, each counted once:
    process r takes sequences r, r+W, …; all processes run the same number of forward passes
    (FSDP gathers weights collectively), a process with none left repeats one at weight 0."""
    model.eval()
    results = {}
    for source, (inputs, labels) in validation.items():
        count = inputs.shape[0]
        mine = torch.arange(dist_env.rank, count, dist_env.world_size)
        rounds = math.ceil(math.ceil(count / dist_env.world_size) / micro)
        totals = torch.zeros(2, dtype=torch.float64, device=dist_env.device)
        for r in range(rounds):
            index = mine[r * micro : (r + 1) * micro]
            weight = 1.0
            if index.numel() == 0:
                index, weight = torch.tensor([0]), 0.0
            x = inputs[index].to(dist_env.device)
            y = labels[index].to(dist_env.device)
            with autocast:
                logits = model(input_ids=x, use_cache=False).logits
            loss = F.cross_entropy(
                logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            totals += weight * torch.stack([loss.double(), (y != IGNORE_INDEX).sum().double()])
        all_reduce_sum(totals)
        results[source] = (totals[0] / totals[1]).item()
    model.train()
    return results


def _progress_bar(enabled: bool, steps: int, done: int) -> Progress | None:
    if not enabled:
        return None
    bar = Progress(
        TextColumn("[bold]CPT"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[tps]} tok/s"),
        TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )  # fmt: skip
    bar.add_task("cpt", total=steps, completed=done, tps="-", loss="-")
    bar.start()
    return bar
