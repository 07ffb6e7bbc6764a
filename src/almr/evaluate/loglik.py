"""Batched log-likelihood of continuations: the probe's fast path for multiple-choice scoring.

Contract: `LoglikScorer(model, tokenizer).score(pairs)` returns, for each `(context,
continuation)`, the sum of the log-probabilities of the continuation's tokens given the
context — the number lm-eval's `HFLM.loglikelihood` returns, tokenized the same way (trailing
spaces of the context move to the continuation; the continuation's tokens are those of
`encode(context + continuation)` after the tokens of `encode(context)`, with the tokenizer's
default special tokens), so accuracies agree with lm-eval's on the same items.

What makes it cheaper than lm-eval's default path: encoding is done once per item set
(`encode`), and requests are packed into length-sorted batches of up to `batch_size`
sequences with one forward pass each and no per-request bookkeeping.
"""

from collections.abc import Sequence
from typing import Any

import torch

Encoded = tuple[list[int], list[int]]


class LoglikScorer:
    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 64, max_length: int | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length

    def encode(self, pairs: Sequence[tuple[str, str]]) -> list[Encoded]:
        out = []
        for context, continuation in pairs:
            spaces = len(context) - len(context.rstrip())
            if spaces:
                context, continuation = context[:-spaces], context[-spaces:] + continuation
            whole = self.tokenizer(context + continuation)["input_ids"]
            ctx = self.tokenizer(context)["input_ids"]
            out.append((ctx, whole[len(ctx) :]))
        return out

    @torch.no_grad()
    def score_encoded(self, encoded: Sequence[Encoded]) -> list[float]:
        model = self.model
        device = next(model.parameters()).device
        limit = self.max_length or getattr(model.config, "max_position_embeddings", 2048)
        rows = []
        for ctx, cont in encoded:
            seq = (ctx + cont)[-(limit + 1) :]  # left-truncate as lm-eval does
            rows.append((seq[:-1], len(cont)))
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        result = [0.0] * len(rows)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = len(rows[idx[0]][0])
            ids = torch.zeros(len(idx), width, dtype=torch.long)
            mask = torch.zeros(len(idx), width, dtype=torch.long)
            for b, i in enumerate(idx):
                seq = rows[i][0]
                ids[b, : len(seq)] = torch.tensor(seq)
                mask[b, : len(seq)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1)
            for b, i in enumerate(idx):
                inputs, n_cont = rows[i]
                full = encoded[i][0] + encoded[i][1]
                targets = torch.tensor(full[-n_cont:], device=logprobs.device)
                positions = torch.arange(len(inputs) - n_cont, len(inputs), device=logprobs.device)
                result[i] = float(logprobs[b, positions, targets].sum())
        return result

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return self.score_encoded(self.encode(pairs))
