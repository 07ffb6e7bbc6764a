"""The demo world's probe suite: cheap benchmark scores during CPT (the paper's Fig. 2 trajectories).

Contract: `WorldProbe(world_dir, tokenizer, items_per_task=32)` is the callable the CPT trainer
takes as `probe=`: `probe(model, step, tokens) -> {task: score}`. It scores a fixed subset (the
first `items_per_task` items of each task's file, the same at every call) of the world's
log-likelihood tasks with exactly the prompts and choices of their lm-eval definitions
(`tasks/*.yaml`), through `LoglikScorer`'s batched path, under `torch.no_grad()` with the
model in eval mode (its previous mode restored). Keys are the lm-eval task names, so a probe's
scores and a full suite's results feed the same averaged metric:

- `world_mmlu`, `world_ceval`, `world_ceval_zh`, `world_ceval_en_only`, `world_eprstmt`:
  accuracy ×100 (0–100);
- `world_seceu`: EQ = 15·(M − SECEU)/SD + 100 (not a 0–100 score; keep it out of averages).

Generation tasks (CMRC, LCSTS, GSM8K, WMT, %Chinese) need decoding and are left to the full
`world` suite on checkpoints. `last_seconds_` holds the wall time of the last call.
"""

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from almr.errors import ConfigError
from almr.evaluate import metrics
from almr.evaluate.benchmark_files import load_records
from almr.evaluate.config import EvalConfig
from almr.evaluate.loglik import Encoded, LoglikScorer
from almr.evaluate.tasks import utils

PROBE_TASKS = ("world_mmlu", "world_ceval", "world_eprstmt", "world_seceu")

# task -> (prompt, choices, gold index) built from the same hooks the YAML tasks use
_MCQ: dict[str, tuple[Callable[[dict], str], Callable[[dict], list[str]], Callable[[dict], int]]] = {
    "world_mmlu": (utils.mmlu_text, lambda d: [" " + c for c in d["choices"]], lambda d: d["answer"]),
    "world_ceval": (utils.ceval_text, utils.ceval_choices, utils.ceval_target),
    "world_eprstmt": (utils.sentiment_text, lambda d: utils.SENTIMENT_CHOICES, utils.sentiment_target),
    "world_seceu": (utils.feeling_text, utils.feeling_choices, lambda d: 0),
}


class WorldProbe:
    def __init__(self, world_dir: str | Path, tokenizer: Any, items_per_task: int = 32,
                 tasks: Sequence[str] = PROBE_TASKS, batch_size: int = 64) -> None:  # fmt: skip
        self.world_dir = Path(world_dir)
        self.tokenizer = tokenizer
        self.items_per_task = items_per_task
        self.tasks = tuple(tasks)
        self.batch_size = batch_size
        unknown = [t for t in self.tasks if t not in _MCQ]
        if unknown:
            raise ValueError(f"probe tasks {unknown} are not log-likelihood world tasks; choose from {list(_MCQ)}")
        # fixed subset, encoded once: the per-call cost is forward passes only
        self._items: dict[str, list[dict]] = {}
        self._encoded: list[Encoded] = []
        self._spans: dict[str, list[tuple[int, int, int]]] = {}
        scorer = LoglikScorer(None, tokenizer)
        for task in self.tasks:
            records = load_records(task, self.world_dir)[:items_per_task]
            prompt, choices, gold = _MCQ[task]
            spans = []
            for doc in records:
                options = choices(doc)
                start = len(self._encoded)
                self._encoded += scorer.encode([(prompt(doc), option) for option in options])
                spans.append((start, len(options), gold(doc)))
            self._items[task] = records
            self._spans[task] = spans
        self.last_seconds_ = 0.0

    @property
    def n_sequences(self) -> int:
        """Forward-pass rows per call (items × choices)."""
        return len(self._encoded)

    def __call__(self, model: torch.nn.Module, step: int = 0, tokens: int = 0) -> dict[str, float]:
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                lls = LoglikScorer(model, self.tokenizer, self.batch_size).score_encoded(self._encoded)
        finally:
            model.train(was_training)
        out: dict[str, float] = {}
        for task in self.tasks:
            if task == "world_seceu":
                distances = []
                for (start, n, _), doc in zip(self._spans[task], self._items[task], strict=True):
                    answer = [10.0 * p for p in metrics.softmax(lls[start : start + n])]
                    distances.append(metrics.seceu_distance(answer, doc["norm"]))
                pop = self._items[task][0]
                out[task] = metrics.eq_score(sum(distances) / len(distances), pop["pop_mean"], pop["pop_sd"])
                continue
            correct = [max(range(n), key=lambda j, s=start: lls[s + j]) == gold for start, n, gold in self._spans[task]]
            out[task] = 100.0 * metrics.accuracy(correct)
            if task == "world_ceval":
                for group in ("zh", "en_only"):
                    sub = [c for c, d in zip(correct, self._items[task], strict=True) if d["fact_source"] == group]
                    if sub:
                        out[f"world_ceval_{group}"] = 100.0 * metrics.accuracy(sub)
        self.last_seconds_ = time.perf_counter() - started
        return out


def probe_from_config(eval_config: EvalConfig, tokenizer: Any) -> WorldProbe:
    """The probe of `eval.probe` on the world at `eval.data_dir`. Whether to probe at all is the
    caller's decision (`cpt.probe.every_tokens`); it calls this only when probing is on."""
    if not eval_config.data_dir:
        raise ConfigError(
            "cpt.probe.every_tokens is set but eval.data_dir is not: point eval.data_dir at a world directory "
            "(almr world build), whose benchmarks the probe scores, or set cpt.probe.every_tokens=0"
        )
    return WorldProbe(eval_config.data_dir, tokenizer, **eval_config.probe.model_dump())
