"""The probe: cheap benchmark scores during CPT (the paper's Fig. 2 trajectories), on any lm-eval task.

Contract: `TaskProbe(tasks, tokenizer, items_per_task=32, seed=0, ...)` is the callable the CPT
trainer takes as `probe=`: `probe(model, step, tokens) -> {key: score}`. `tasks` are names
`almr eval` accepts — almr's own tasks (the demo world's `world_*` included) and any task or
group of lm-eval's (`ceval-valid`, `cmmlu`, `mmlu`, `hellaswag`, `gsm8k`, …).

- **Items**: a fixed subset of `items_per_task` documents per task, the same at every call, in
  every process and every run of the same seed: a seeded sample of its evaluation documents; for
  a group (C-Eval, MMLU, CMMLU) stratified by subject — each subtask gets its share in proportion
  to its size (largest remainders), then a seeded sample within it (`choose_items`).
- **Scoring**: lm-eval's own `evaluate` on the `Task` objects — their prompts, choices, targets,
  few-shot examples, filters and metrics — through `ProbeLM`, whose log-likelihoods come from
  `LoglikScorer`'s batched path (encoded once, cached across calls) and whose generations are
  HFLM's (greedy, `max_gen_toks` at most). So a probe score equals lm-eval's on the same items.
- **Keys**: `scores(result)` of `almr.evaluate.results` — `{task: primary, "task:metric": value}`
  on almr's scales (accuracies ×100), the keys the averaged metric (`eval.average`) names.
- **Processes**: under torchrun every process scores every item set with the others: the
  log-likelihood batches and the generation requests are split across the processes, which all
  run the same number of forward passes (collective under FSDP2: HF `generate(synced_gpus=True)`),
  and the results are gathered, so every process returns the same scores.
- **Refused before any compute** (`ConfigError`): judge and chat tasks, perplexity tasks, a
  generation task without `max_gen_toks`, code-running tasks without `allow_code_execution`,
  missing data (with where to get it), an item longer than the model's window (`max_length`).

`last_seconds_` holds the wall time of the last call; `cost()` the work of one call.
"""

import functools
import logging
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from almr.errors import ConfigError, DataError
from almr.evaluate.catalog import configure_tasks, load_tasks, with_overrides
from almr.evaluate.config import EvalConfig
from almr.evaluate.harness import check_request, missing_data
from almr.evaluate.loglik import Encoded, LoglikScorer
from almr.evaluate.registry import TaskInfo, resolve_tasks
from almr.evaluate.results import from_lm_eval, scores

WORLD_PROBE = ("world_mmlu", "world_ceval", "world_eprstmt", "world_seceu")


@dataclass(frozen=True)
class ProbeCost:
    """The work of one probe call: forward rows and their tokens, and generations."""

    items: int
    loglik_rows: int
    loglik_tokens: int
    generations: int
    generation_tokens: int  # prompt tokens plus max_gen_toks per generation, an upper bound

    @property
    def tokens(self) -> int:
        return self.loglik_tokens + self.generation_tokens

    def share_of_training(self, every_tokens: int) -> float:
        """Compute of a probe over that of the training between two probes: a forward pass costs
        ~2·N FLOPs per token, a training step ~6·N, so the parameter count N cancels (attention
        and padding aside) and the share holds for a 1M model as for an 8B one."""
        return 2 * self.tokens / (6 * every_tokens + 2 * self.tokens)

    def describe(self, every_tokens: int) -> str:
        """One line for the study's log before it starts: what a probe costs at this interval."""
        share = self.share_of_training(every_tokens)
        line = (
            f"probe: {self.items} items, {self.loglik_rows} scored sequences ({self.loglik_tokens:,} tokens)"
            + (f", {self.generations} generations (≤ {self.generation_tokens:,} tokens)" if self.generations else "")
            + f" every {every_tokens:,} trained tokens: ~{share:.1%} of training compute (2·probe tokens over "
            "6·trained tokens, the same for any model size)"
        )
        if share > 0.05:
            floor = int(self.tokens * (1 - 0.05) / (3 * 0.05))  # the interval at which the share is 5%
            line += f"; over the 5% target: raise cpt.probe.every_tokens to ≥ {floor:,} or lower items_per_task"
        return line


def choose_items(loaded: Mapping[str, Any], infos: Sequence[TaskInfo], items_per_task: int,
                 seed: int) -> dict[str, list[int]]:  # fmt: skip
    """`{leaf task: sorted document indices}`: `items_per_task` per requested task, stratified over
    a group's subtasks in proportion to their sizes; seeded by (seed, task), not by process state."""
    samples: dict[str, list[int]] = {}
    for info in infos:
        leaves = _leaves(loaded, info.name)
        sizes = {leaf: len(loaded["tasks"][leaf].eval_docs) for leaf in leaves}
        total = sum(sizes.values())
        want = min(items_per_task, total)
        exact = {leaf: want * size / total for leaf, size in sizes.items()} if total else {}
        shares = {leaf: int(x) for leaf, x in exact.items()}
        for leaf in sorted(exact, key=lambda s: (shares[s] - exact[s], s))[: want - sum(shares.values())]:
            shares[leaf] += 1
        for leaf, k in shares.items():
            rng = random.Random(f"{seed}:{leaf}")
            samples[leaf] = sorted(rng.sample(range(sizes[leaf]), k))
    return samples


def _leaves(loaded: Mapping[str, Any], name: str) -> list[str]:
    if name in loaded["tasks"]:
        return [name]
    children = loaded.get("group_map", {}).get(name)
    if children is None:
        raise ConfigError(f"task {name!r}: lm-eval loaded no task or group of that name")
    return [leaf for child in children for leaf in _leaves(loaded, child)]


def _refuse_unprobeable(infos: Sequence[TaskInfo], max_gen_toks: int | None) -> None:
    for kind, names, why in (
        ("judge", [t.name for t in infos if t.mode == "judge"], "are scored by an LLM judge on a chat model"),
        ("chat", [t.name for t in infos if t.chat], "need a chat template, which a CPT checkpoint does not have"),
        ("perplexity", [t.name for t in infos if t.mode == "perplexity"],
         "measure perplexity, which the held-out validation loss already tracks (cpt.validation)"),
    ):  # fmt: skip
        if names:
            raise ConfigError(f"eval.probe.tasks: {', '.join(names)} {why}; leave these {kind} tasks out of the probe")
    generation = [t.name for t in infos if t.mode == "generation"]
    if generation and not max_gen_toks:
        raise ConfigError(
            f"eval.probe.tasks: generation task(s) {', '.join(generation)} need a cap on generated tokens in a "
            "probe; set eval.probe.max_gen_toks (e.g. 64)"
        )


class TaskProbe:
    def __init__(self, tasks: Sequence[str], tokenizer: Any, *, items_per_task: int = 32, seed: int = 0,
                 batch_size: int = 64, max_gen_toks: int | None = None, max_length: int | None = None,
                 data_dir: str | Path | None = None, data_files: Mapping[str, str] | None = None,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 allow_code_execution: bool = False) -> None:  # fmt: skip
        self.infos = with_overrides(resolve_tasks(None, list(tasks)), overrides or {})
        self.tasks = tuple(t.name for t in self.infos)
        self.tokenizer = tokenizer
        self.items_per_task = items_per_task
        self.seed = seed
        self.batch_size = batch_size
        self.max_gen_toks = max_gen_toks
        self.max_length = max_length
        self.allow_code_execution = allow_code_execution
        _refuse_unprobeable(self.infos, max_gen_toks)
        missing = missing_data(self.infos, data_dir, data_files)
        if missing:
            listed = "\n".join(f"  {name}: {why}" for name, why in missing.items())
            raise DataError(f"eval.probe.tasks: data missing for {', '.join(missing)} (get it, or leave the task "
                            f"out of the probe):\n{listed}")  # fmt: skip
        check_request(self.infos, None, data_dir=data_dir, data_files=data_files,
                      allow_code_execution=allow_code_execution)  # fmt: skip
        _quiet_lm_eval()
        metadata = {"data_dir": str(data_dir) if data_dir is not None else None, "data_files": dict(data_files or {})}
        self._loaded = load_tasks(self.infos, metadata, overrides)
        configure_tasks(self._loaded, self.infos, max_gen_toks, overrides)
        self.samples = choose_items(self._loaded, self.infos, items_per_task, seed)
        self._encoded: dict[tuple[str, str], Encoded] = {}
        self._cost = self._check_lengths()
        self.last_seconds_ = 0.0

    def cost(self) -> ProbeCost:
        return self._cost

    @property
    def n_sequences(self) -> int:
        """Log-likelihood forward rows per call (items × choices)."""
        return self._cost.loglik_rows

    def encode(self, pairs: Sequence[tuple[str, str]]) -> list[Encoded]:
        """(context, continuation) pairs as lm-eval's HFLM encodes them, each encoded once per probe."""
        todo = [p for p in dict.fromkeys(pairs) if p not in self._encoded]
        if todo:
            self._encoded.update(zip(todo, LoglikScorer(None, self.tokenizer).encode(todo), strict=True))
        return [self._encoded[p] for p in pairs]

    def _requests(self) -> list[Any]:
        for task in self._loaded["tasks"].values():
            task.set_fewshot_seed(seed=1234)  # the same few-shot examples at every call
        out = []
        with _no_request_bars():
            for name, task in self._loaded["tasks"].items():
                task.build_all_requests(samples=self.samples.get(name, []), rank=0, world_size=1)
                out += task.instances
        return out

    def _check_lengths(self) -> ProbeCost:
        """What one call costs, and every item checked against the model's window."""
        requests = self._requests()
        loglik = [r for r in requests if r.request_type == "loglikelihood"]
        generate = [r for r in requests if r.request_type == "generate_until"]
        encoded = self.encode([tuple(r.args) for r in loglik])
        rows = [len(ctx) + len(cont) - 1 for ctx, cont in encoded]
        prompts = [len(self.tokenizer(r.args[0])["input_ids"]) for r in generate]
        caps = [int(r.args[1].get("max_gen_toks", self.max_gen_toks or 0)) for r in generate]
        if self.max_length:
            for request, n in zip(loglik, rows, strict=True):
                if n > self.max_length:
                    _too_long(request, n, self.max_length)
            for request, n, cap in zip(generate, prompts, caps, strict=True):
                if n + cap > self.max_length:
                    _too_long(request, n + cap, self.max_length)
        docs = {(r.task_name, r.doc_id) for r in requests}
        return ProbeCost(len(docs), len(rows), sum(rows), len(generate), sum(prompts) + sum(caps))

    def __call__(self, model: torch.nn.Module, step: int = 0, tokens: int = 0) -> dict[str, float]:
        # heavy (lm-eval's evaluator, HFLM): imported at the first call, not with the trainer
        from lm_eval.evaluator import evaluate

        from almr.evaluate.probe_lm import ProbeLM

        started = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self._reusing_requests():
                lm = ProbeLM(model, self.tokenizer, self.encode, batch_size=self.batch_size,
                             max_length=self.max_length, max_gen_toks=self.max_gen_toks)  # fmt: skip
                raw = evaluate(
                    lm=lm, task_dict=self._loaded, samples=self.samples, bootstrap_iters=0,
                    log_samples=False, confirm_run_unsafe_code=self.allow_code_execution,
                )  # fmt: skip
        finally:
            model.train(was_training)
        assert raw is not None  # every process is rank 0 of its own lm-eval run
        result = from_lm_eval([raw], self.infos, model="probe", suite=None, limit=None, wall_s=0.0)
        self.last_seconds_ = time.perf_counter() - started
        return scores(result)

    @contextmanager
    def _reusing_requests(self) -> Iterator[None]:
        """lm-eval's `evaluate` builds every request again at each call (prompts, few-shot examples:
        a fifth of a probe's time on the demo world); the probe's are fixed, so a call reuses those
        built by `_check_lengths`, their answers cleared."""
        built = {name: list(task.instances) for name, task in self._loaded["tasks"].items()}

        def reuse(task: Any, instances: list[Any]) -> Any:
            def build_all_requests(*args: Any, **kwargs: Any) -> None:
                for instance in instances:
                    instance.resps, instance.filtered_resps = [], {}
                task._instances = list(instances)

            return build_all_requests

        for name, task in self._loaded["tasks"].items():
            task.build_all_requests = reuse(task, built[name])
        try:
            yield
        finally:
            for task in self._loaded["tasks"].values():
                del task.build_all_requests  # the class's method again


def _too_long(request: Any, n: int, window: int) -> None:
    raise ConfigError(
        f"eval.probe: task {request.task_name}, document {request.doc_id} needs {n} tokens (prompt and "
        f"continuation or generation), more than the model's window of {window}; lower the task's few-shot "
        "count (eval.task_overrides TASK.num_fewshot), eval.probe.max_gen_toks, or leave the task out"
    )


@contextmanager
def _no_request_bars() -> Iterator[None]:
    """lm-eval's `Task.build_all_requests` draws a progress bar per task at every call, with no switch."""
    from lm_eval.api import task as lm_eval_task

    bar = lm_eval_task.tqdm
    lm_eval_task.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        lm_eval_task.tqdm = bar


def _quiet_lm_eval() -> None:
    # lm-eval logs every request type and every in-memory model at INFO/WARNING, at every probe call
    for name in ("lm_eval", "lm_eval.models.huggingface", "lm_eval.api.task", "lm_eval.evaluator"):
        logging.getLogger(name).setLevel(logging.ERROR)


def probe_from_config(eval_config: EvalConfig, tokenizer: Any, max_length: int | None = None) -> TaskProbe:
    """The probe of `eval.probe` (tasks, items, seed, token cap) with `eval`'s data and task overrides.
    Whether to probe at all is the caller's decision (`cpt.probe.every_tokens`)."""
    section = eval_config.probe
    if not section.tasks:
        raise ConfigError(
            "cpt.probe.every_tokens is set but eval.probe.tasks is empty; name lm-eval tasks (e.g. ceval-valid, "
            "cmmlu, mmlu) or the demo world's (world_mmlu, world_ceval, ...), or set cpt.probe.every_tokens=0"
        )
    world = [t for t in section.tasks if t.startswith("world_")]
    if world and not eval_config.data_dir:
        raise ConfigError(
            f"eval.probe.tasks names the demo world's {', '.join(world)} but eval.data_dir is not set: point it "
            "at a world directory (almr world build), or name other tasks"
        )
    return TaskProbe(
        section.tasks, tokenizer, items_per_task=section.items_per_task, seed=section.seed,
        batch_size=section.batch_size, max_gen_toks=section.max_gen_toks, max_length=max_length,
        data_dir=eval_config.data_dir, overrides=eval_config.task_overrides,
        allow_code_execution=eval_config.allow_code_execution,
    )  # fmt: skip
