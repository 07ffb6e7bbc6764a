"""What the CPT trainer measures on the model between steps, and when: the held-out loss per
source (`Validator`) and a benchmark probe (`Prober`, the paper's Fig. 2 trajectories). Each
owns its "is it due" rule so the loop only asks."""

import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext

import torch

from almr.errors import ConfigError
from almr.train.loss import summed_loss, target_count
from almr.train.parallel import Distributed, all_reduce_sum

# {source: (input_ids [N, seq_len], labels [N, seq_len])}, labels already the next-token targets
Validation = Mapping[str, tuple[torch.Tensor, torch.Tensor]]
# probe(model, step, tokens) -> {task: score}
Probe = Callable[[torch.nn.Module, int, int], Mapping[str, float]]


class Validator:
    """Mean next-token loss per source over exactly its held-out sequences, every `every_steps`
    steps, at step 0 and after the last step; off when `every_steps` is 0 or there is no data."""

    def __init__(self, validation: Validation, micro_batch_size: int, every_steps: int, dist_env: Distributed,
                 precision: AbstractContextManager | None = None) -> None:  # fmt: skip
        self.validation = dict(validation)
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
        results = {source: self._mean_loss(model, inputs, labels) for source, (inputs, labels) in
                   self.validation.items()}  # fmt: skip
        model.train()
        return results

    def _mean_loss(self, model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
        env, micro = self.dist_env, self.micro_batch_size
        mine = torch.arange(env.rank, inputs.shape[0], env.world_size)
        rounds = math.ceil(math.ceil(inputs.shape[0] / env.world_size) / micro)
        totals = torch.zeros(2, dtype=torch.float64, device=env.device)
        for r in range(rounds):
            index = mine[r * micro : (r + 1) * micro]
            weight = 1.0
            if index.numel() == 0:
                index, weight = torch.tensor([0]), 0.0
            x, y = inputs[index].to(env.device), labels[index].to(env.device)
            loss = summed_loss(model, x, y, self.precision)
            totals += weight * torch.stack([loss.double(), target_count(y).double()])
        all_reduce_sum(totals)
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
