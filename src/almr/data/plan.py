"""The mixture plan: how many fixed-length sequences each source contributes, and whether the
sources can afford it — decided, and refused if impossible, before any training.

Contract
- `build_plan(data, mixture, batch, token_budget=None, previous=None, consumed=None) -> Plan`
  reads the manifests under `data.shard_dir` and returns the plan of one CPT phase:
  total sequences N = token budget / `batch.seq_len`, rounded up to whole global batches;
  per-source weights from `mixture.almr` and `sub_weights` (or explicit `weights`); the split
  tree of `almr.data.blend` and from it the exact count each source fills; the epochs that
  costs each source. It raises `DataError` for: unknown sources, weights that give a group
  with no source (an ALMR > 0 but no source tagged with the additional language, or < 1 and
  nothing else), a source needing more than `mixture.max_epochs` passes, missing or stale
  shards, and shards made with another tokenizer than `data.tokenizer`.
- A new phase (`previous` = the last phase's plan, `consumed` = the sequences it consumed,
  default all) continues each source at `start` = the sequences earlier phases took from
  it, so nothing is repeated; it must keep the seed, sequence length, tokenizer and shards.
- `Plan.save(path)` / `Plan.load(path)`: JSON with `hash`, the sha256 of everything else. The
  blend and the loader are pure functions of the plan, so the hash names the data order.
  `keyed_shuffle_above` (from `mixture.keyed_shuffle_above`) enters the hash only when it is not
  `KEYED_SHUFFLE_ABOVE`, so plans written before it keep their hashes; a new phase must keep it.
"""

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from almr.data import blend
from almr.data.config import KEYED_SHUFFLE_ABOVE, BatchConfig, DataConfig, MixtureConfig, SourceConfig
from almr.data.manifest import TokenizerInfo, files_changed, read_manifest, source_dir, tokenizer_info
from almr.durable import atomic_write_bytes
from almr.errors import DataError

PLAN_VERSION = 1


class PlanSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    language: str
    domain: str
    additional: bool  # tagged with the additional language: counts toward the ALMR
    weight: float  # target share of this phase's sequences (= tokens)
    sequences: int  # sequences this phase takes from the source (exact)
    start: int  # sequences earlier phases took: this phase continues the stream there
    sequences_per_epoch: int  # packed training sequences in one pass over the train split
    epochs: float  # passes over the train split after this phase, earlier phases included
    train_tokens: int
    valid_tokens: int
    valid_sequences: int
    chinese_share: float  # measured on the train split at tokenization
    shard: str  # folder with train/valid .bin/.idx and manifest.json
    input_fingerprint: str  # the manifest's: which files and tokenizer made the shards


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = PLAN_VERSION
    hash: str = ""
    seq_len: int
    global_batch_size: int
    total_sequences: int
    steps: int
    token_budget: int
    seed: int
    max_epochs: float
    additional_language: str
    almr: float  # target ALMR of this phase: the root split of the tree
    tokenizer: dict[str, Any]  # path, fingerprint, eos_id, vocab_size
    sources: list[PlanSource]
    tree: dict[str, Any]
    previous: dict[str, Any] | None = None  # {"hash", "consumed_sequences"} of the phase before
    # sources with more samples per epoch are shuffled by a keyed bijection (almr.data.shuffle)
    keyed_shuffle_above: int = KEYED_SHUFFLE_ABOVE

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def compute_hash(self) -> str:
        body = self.model_dump(mode="json", exclude={"hash"})
        if body["keyed_shuffle_above"] == KEYED_SHUFFLE_ABOVE:  # the default: plans made before it keep their hash
            del body["keyed_shuffle_above"]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()

    def counts_at(self, consumed: int) -> list[int]:
        """Sequences each source has filled among the first `consumed` of this phase."""
        return [int(c) for c in blend.counts_at(self.tree, consumed, len(self.sources))]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, self.model_dump_json(indent=1).encode("utf-8"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"plan {path} does not exist; write one with `almr data plan CONFIG`")
        try:
            plan = cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise DataError(f"plan {path} is not a valid plan file: {err}") from None
        if plan.hash != plan.compute_hash():
            raise DataError(f"plan {path}: its hash does not match its content; it was edited — rebuild it")
        return plan


def build_plan(
    data: DataConfig,
    mixture: MixtureConfig,
    batch: BatchConfig,
    token_budget: int | None = None,
    previous: Plan | None = None,
    consumed: int | None = None,
) -> Plan:
    """The plan of one phase; raises DataError for anything that would fail or repeat data."""
    known = {s.name: s for s in data.sources}
    names = _taking_part(known, mixture)
    budget = token_budget if token_budget is not None else mixture.token_budget
    if budget is None:
        raise DataError("no token budget: set mixture.token_budget (or cpt.total_tokens)")

    sources = [known[n] for n in names]
    weights = _weights(names, [s.language == mixture.additional_language for s in sources], mixture)
    if previous is not None:
        # sources of earlier phases stay in the plan at weight 0, so later phases still know their offsets
        kept = _earlier_sources(previous, names, known)
        sources += kept
        names += [s.name for s in kept]
        weights += [0.0] * len(kept)
    additional = [s.language == mixture.additional_language for s in sources]
    almr = sum(w for w, a in zip(weights, additional, strict=True) if a)

    tok = tokenizer_info(data.tokenizer)
    manifests = [_checked_manifest(data.shard_dir, s, tok) for s in sources]

    seq_len, gbs = batch.seq_len, batch.global_batch_size
    total = math.ceil(budget / seq_len / gbs) * gbs
    tree = blend.build_tree(weights, additional)
    counts = blend.counts_at(tree, total, len(names))

    starts = [0] * len(names)
    prev_info = None
    if previous is not None:
        starts, prev_info = _continue_from(previous, consumed, names, manifests, seq_len, mixture.seed, tok.fingerprint,
                                           mixture.keyed_shuffle_above)

    plan_sources = [
        _plan_source(src, manifest, seq_len, data.shard_dir, additional=additional[i], weight=weights[i],
                     sequences=int(counts[i]), start=starts[i])
        for i, (src, manifest) in enumerate(zip(sources, manifests, strict=True))
    ]
    _check_epochs(plan_sources, mixture.max_epochs)
    plan = Plan(
        seq_len=seq_len, global_batch_size=gbs, total_sequences=total, steps=total // gbs, token_budget=budget,
        seed=mixture.seed, max_epochs=mixture.max_epochs, additional_language=mixture.additional_language,
        almr=almr, tokenizer=tok.record(), sources=plan_sources, tree=tree, previous=prev_info,
        keyed_shuffle_above=mixture.keyed_shuffle_above,
    )
    plan.hash = plan.compute_hash()
    return plan


def default_plan_path(plan: Plan, shard_dir: str | Path) -> Path:
    """Where `almr data plan` writes a plan unless told: SHARD_DIR/plan-HASH.json (12 hex digits)."""
    return Path(shard_dir) / f"plan-{plan.hash[:12]}.json"


def _taking_part(known: dict[str, SourceConfig], mixture: MixtureConfig) -> list[str]:
    """The names of the sources taking part; every source the mixture names must be known and take part."""
    names = list(mixture.sources) if mixture.sources is not None else list(known)
    for key, listed in (("mixture.sources", names), ("mixture.weights", list(mixture.weights or {})),
                        ("mixture.sub_weights", list(mixture.sub_weights))):
        unknown = [n for n in listed if n not in known]
        if unknown:
            raise DataError(f"{key}: unknown source(s) {', '.join(unknown)}; known (data.sources): {', '.join(known)}")
        outside = [n for n in listed if n not in names]
        if outside:
            raise DataError(f"{key}: {', '.join(outside)} not in mixture.sources; add them there or remove them here")
    if not names:
        raise DataError("no sources: list corpora under data.sources")
    return names


def _earlier_sources(previous: Plan, names: list[str], known: dict[str, SourceConfig]) -> list[SourceConfig]:
    """Sources of the previous phase that this one leaves out (they stay in the plan at weight 0)."""
    kept = []
    for name in previous.names:
        if name not in names:
            if name not in known:
                raise DataError(f"source {name} of the previous phase is no longer in data.sources; keep it there")
            kept.append(known[name])
    return kept


def _plan_source(
    src: SourceConfig, manifest: dict[str, Any], seq_len: int, shard_dir: str, *, additional: bool, weight: float,
    sequences: int, start: int,
) -> PlanSource:
    train = manifest["splits"]["train"]
    valid = manifest["splits"].get("valid", {"tokens": 0})
    per_epoch = max(train["tokens"] - 1, 0) // seq_len
    need = start + sequences
    if need and not per_epoch:
        raise DataError(f"source {src.name}: {train['tokens']} train tokens, fewer than one sequence of {seq_len + 1}")
    return PlanSource(
        name=src.name, language=src.language, domain=src.domain, additional=additional, weight=weight,
        sequences=sequences, start=start, sequences_per_epoch=per_epoch, epochs=need / per_epoch if per_epoch else 0.0,
        train_tokens=train["tokens"], valid_tokens=valid["tokens"],
        valid_sequences=max(valid["tokens"] - 1, 0) // seq_len, chinese_share=train["chinese_share"],
        shard=str(source_dir(shard_dir, src.name).resolve()), input_fingerprint=manifest["input_fingerprint"],
    )


def _check_epochs(sources: list[PlanSource], max_epochs: float) -> None:
    too_many = [
        f"{s.name} needs {s.epochs:.2f} epochs ({s.start + s.sequences:,} sequences of {s.sequences_per_epoch:,} "
        "per epoch)"
        for s in sources
        if s.epochs > max_epochs
    ]
    if too_many:
        raise DataError(
            f"plan needs more than mixture.max_epochs = {max_epochs} passes over: " + "; ".join(too_many)
            + ". Lower the token budget or these sources' weights, add data, or raise mixture.max_epochs"
        )


def _weights(names: list[str], additional: list[bool], mixture: MixtureConfig) -> list[float]:
    if mixture.weights is not None:
        raw = [mixture.weights.get(n, 0.0) for n in names]
        total = sum(raw)
        if total <= 0:
            raise DataError("mixture.weights: all zero for the sources taking part; give one a positive weight")
        return [w / total for w in raw]
    if mixture.almr is None:
        raise DataError("set mixture.almr (the additional-language token share) or explicit mixture.weights")
    almr = mixture.almr
    sub = [mixture.sub_weights.get(n, 1.0) for n in names]
    group = sum(w for w, a in zip(sub, additional, strict=True) if a)
    rest = sum(w for w, a in zip(sub, additional, strict=True) if not a)
    lang = mixture.additional_language
    if almr > 0 and group <= 0:
        raise DataError(
            f"mixture.almr = {almr} but no source taking part is tagged language '{lang}' with a positive "
            f"sub-weight; tag one (data.sources[].language) or set mixture.almr = 0"
        )
    if almr < 1 and rest <= 0:
        raise DataError(
            f"mixture.almr = {almr} leaves {1 - almr:.3g} of the tokens to other sources, but none takes part with "
            f"a positive sub-weight; add one or set mixture.almr = 1"
        )
    return [almr * w / group if a else (1 - almr) * w / rest for w, a in zip(sub, additional, strict=True)]


def _checked_manifest(shard_dir: str, source: SourceConfig, tok: TokenizerInfo) -> dict[str, Any]:
    manifest = read_manifest(shard_dir, source.name)
    folder = source_dir(shard_dir, source.name)
    if manifest is None:
        raise DataError(f"source {source.name}: no complete shards in {folder}; run `almr data tokenize` first")
    made_with = manifest["tokenizer"]
    if made_with["fingerprint"] != tok.fingerprint:
        raise DataError(
            f"source {source.name}: shards in {folder} were made with tokenizer {made_with['path']} "
            f"(fingerprint {made_with['fingerprint'][:12]}), but this run uses {tok.path} "
            f"(fingerprint {tok.fingerprint[:12]}); re-run `almr data tokenize` with this run's tokenizer"
        )
    if files_changed(manifest, source):
        raise DataError(f"source {source.name}: its files changed since tokenization; re-run `almr data tokenize`")
    if "train" not in manifest["splits"]:
        raise DataError(f"source {source.name}: no train split in {folder}")
    return manifest


def _continue_from(
    previous: Plan, consumed: int | None, names: list[str], manifests: list[dict[str, Any]], seq_len: int,
    seed: int, fingerprint: str, keyed_above: int = KEYED_SHUFFLE_ABOVE,
) -> tuple[list[int], dict[str, Any]]:
    consumed = previous.total_sequences if consumed is None else consumed
    if not 0 <= consumed <= previous.total_sequences:
        raise DataError(
            f"consumed = {consumed}: the previous phase has {previous.total_sequences} sequences; "
            "pass the loader's consumed_sequences from its last checkpoint"
        )
    for what, ours, theirs in (("mixture.seed", seed, previous.seed), ("sequence length", seq_len, previous.seq_len),
                               ("tokenizer fingerprint", fingerprint, previous.tokenizer["fingerprint"]),
                               ("mixture.keyed_shuffle_above", keyed_above, previous.keyed_shuffle_above)):
        if ours != theirs:
            raise DataError(f"a new phase must keep the {what} of the previous one ({theirs}), not {ours}")
    taken = previous.counts_at(consumed)
    before = {s.name: (s.start + taken[i], s.input_fingerprint) for i, s in enumerate(previous.sources)}
    starts = []
    for name, manifest in zip(names, manifests, strict=True):
        start, fp = before.get(name, (0, manifest["input_fingerprint"]))
        if fp != manifest["input_fingerprint"]:
            raise DataError(f"source {name}: its shards changed since the previous phase; continuing would mix streams")
        starts.append(start)
    return starts, {"hash": previous.hash, "consumed_sequences": consumed}
