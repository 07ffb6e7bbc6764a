"""What a source's shards were made from: `SHARD_DIR/NAME/manifest.json`, the tokenizer's
identity and the input fingerprint that tokenization, plans and the loader compare.

Contract
- `tokenizer_info(path) -> TokenizerInfo`: loads the Hugging Face tokenizer at `path` (a fast
  one with an EOS token) and gives its fingerprint (sha256 of the tokenizer's canonical JSON
  and of its EOS id), EOS id, vocabulary size, BOS id and whether its own template starts a
  text with BOS; `resolve_add_bos(add_bos, tok)` is `data.add_bos` with that default.
- `describe_source(source)` is the manifest's `source` entry: the source's tags and its
  train/valid files (`describe_files`: resolved path, format, size, mtime_ns).
  `input_fingerprint(described, tokenizer_fingerprint, skip_bad_records, add_bos)` hashes it with the
  tokenizer and the reading options: equal fingerprints mean tokenizing again would give the
  same shards. `files_changed(manifest, source)` says whether a source's raw files differ from
  those its manifest names (False when they are not on this machine: shards copied elsewhere).
- `read_manifest(shard_dir, name)` is None unless the source's tokenization completed;
  `up_to_date(manifest, fingerprint, folder)` says whether its shards can be kept as they
  are; `remove_manifest(folder)` comes first when a source is redone and
  `write_manifest(folder, manifest)` (atomic) last, so half-done work never looks complete.

Manifest fields (`MANIFEST_VERSION` 1): version, source {name, language, domain, format,
text_field, train/valid file lists with size and mtime_ns}, skip_bad_records, add_bos (whether
every document starts with BOS; absent in manifests written before it: false), bos_id, tokenizer
{path, fingerprint, eos_id, vocab_size}, dtype, input_fingerprint, and per split (train,
valid): documents, tokens, han/other character counts and chinese_share (almr.chinese),
bad_records (count, by_reason, the first 20 with file:line), bin_bytes; created.
"""

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from almr.data.config import SourceConfig
from almr.data.sources import resolve_files
from almr.durable import atomic_write_bytes
from almr.errors import DataError

MANIFEST_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "valid")


@dataclass(frozen=True)
class TokenizerInfo:
    path: str
    fingerprint: str
    eos_id: int
    vocab_size: int
    json: str  # the fast tokenizer's serialized form, shipped to worker processes
    bos_id: int | None = None
    template_bos: bool = False  # its own template (add_special_tokens=True) starts a text with BOS

    def record(self) -> dict[str, Any]:
        """The `tokenizer` entry of manifests and plans."""
        return {
            "path": self.path, "fingerprint": self.fingerprint, "eos_id": self.eos_id, "vocab_size": self.vocab_size
        }


def tokenizer_info(path: str | None, **load: Any) -> TokenizerInfo:
    """The tokenizer at `path` (`load`: from_pretrained's revision, trust_remote_code) and its identity."""
    if not path:
        raise DataError("data.tokenizer is not set; point it at a Hugging Face tokenizer directory")
    # imported here: transformers takes seconds to import, and the tokenizer processes import this module
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, **load)
    except Exception as err:
        raise DataError(f"data.tokenizer {path}: cannot load a tokenizer ({err})") from None
    if not getattr(tok, "is_fast", False):
        raise DataError(f"data.tokenizer {path}: not a fast (Rust) tokenizer; convert it to tokenizer.json")
    if tok.eos_token_id is None:
        raise DataError(f"data.tokenizer {path}: has no EOS token; set eos_token in its tokenizer_config.json")
    serialized = tok.backend_tokenizer.to_str()
    digest = hashlib.sha256(serialized.encode("utf-8"))
    digest.update(f"|eos={tok.eos_token_id}".encode())
    bos = tok.bos_token_id
    with_template = tok("a", add_special_tokens=True)["input_ids"]
    without = tok("a", add_special_tokens=False)["input_ids"]
    template_bos = bos is not None and with_template[:1] == [bos] and without[:1] != [bos]
    return TokenizerInfo(
        str(path), digest.hexdigest(), int(tok.eos_token_id), len(tok), serialized,
        None if bos is None else int(bos), template_bos,
    )  # fmt: skip


def resolve_add_bos(add_bos: bool | None, tok: TokenizerInfo) -> bool:
    """`data.add_bos`, or (unset) whether the tokenizer's own template starts a text with BOS."""
    if add_bos is None:
        return tok.template_bos
    if add_bos and tok.bos_id is None:
        raise DataError(f"data.add_bos=true but the tokenizer {tok.path} has no BOS token; set data.add_bos=false")
    return add_bos


def source_dir(shard_dir: str | Path, name: str) -> Path:
    return Path(shard_dir) / name


def describe_files(patterns: list[str], fmt: str) -> list[dict[str, Any]]:
    """The files a source's patterns name: resolved path, format, size and mtime_ns."""
    if not patterns:
        return []
    out = []
    for path, kind in resolve_files(patterns, fmt):
        stat = path.stat()
        out.append({"path": str(path.resolve()), "format": kind, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return out


def describe_source(source: SourceConfig) -> dict[str, Any]:
    """The manifest's `source` entry: tags, reading options and the files as they are now."""
    return {
        "name": source.name, "language": source.language, "domain": source.domain, "format": source.format,
        "text_field": source.text_field,
        "train": describe_files(source.train, source.format), "valid": describe_files(source.valid, source.format),
    }


def input_fingerprint(
    described: dict[str, Any], tokenizer_fingerprint: str, skip_bad_records: bool, add_bos: bool = False
) -> str:
    fields = {"v": MANIFEST_VERSION, "source": described, "tokenizer": tokenizer_fingerprint, "skip": skip_bad_records}
    if add_bos:  # only when on: shards made before the option keep their fingerprint
        fields["bos"] = True
    key = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def files_changed(manifest: dict[str, Any], source: SourceConfig) -> bool:
    """Whether the source's raw files changed since its manifest was written; False when they
    are not here (shards copied to another machine): then the manifest is trusted."""
    try:
        described = dict(manifest["source"])
        described.update(
            train=describe_files(source.train, source.format), valid=describe_files(source.valid, source.format)
        )
        tokenizer, skip = manifest["tokenizer"]["fingerprint"], manifest["skip_bad_records"]
        current = input_fingerprint(described, tokenizer, skip, bool(manifest.get("add_bos")))
    except DataError:
        return False
    return current != manifest["input_fingerprint"]


def read_manifest(shard_dir: str | Path, name: str) -> dict[str, Any] | None:
    path = source_dir(shard_dir, name) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def up_to_date(manifest: dict[str, Any] | None, fingerprint: str, folder: Path) -> bool:
    """Whether the shards in `folder` are complete and made from the inputs `fingerprint` names."""
    if manifest is None or manifest.get("input_fingerprint") != fingerprint:
        return False
    for split, info in manifest["splits"].items():
        for suffix in (".bin", ".idx"):
            if not (folder / f"{split}{suffix}").is_file():
                return False
        if (folder / f"{split}.bin").stat().st_size != info["bin_bytes"]:
            return False
    return True


def new_manifest(
    described: dict[str, Any], tok: TokenizerInfo, skip_bad_records: bool, dtype: np.dtype, fingerprint: str,
    splits: dict[str, Any], add_bos: bool = False,
) -> dict[str, Any]:
    return {
        "version": MANIFEST_VERSION,
        "source": described,
        "skip_bad_records": skip_bad_records,
        "add_bos": add_bos,
        "bos_id": tok.bos_id if add_bos else None,
        "tokenizer": tok.record(),
        "dtype": dtype.name,
        "input_fingerprint": fingerprint,
        "splits": splits,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def remove_manifest(folder: Path) -> None:
    (folder / MANIFEST).unlink(missing_ok=True)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    atomic_write_bytes(folder / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8"))
