"""What the CPT trainer measures on the model between steps, and when: the held-out loss per
source (`Validator`) and a benchmark probe (`Prober`, the paper's Fig. 2 trajectories). Each
owns its "is it due" rule so the loop only asks."""

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import numpy as np
import torch

from almr.errors import ConfigError, DataError
from almr.train.loss import summed_loss, target_count
from almr.train.parallel import Distributed, all_reduce_sum


class HeldOutSet(Protocol):
    """A source's held-out sequences, read per batch (almr.data.loader.HeldOut reads them from the
    memory-mapped shard): `batch(index)` -> (input_ids, labels) [len(index), seq_len], labels
    already the next-token targets."""

    def __len__(self) -> int: ...
    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]: ...


class InMemory:
    """Held-out sequences given as tensors (input_ids [N, seq_len], labels [N, seq_len])."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        if inputs.shape != labels.shape or inputs.ndim != 2:
            raise DataError(
                f"a validation set: input_ids {tuple(inputs.shape)} and labels {tuple(labels.shape)} "
                "must both be [n, seq_len]"
            )
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.from_numpy(np.asarray(index, dtype=np.int64))
        return self.inputs[index], self.labels[index]


# {source: held-out set, or (input_ids, labels) tensors}
Validation = Mapping[str, HeldOutSet | tuple[torch.Tensor, torch.Tensor]]


def held_out_sets(validation: Validation) -> dict[str, HeldOutSet]:
    return {name: InMemory(*value) if isinstance(value, tuple) else value for name, value in validation.items()}


def selected_count(total: int, max_sequences: int | None) -> int:
    """How many of a set's `total` sequences validation scores."""
    return total if max_sequences is None else min(total, max_sequences)


def selection(total: int, max_sequences: int | None, positions: np.ndarray) -> np.ndarray:
    """The sequences at `positions` (0 ≤ k < selected_count) of those validation scores: all
    `total`, or `max_sequences` spread evenly over the set (position k is sequence
    ⌊k · total / count⌋: distinct, in order, the first included). Arithmetic on the set's size
    alone, so every rank and every resume picks the same ones, and nothing per sequence is kept."""
    return np.asarray(positions, dtype=np.int64) * total // max(selected_count(total, max_sequences), 1)


def selected_batches(
    validation: Validation, max_sequences: int | None, size: int = 256
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(source, input_ids, labels) of every sequence validation scores, `size` at a time: what the
    trainer checks against the vocabulary before any compute, in bounded memory."""
    for name, held in held_out_sets(validation).items():
        count = selected_count(len(held), max_sequences)
        for start in range(0, count, size):
            yield name, *held.batch(selection(len(held), max_sequences, np.arange(start, min(start + size, count))))


# probe(model, step, tokens) -> {task: score}
Probe = Callable[[torch.nn.Module, int, int], Mapping[str, float]]


class Validator:
    """Mean next-token loss per source over exactly its held-out sequences (at most
    `max_sequences` of each, `selection`), every `every_steps` steps, at step 0 and after the last
    step; off when `every_steps` is 0 or there is no data. Sequences are read one micro-batch at a
    time."""

    def __init__(self, validation: Validation, micro_batch_size: int, every_steps: int, dist_env: Distributed,
                 precision: AbstractContextManager | None = None, *,
                 max_sequences: int | None = None) -> None:  # fmt: skip
        self.validation = held_out_sets(validation)
        self.max_sequences = max_sequences
        self.micro_batch_size = micro_batch_size
        self.every_steps = every_steps
        self.dist_env = dist_env
        self.precision = precision or nullcontext()

    def should_validate(self, step: int, last_step: int) -> bool:
        if not (self.validation and self.every_steps):
            return False
        return step % self.every_steps == 0 or step == last_step

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        """Each sequence counted once: process r takes sequences r, r+W, …; all processes run the
        same number of forward passes (FSDP gathers weights collectively), a process with none
        left repeats one at weight 0."""
        model.eval()
        results = {source: self._mean_loss(model, held) for source, held in self.validation.items()}
        model.train()
        return results

    def _mean_loss(self, model: torch.nn.Module, held: HeldOutSet) -> float:
        env, micro = self.dist_env, self.micro_batch_size
        total = len(held)
        count = selected_count(total, self.max_sequences)
        # by data-parallel rank: the tensor-parallel ranks of one replica score the same sequences;
        # positions computed per round, so nothing here grows with the set either
        rounds = math.ceil(math.ceil(count / env.dp_size) / micro)
        totals = torch.zeros(2, dtype=torch.float64, device=env.device)
        for r in range(rounds):
            index = env.dp_rank + env.dp_size * np.arange(r * micro, (r + 1) * micro)  # this rank's k-th: r + k·W
            index = index[index < count]
            weight = 1.0
            if index.size == 0:
                index, weight = np.zeros(1, dtype=np.int64), 0.0
            x, y = held.batch(selection(total, self.max_sequences, index))
            x, y = x.to(env.device), y.to(env.device)
            loss = summed_loss(model, x, y, self.precision)
            totals += weight * torch.stack([loss.double(), target_count(y).double()])
        all_reduce_sum(totals, env.dp_group)
        return (totals[0] / totals[1]).item()


class Prober:
    """Runs `probe` before the first step and each time training crosses a multiple of
    `every_tokens`; off when `every_tokens` is 0. A cadence without a probe is refused."""

    def __init__(self, probe: Probe | None, every_tokens: int, precision: AbstractContextManager | None = None) -> None:
        if probe is None and every_tokens:
            raise ConfigError(
                "cpt.probe.every_tokens is set but no probe suite was given; pass probe= to train_cpt, "
                "or set cpt.probe.every_tokens=0"
            )
        self.probe = probe
        self.every_tokens = every_tokens
        self.precision = precision or nullcontext()

    @property
    def enabled(self) -> bool:
        return self.probe is not None and self.every_tokens > 0

    def should_probe(self, tokens_before: int, tokens_after: int) -> bool:
        return self.enabled and tokens_after // self.every_tokens > tokens_before // self.every_tokens

    def __call__(self, model: torch.nn.Module, step: int, tokens: int) -> dict[str, float]:
        assert self.probe is not None
        model.eval()
        with torch.no_grad(), self.precision:
            scores = dict(self.probe(model, step, tokens))
        model.train()
        return scores
