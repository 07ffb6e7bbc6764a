"""The lm-eval model the probe scores through: HFLM over an in-memory (possibly sharded) model, with
`LoglikScorer`'s batched log-likelihoods, and the work split across the processes of a process
group — each process scores its share, all run the same number of forward passes (collective
under FSDP2), and every process gets every result."""

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from lm_eval.models.huggingface import HFLM

from almr.evaluate.loglik import Encoded, LoglikScorer
from almr.train.parallel import data_parallel_rank

# (context, continuation) pairs -> their tokens, as the probe caches them
Encoder = Callable[[Sequence[tuple[str, str]]], list[Encoded]]


def _rank_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


class ProbeLM(HFLM):
    def __init__(self, model: torch.nn.Module, tokenizer: Any, encode: Encoder, *, batch_size: int,
                 max_length: int | None, max_gen_toks: int | None) -> None:  # fmt: skip
        kwargs: dict[str, Any] = {"max_length": max_length} if max_length else {}
        super().__init__(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                         max_gen_toks=max_gen_toks or 256, **kwargs)  # fmt: skip
        self._encode_cached = encode
        self._probe_batch_size = batch_size

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        encoded = self._encode_cached([tuple(r.args) for r in requests])
        return LoglikScorer(self.model, self.tokenizer, self._probe_batch_size, self.max_length).score_with_greedy(
            encoded
        )

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        rank, world, group = data_parallel_rank()  # the tp ranks of one replica decode the same requests
        if world == 1:
            return super().generate_until(requests, disable_tqdm=True)
        # HFLM batches each set of generation settings apart: split each set evenly, so that every
        # process runs the same number of generate() calls
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(i)
        out = [""] * len(requests)
        for members in groups.values():
            mine = members[rank::world]
            rounds = -(-len(members) // world)
            padded = [requests[i] for i in mine] + [requests[members[-1]]] * (rounds - len(mine))
            texts = super().generate_until(padded, disable_tqdm=True)[: len(mine)]
            gathered: list[list[str]] = [[] for _ in range(world)]
            dist.all_gather_object(gathered, texts, group=group)
            for k, i in enumerate(members):
                out[i] = gathered[k % world][k // world]
        return out

    def _model_generate(self, context: Any, max_length: int, stop: list[str], **kwargs: Any) -> Any:
        if _rank_world()[1] > 1:
            kwargs["synced_gpus"] = True  # sharded weights: every process runs every decoding step
        return super()._model_generate(context, max_length, stop, **kwargs)
