"""Test helpers for the CPT trainer: a tiny Llama directory and a deterministic in-memory loader
that follows the almr.data loader protocol (this process's micro-batches, in global order)."""

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

SOURCES = ("en", "zh", "math", "code")


def make_model_dir(path: Path, vocab: int = 256, hidden: int = 64, layers: int = 2, seq_len: int = 64) -> Path:
    """A Llama config.json plus a word-level tokenizer (token i ≥ 3 is written `t{i}`), no weights."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max(seq_len, 64),
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    config.save_pretrained(path)
    words = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, vocab)}}
    core = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(path)
    return path


def toy_sequence(index: int, seq_len: int, vocab: int, seed: int = 0) -> tuple[torch.Tensor, int]:
    """Sequence `index` of the stream: each source counts through its own band of 40 token ids with
    its own stride, so the next token is learnable from the current one (ids 8 … 167)."""
    rng = np.random.default_rng([seed, index])
    source = int(rng.integers(len(SOURCES)))
    start = int(rng.integers(40))
    tokens = 8 + 40 * source + (start + (source + 1) * np.arange(seq_len + 1)) % 40
    return torch.from_numpy(tokens.astype(np.int64)), source


class ToyLoader:
    """Global micro-pass p covers stream sequences [p·m·W, (p+1)·m·W); rank r takes its m of them.
    A global batch is thus the same set of sequences for any world size."""

    def __init__(self, micro: int, seq_len: int, vocab: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, delay: float = 0.0, bad_id_at: int | None = None) -> None:  # fmt: skip
        self.micro, self.seq_len, self.vocab = micro, seq_len, vocab
        self.rank, self.world_size, self.seed, self.delay = rank, world_size, seed, delay
        self.bad_id_at = bad_id_at
        self.consumed_sequences = 0

    def __iter__(self) -> Any:
        while True:
            first = self.consumed_sequences + self.rank * self.micro
            rows = [toy_sequence(first + i, self.seq_len, self.vocab, self.seed) for i in range(self.micro)]
            seqs = torch.stack([r[0] for r in rows])
            if self.bad_id_at is not None and self.consumed_sequences >= self.bad_id_at:
                seqs[0, 3] = self.vocab + 5
            self.consumed_sequences += self.micro * self.world_size
            if self.delay:
                time.sleep(self.delay)
            yield {"input_ids": seqs[:, :-1], "labels": seqs[:, 1:], "source_ids": torch.tensor([r[1] for r in rows])}

    def state_dict(self) -> dict[str, int]:
        return {"consumed_sequences": self.consumed_sequences}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consumed_sequences = int(state["consumed_sequences"])


def toy_validation(
    per_source: int, seq_len: int, vocab: int, seed: int = 0
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Held-out sequences per source, drawn from a stream index range training never reaches."""
    by_source: dict[str, list[torch.Tensor]] = {name: [] for name in SOURCES}
    index = 10**9
    while any(len(rows) < per_source for rows in by_source.values()):
        seq, source = toy_sequence(index, seq_len, vocab, seed)
        if len(by_source[SOURCES[source]]) < per_source:
            by_source[SOURCES[source]].append(seq)
        index += 1
    return {name: (torch.stack(rows)[:, :-1], torch.stack(rows)[:, 1:]) for name, rows in by_source.items()}


def train_toy(config: Any, **kwargs: Any) -> Any:
    """`train_cpt` on the model and cpt sections of a `toy_config` (loader=, validation=, ...)."""
    from almr.train.cpt import train_cpt

    return train_cpt(config.model, config.cpt, **kwargs)


def toy_config(tmp: Path, model_dir: Path, **cpt: Any) -> Any:
    """An AlmrConfig for a tiny CPU run; keyword arguments are dotted cpt.* overrides."""
    from almr.config import load_config

    overrides = {
        "batch.micro_batch_size": 4, "batch.global_batch_size": 8, "batch.seq_len": 32, "steps": 6,
        "optimizer.lr": 3e-3, "schedule.warmup_steps": 1, "run_dir": str(tmp / "run"), "device": "cpu",
    }  # fmt: skip
    overrides.update({key.replace("__", "."): value for key, value in cpt.items()})
    sets = [f"cpt.{key}={value}" for key, value in overrides.items()]
    return load_config(None, [f"model.name_or_path={model_dir}", "cpt.random_init=true", *sets])
