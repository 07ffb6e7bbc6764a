"""Extend a BPE tokenizer with tokens of the additional language, and resize the model to match.

Contract of `extend_vocabulary(config)`:

- **Base**: the tokenizer of `data.tokenizer` (else `model.name_or_path`), which must be a fast
  BPE tokenizer (byte-level, as Llama-3, Qwen and GPT-2, or not); the model of `model.name_or_path`.
- **New tokens**: a BPE with the base's normalizer and pre-tokenizer is trained on the training
  files of the sources tagged `mixture.additional_language`; its merges are walked in the order
  it learned them and every merge whose result the base vocabulary lacks becomes a new token — the
  first `vocab.new_tokens` of them, or all seen `vocab.min_frequency` times. Because a merge's two
  parts are base tokens or earlier new tokens, the new merges compose with the base's: they are
  appended after all base merges, so text that no new merge applies to encodes exactly as before.
- **Ids**: new tokens take the ids after the largest existing one (special and chat tokens keep
  theirs, so a chat template keeps working).
- **Model**: the input embedding and output matrices gain one row per new token, each initialised
  to the mean of the base rows of the old sub-tokens it replaces (the base BPE's segmentation of
  the token's string); the mean of all base rows if that is empty. Logits over the old vocabulary
  are unchanged on old-token inputs.
- **Output** (`vocab.out_dir`): the tokenizer files (the base's, with `tokenizer.json` extended), the
  resized model (or only its config when the base has no weights: a model built from config), and
  `extension.json` (the new tokens and ids, the rule, the time).
"""

import json
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from almr.config import AlmrConfig
from almr.data.config import SourceConfig
from almr.data.sources import iter_texts
from almr.errors import ConfigError, DataError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
INIT_RULE = "mean of the base embedding rows of the token's sub-tokens under the base BPE (mean of all rows if none)"


@dataclass
class Extension:
    out_dir: Path
    base_size: int  # ids 0 … base_size-1 are the base's
    new_tokens: list[str] = field(default_factory=list)
    sub_tokens: list[list[int]] = field(default_factory=list)  # base ids each new token replaces
    seconds: float = 0.0
    corpus_characters: int = 0

    @property
    def size(self) -> int:
        return self.base_size + len(self.new_tokens)


def base_tokenizer_dir(config: AlmrConfig) -> Path:
    name = config.data.tokenizer or config.model.name_or_path
    if not name:
        raise ConfigError("vocab extend needs a base tokenizer: set data.tokenizer or model.name_or_path")
    path = Path(name)
    if not (path / "tokenizer.json").is_file():
        raise ConfigError(
            f"{path}: no tokenizer.json; vocab extend works on a fast (Rust) tokenizer directory — save the base "
            "tokenizer with transformers' save_pretrained first"
        )
    return path


def corpus_sources(config: AlmrConfig) -> list[SourceConfig]:
    language = config.mixture.additional_language
    sources = [s for s in config.data.sources if s.language == language]
    if not sources:
        tags = ", ".join(f"{s.name}={s.language}" for s in config.data.sources) or "none"
        raise ConfigError(
            f"vocab extend trains on the sources tagged mixture.additional_language={language!r}, and none is "
            f"(sources: {tags}); tag them in data.sources[].language"
        )
    return sources


def read_corpus(sources: Sequence[SourceConfig], max_characters: int | None) -> Iterator[str]:
    left = max_characters
    for source in sources:
        for text in iter_texts(source.train, source.format, source.text_field):
            if left is not None:
                if left <= 0:
                    return
                text = text[:left]
                left -= len(text)
            yield text


def _merge_pair(merge: Any) -> tuple[str, str]:
    """A merge as tokenizers writes it: ["a", "b"] (0.20 and later) or "a b"."""
    if isinstance(merge, str):
        a, b = merge.split(" ", 1)
        return a, b
    return merge[0], merge[1]


def check_bpe(spec: dict[str, Any], where: Path) -> None:
    kind = spec.get("model", {}).get("type")
    if kind != "BPE":
        raise ConfigError(
            f"{where}/tokenizer.json: a {kind} tokenizer; vocab extend supports BPE tokenizers (byte-level as "
            "Llama-3, Qwen, GPT-2, Mistral's tekken, or character-level BPE), whose merges new tokens can extend"
        )


def train_new_merges(spec: dict[str, Any], texts: Iterator[str], new_tokens: int | None,
                     min_frequency: int) -> list[tuple[str, str]]:  # fmt: skip
    """The merges of a BPE trained on `texts` (the base's normalizer and pre-tokenizer) whose results
    the base vocabulary lacks, in the order learned: the first `new_tokens`, or all of them."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    base = Tokenizer.from_str(json.dumps(spec))
    vocab: dict[str, int] = spec["model"]["vocab"]
    learner = Tokenizer(models.BPE())
    learner.normalizer = base.normalizer
    learner.pre_tokenizer = base.pre_tokenizer
    byte_level = "ByteLevel" in json.dumps(spec.get("pre_tokenizer"))
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
    # trained merges mostly rebuild tokens the base has: leave room for them before the new ones
    budget = 4 * new_tokens + len(vocab) if new_tokens else 10**7
    trainer = trainers.BpeTrainer(vocab_size=budget, min_frequency=min_frequency, initial_alphabet=alphabet,
                                  show_progress=False)  # fmt: skip
    learner.train_from_iterator(texts, trainer)
    learned = json.loads(learner.to_str())["model"]
    out: list[tuple[str, str]] = []
    known = set(vocab)
    # characters of a character-level BPE that the base lacks are tokens too (no merge makes them)
    for char in learned["vocab"]:
        if len(char) == 1 and char not in known and not byte_level:
            out.append((char, ""))
            known.add(char)
    for merge in learned["merges"]:
        a, b = _merge_pair(merge)
        if a + b in known:
            continue
        out.append((a, b))
        known.add(a + b)
        if new_tokens and len(out) >= new_tokens:
            break
    return out if new_tokens is None else out[:new_tokens]


def extended_spec(spec: dict[str, Any], merges: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """`tokenizer.json` with the new tokens after the largest existing id and their merges last."""
    out = json.loads(json.dumps(spec))
    model = out["model"]
    next_id = 1 + max([*model["vocab"].values(), *(t["id"] for t in out.get("added_tokens", []))])
    as_strings = bool(model["merges"]) and isinstance(model["merges"][0], str)
    for a, b in merges:
        model["vocab"][a + b] = next_id
        next_id += 1
        if b:  # a character the base lacked has no merge
            model["merges"].append(f"{a} {b}" if as_strings else [a, b])
    return out


def sub_token_ids(spec: dict[str, Any], tokens: Sequence[str]) -> list[list[int]]:
    """The base ids each new token's string splits into under the base BPE alone (no pre-tokenizer:
    the string is already one pre-token in the model's alphabet)."""
    from tokenizers import Tokenizer

    model = Tokenizer.from_str(json.dumps(spec)).model
    out = []
    for token in tokens:
        try:
            out.append([t.id for t in model.tokenize(token)])
        except Exception:  # a character the base cannot encode at all (no byte fallback, no unk token)
            out.append([])
    return out


def _resize(model_dir: Path, out_dir: Path, size: int, sub_tokens: Sequence[Sequence[int]], base_size: int) -> None:
    """The model with `size` rows of embeddings and output, new rows by INIT_RULE; only the config
    when the base has no weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    has_weights = any(model_dir.glob("*.safetensors")) or any(model_dir.glob("*.bin"))
    if not has_weights:
        config = AutoConfig.from_pretrained(model_dir)
        config.vocab_size = size
        config.save_pretrained(out_dir)
        return
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    old = model.get_input_embeddings().weight.shape[0]
    if old < base_size:
        raise DataError(
            f"{model_dir}: the model has {old} embedding rows but its tokenizer {base_size} ids; the tokenizer does "
            "not belong to this model"
        )
    model.resize_token_embeddings(max(size, old), mean_resizing=False)
    with torch.no_grad():
        matrices = [model.get_input_embeddings().weight]
        output = model.get_output_embeddings()
        if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
            matrices.append(output.weight)
        for weight in matrices:
            everything = weight[:old].mean(dim=0)
            for i, ids in enumerate(sub_tokens):
                weight[base_size + i] = weight[list(ids)].mean(dim=0) if ids else everything
    model.save_pretrained(out_dir)


def extend_vocabulary(config: AlmrConfig, log: Any = print) -> Extension:
    """`almr vocab extend` (module doc)."""
    started = time.perf_counter()
    section = config.vocab
    tok_dir = base_tokenizer_dir(config)
    spec = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    check_bpe(spec, tok_dir)
    sources = corpus_sources(config)
    model_dir = Path(config.model.name_or_path) if config.model.name_or_path else None
    if model_dir is None or not (model_dir / "config.json").is_file():
        raise ConfigError(f"model.name_or_path={config.model.name_or_path!r}: not a model directory with config.json")
    characters = 0

    def counted() -> Iterator[str]:
        nonlocal characters
        for text in read_corpus(sources, section.max_characters):
            characters += len(text)
            yield text

    merges = train_new_merges(spec, counted(), section.new_tokens, section.min_frequency)
    if section.new_tokens and len(merges) < section.new_tokens:
        raise DataError(
            f"the corpus ({characters:,} characters of {', '.join(s.name for s in sources)}) yields only "
            f"{len(merges)} new tokens seen at least {section.min_frequency} times, not vocab.new_tokens="
            f"{section.new_tokens}; lower vocab.new_tokens or vocab.min_frequency, or add text"
        )
    extended = extended_spec(spec, merges)
    base_size = 1 + max([*spec["model"]["vocab"].values(), *(t["id"] for t in spec.get("added_tokens", []))])
    tokens = [a + b for a, b in merges]
    out_dir = Path(section.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES[1:]:
        if (tok_dir / name).is_file():
            shutil.copy(tok_dir / name, out_dir / name)
    (out_dir / "tokenizer.json").write_text(json.dumps(extended, ensure_ascii=False), encoding="utf-8")
    sub_tokens = sub_token_ids(spec, tokens)
    _resize(model_dir, out_dir, base_size + len(tokens), sub_tokens, base_size)
    extension = Extension(out_dir, base_size, tokens, sub_tokens, time.perf_counter() - started, characters)
    record = {
        "base_tokenizer": str(tok_dir), "base_model": str(model_dir), "base_size": base_size,
        "size": extension.size, "new_tokens": len(tokens), "first_new_id": base_size,
        "min_frequency": section.min_frequency, "corpus_characters": characters, "init_rule": INIT_RULE,
        "seconds": round(extension.seconds, 3), "tokens": tokens,
    }  # fmt: skip
    (out_dir / "extension.json").write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
    log(f"{len(tokens):,} new tokens (ids {base_size:,}–{extension.size - 1:,}) from {characters:,} characters "
        f"in {extension.seconds:.1f} s → {out_dir}")  # fmt: skip
    return extension
