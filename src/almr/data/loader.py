"""The packed, blended loader that the CPT trainer iterates, and the per-source validation sets.

Contract
    loader = PackedLoader(plan, micro_batch_size, dp_rank=0, dp_size=1, consumed_sequences=0)
    for batch in loader:           # this rank's micro-batches, in global order
        batch["input_ids"]         # torch.LongTensor [micro, seq_len]
        batch["labels"]            # torch.LongTensor [micro, seq_len]; labels[:, t] is the token after
                                   #   input_ids[:, t]: compute cross-entropy WITHOUT shifting
        batch["source_ids"]        # torch.LongTensor [micro]: index into plan.names
    loader.state_dict() -> {"consumed_sequences": int}; loader.load_state_dict(state)
    validation_sequences(plan, name) -> {"input_ids", "labels"}  # [N, seq_len], fixed, in order
    held_out(plan, name) -> HeldOut  # the same sequences, read per batch from the memory map:
                                     #   len(), batch(index) -> (input_ids, labels)

Packing (Megatron convention): a source's training split is one token stream (documents in
file order, each ending in EOS); packed sample p is tokens[p·L : p·L + L + 1], so consecutive
samples overlap by one token and a pass holds (tokens − 1) // L samples. A source tokenized
in parts is read as one stream, its parts in order: the same stream as one shard's. A source is packed
before mixing, so its share of sequences is its share of tokens. Its samples are shuffled
per epoch by a permutation seeded from (plan seed, source name, epoch) — a materialized one
(PCG64, 4 bytes per sample) up to `plan.keyed_shuffle_above` samples per epoch, above it a keyed
bijection computed per index (`almr.data.shuffle`, nothing stored); the k-th sequence a
source contributes over the whole run (earlier phases included: plan `start`) is sample
perm_e[r] with e, r = divmod(start + k, samples per epoch).

Order and state: position n of the phase (0 ≤ n < plan.total_sequences) comes from the split
tree of `almr.data.blend`. Global batch g is positions [g·B, (g+1)·B); rank r of dp_size takes
the contiguous slice [g·B + r·B/dp, g·B + (r+1)·B/dp), cut into micro-batches in order, so
the global order does not depend on the number of ranks. The loader's whole state is the
number of sequences all ranks together have consumed (it advances by micro × dp_size per
micro-batch): a loader built with consumed_sequences = k·B yields exactly what an
uninterrupted one yields after step k.
"""

import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from almr.data import blend
from almr.data.manifest import MANIFEST, read_manifest, shard_prefixes
from almr.data.plan import Plan
from almr.data.shards import IndexedShard, ShardParts, open_shards
from almr.data.shuffle import KeyedPermutation, epoch_key
from almr.errors import DataError


class SourceStream:
    """One source's packed training samples in their per-epoch shuffled order."""

    def __init__(
        self, shard: IndexedShard | ShardParts, seq_len: int, seed: int, name: str, keyed_above: int | None = None
    ) -> None:
        self.tokens = shard.tokens  # documents back to back: `_open_split` has made sure
        self.seq_len = seq_len
        self.per_epoch = max(len(self.tokens) - 1, 0) // seq_len
        self._key = [seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF,
                     int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")]
        self._perms: dict[int, np.ndarray] = {}
        self.seed, self.name = seed, name
        # above the threshold, the order is a keyed bijection evaluated per index: no array of per_epoch entries
        self.keyed = keyed_above is not None and self.per_epoch > keyed_above

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:  # a run crosses epochs in order: keep the current and the next
                self._perms.pop(min(self._perms))
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([*self._key, epoch])))
            dtype = np.int32 if self.per_epoch < 2**31 else np.int64
            self._perms[epoch] = rng.permutation(self.per_epoch).astype(dtype)
        return self._perms[epoch]

    def samples(self, ranks: np.ndarray) -> np.ndarray:
        """Packed sample indices of stream ranks (0 = the first sequence this source ever gives)."""
        epochs, within = np.divmod(ranks, self.per_epoch)
        out = np.empty(len(ranks), dtype=np.int64)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            if self.keyed:
                out[sel] = KeyedPermutation(self.per_epoch, epoch_key(self.seed, self.name, int(epoch)))(within[sel])
            else:
                out[sel] = self.permutation(int(epoch))[within[sel]]
        return out

    def windows(self, samples: np.ndarray) -> np.ndarray:
        """Tokens of packed samples: int64 [len(samples), seq_len + 1]."""
        index = samples[:, None] * self.seq_len + np.arange(self.seq_len + 1)
        return np.asarray(self.tokens[index], dtype=np.int64)


def _open_split(plan: Plan, i: int, split: str, shard_dir: str | Path | None) -> IndexedShard | ShardParts:
    src = plan.sources[i]
    folder = Path(shard_dir) / src.name if shard_dir is not None else Path(src.shard)
    manifest = read_manifest(folder.parent, folder.name)
    if manifest is None:
        raise DataError(f"source {src.name}: no complete shards in {folder}; run `almr data tokenize`")
    if manifest["tokenizer"]["fingerprint"] != plan.tokenizer["fingerprint"]:
        raise DataError(
            f"source {src.name}: shards in {folder} were made with tokenizer {manifest['tokenizer']['path']}, "
            f"not the plan's {plan.tokenizer['path']}; re-tokenize or rebuild the plan"
        )
    if manifest["input_fingerprint"] != src.input_fingerprint:
        raise DataError(
            f"source {src.name}: shards in {folder} are not the ones the plan was made from; rebuild the plan"
        )
    shard = open_shards(shard_prefixes(folder, manifest, split))
    contiguous = manifest["splits"][split].get("contiguous")
    if contiguous is None:  # a manifest from before it was recorded: checked here, on every start, until recorded
        warnings.warn(
            f"source {src.name}: {folder / MANIFEST} does not record whether its {split} documents lie back to back, "
            "so every process checks the whole index at each start; run `almr data tokenize` once (nothing is "
            "re-tokenized) to record it",
            stacklevel=3,
        )
        contiguous = shard.contiguous()
    if not contiguous:
        raise DataError(f"{shard.prefix}: documents are not stored back to back; cannot pack it as one stream")
    return shard


class PackedLoader:
    """Micro-batches of this data-parallel rank, in the plan's global order, from any step."""

    def __init__(
        self, plan: Plan, micro_batch_size: int, dp_rank: int = 0, dp_size: int = 1, consumed_sequences: int = 0,
        shard_dir: str | Path | None = None,
    ) -> None:
        gbs = plan.global_batch_size
        if dp_size < 1 or not 0 <= dp_rank < dp_size:
            raise DataError(f"dp_rank {dp_rank} is not in [0, dp_size = {dp_size})")
        if gbs % (micro_batch_size * dp_size):
            raise DataError(
                f"global batch {gbs} is not divisible by micro_batch_size × dp_size = {micro_batch_size} × {dp_size}"
            )
        self.plan = plan
        self.micro_batch_size = micro_batch_size
        self.dp_rank = dp_rank
        self.dp_size = dp_size
        self.per_rank = gbs // dp_size
        self.step_sequences = micro_batch_size * dp_size  # sequences all ranks consume per micro-batch
        self.micro_batches_per_step = gbs // self.step_sequences
        self.streams: dict[int, SourceStream] = {}
        for i, src in enumerate(plan.sources):
            if src.sequences:
                stream = SourceStream(_open_split(plan, i, "train", shard_dir), plan.seq_len, plan.seed, src.name,
                                      keyed_above=plan.keyed_shuffle_above)
                if stream.per_epoch != src.sequences_per_epoch:
                    raise DataError(f"source {src.name}: shard has {stream.per_epoch} sequences per epoch, "
                                    f"the plan {src.sequences_per_epoch}; rebuild the plan")
                self.streams[i] = stream
        self.consumed_sequences = 0
        self.load_state_dict({"consumed_sequences": consumed_sequences})

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What the data order depends on besides the position: the plan's hash and each source's
        input fingerprint (files and tokenizer). The trainer keeps it with every checkpoint and
        refuses to resume on other data."""
        return {"plan": self.plan.hash, "sources": {s.name: s.input_fingerprint for s in self.plan.sources}}

    def state_dict(self) -> dict[str, int]:
        return {"consumed_sequences": self.consumed_sequences}

    def load_state_dict(self, state: dict[str, int]) -> None:
        consumed = int(state["consumed_sequences"])
        if not 0 <= consumed <= self.plan.total_sequences or consumed % self.step_sequences:
            raise DataError(
                f"consumed_sequences = {consumed}: must be a multiple of micro_batch_size × dp_size = "
                f"{self.step_sequences} in [0, {self.plan.total_sequences}]"
            )
        self.consumed_sequences = consumed

    def __len__(self) -> int:
        """Micro-batches this rank has left to yield."""
        return (self.plan.total_sequences - self.consumed_sequences) // self.step_sequences

    def positions(self, consumed: int) -> np.ndarray:
        """Phase positions of this rank's micro-batch once `consumed` sequences are consumed."""
        gbs = self.plan.global_batch_size
        step, offset = divmod(consumed, gbs)
        micro = offset // self.step_sequences
        first = step * gbs + self.dp_rank * self.per_rank + micro * self.micro_batch_size
        return np.arange(first, first + self.micro_batch_size, dtype=np.int64)

    def sequences(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source ids, tokens int64 [n, seq_len + 1]) of phase positions."""
        sources, ranks = blend.assign(self.plan.tree, positions)
        windows = np.empty((len(positions), self.plan.seq_len + 1), dtype=np.int64)
        for i in np.unique(sources):
            sel = sources == i
            stream = self.streams[int(i)]
            windows[sel] = stream.windows(stream.samples(ranks[sel] + self.plan.sources[int(i)].start))
        return sources, windows

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while self.consumed_sequences < self.plan.total_sequences:
            sources, windows = self.sequences(self.positions(self.consumed_sequences))
            tokens = torch.from_numpy(windows)
            batch = {
                "input_ids": tokens[:, :-1].contiguous(),
                "labels": tokens[:, 1:].contiguous(),
                "source_ids": torch.from_numpy(sources),
            }
            # counted before the yield: a checkpoint taken after using this batch resumes after it
            self.consumed_sequences += self.step_sequences
            yield batch


class HeldOut:
    """A source's held-out sequences, packed in order without shuffling (sequence k is tokens
    [k·L, k·L + L + 1)), read from the memory-mapped shard only for the sequences asked for, in
    the shard's own token type until then: nothing grows with the held-out set."""

    def __init__(self, shard: IndexedShard | ShardParts, seq_len: int) -> None:
        self.tokens = shard.tokens
        self.seq_len = seq_len

    def __len__(self) -> int:
        return max(len(self.tokens) - 1, 0) // self.seq_len

    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, labels) LongTensors [len(index), seq_len] of sequences `index`, labels already shifted."""
        window = np.asarray(index, dtype=np.int64)[:, None] * self.seq_len + np.arange(self.seq_len + 1)
        tokens = torch.from_numpy(np.asarray(self.tokens[window], dtype=np.int64))
        return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def held_out(plan: Plan, name: str, shard_dir: str | Path | None = None) -> HeldOut:
    """Source `name`'s held-out sequences, read lazily (what the trainer validates on)."""
    if name not in plan.names:
        raise DataError(f"unknown source {name}; the plan has {', '.join(plan.names)}")
    i = plan.names.index(name)
    if not plan.sources[i].valid_sequences:
        raise DataError(f"source {name} has no validation sequences of {plan.seq_len + 1} tokens; add valid files")
    return HeldOut(_open_split(plan, i, "valid", shard_dir), plan.seq_len)


def validation_sequences(
    plan: Plan, name: str, max_sequences: int | None = None, shard_dir: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The first `max_sequences` (default: all) of a source's held-out sequences in memory:
    {"input_ids", "labels"} LongTensors [N, seq_len], labels already shifted as in training."""
    sequences = held_out(plan, name, shard_dir)
    count = len(sequences) if max_sequences is None else min(len(sequences), max_sequences)
    inputs, labels = sequences.batch(np.arange(count))
    return {"input_ids": inputs, "labels": labels}
