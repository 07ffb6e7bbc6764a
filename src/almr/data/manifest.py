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

Parts (a source tokenized by N jobs): `split_files(files, n)` cuts a split's file list (in its
stream order) into n contiguous runs balanced by bytes (a file goes to the part holding its
middle byte); part i writes `SPLIT-part-0000i-of-0000N.{bin,idx}` and `part-0000i-of-0000N.json`
(`part_manifest`, read by `read_part_manifests`); `part_current` says whether a part is done
for the current inputs. The source's manifest, written when all N parts are current, is the
same as for one shard plus `parts` = N and, per split, `parts`: the non-empty parts' prefixes,
documents, tokens and bin_bytes, in order (`merge_part_splits`); `shard_prefixes(folder,
manifest, split)` is what the loader opens, as one stream. The input fingerprint does not
depend on N: the parts hold the tokens of the one shard, in the same order.

Manifest fields (`MANIFEST_VERSION` 1): version, source {name, language, domain, format,
text_field, train/valid file lists with size and mtime_ns}, skip_bad_records, add_bos (whether
every document starts with BOS; absent in manifests written before it: false), bos_id, tokenizer
{path, fingerprint, eos_id, vocab_size}, dtype, input_fingerprint, and per split (train,
valid): documents, tokens, han/other character counts and chinese_share (almr.chinese),
bad_records (count, by_reason, the first 20 with file:line), bin_bytes, contiguous (whether the
documents lie back to back, what the packed loader needs: decided when the shard is written, so
no trainer process re-checks an index of ~12 bytes per document; absent in manifests written
before it: `record_contiguity` adds it, and the loader checks such shards itself); created.
"""

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from almr.chinese import ScriptCounts
from almr.data.config import SourceConfig
from almr.data.shards import open_shards
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
        pieces = info.get("parts") or [{"prefix": split, "bin_bytes": info["bin_bytes"]}]
        if not all(_shard_complete(folder / piece["prefix"], piece["bin_bytes"]) for piece in pieces):
            return False
    return True


def _shard_complete(prefix: Path, bin_bytes: int) -> bool:
    bin_path, idx_path = prefix.parent / f"{prefix.name}.bin", prefix.parent / f"{prefix.name}.idx"
    return idx_path.is_file() and bin_path.is_file() and bin_path.stat().st_size == bin_bytes


def shard_prefixes(folder: Path, manifest: dict[str, Any], split: str) -> list[Path]:
    """The shards of a split in stream order: `folder/SPLIT`, or its parts when it was tokenized in parts."""
    info = manifest["splits"][split]
    if "parts" in info:
        return [folder / piece["prefix"] for piece in info["parts"]]
    return [folder / split]


# --------------------------------------------------------------------------- parts

PART_GLOB = "part-*-of-*.json"


def part_name(part: int, parts: int) -> str:
    return f"part-{part:05d}-of-{parts:05d}"


def part_prefix(split: str, part: int, parts: int) -> str:
    """The shard prefix of one part of a split, relative to the source's folder."""
    return f"{split}-{part_name(part, parts)}"


def part_manifest_path(folder: Path, part: int, parts: int) -> Path:
    return folder / f"{part_name(part, parts)}.json"


def split_files(files: list[dict[str, Any]], parts: int) -> list[list[dict[str, Any]]]:
    """`files` (in stream order) cut into `parts` contiguous runs balanced by bytes: a file goes to
    the part that holds its middle byte (by count when all are empty). Runs may be empty."""
    sizes = [max(int(f["size"]), 0) for f in files]
    total = sum(sizes)
    if total == 0:
        sizes, total = [1] * len(files), len(files)
    out: list[list[dict[str, Any]]] = [[] for _ in range(parts)]
    start = 0
    for f, size in zip(files, sizes, strict=True):
        out[min(parts - 1, (2 * start + size) * parts // (2 * total))].append(f)
        start += size
    return out


def read_part_manifests(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every part manifest in `folder` (any N), sorted by name; unreadable ones count as absent."""
    found = []
    for path in sorted(folder.glob(PART_GLOB)):
        try:
            found.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError):
            continue  # being replaced, or cut short by a crash: redone by its own job
    return found


def part_current(part: dict[str, Any] | None, fingerprint: str, parts: int, folder: Path) -> bool:
    """Whether a part manifest is of `parts` parts, made from the current inputs, with its shards in place."""
    if part is None or part.get("input_fingerprint") != fingerprint or part.get("parts") != parts:
        return False
    return all(_shard_complete(folder / info["prefix"], info["bin_bytes"]) for info in part["splits"].values())


def part_manifest(
    source: str, part: int, parts: int, files: dict[str, list[dict[str, Any]]], tok: TokenizerInfo,
    skip_bad_records: bool, dtype: np.dtype, fingerprint: str, splits: dict[str, Any], add_bos: bool = False,
) -> dict[str, Any]:
    """What part `part` of `parts` of a source holds: its files, how they were read, per split its counts."""
    return {
        "version": MANIFEST_VERSION, "source": source, "part": part, "parts": parts, "files": files,
        "skip_bad_records": skip_bad_records, "add_bos": add_bos, "bos_id": tok.bos_id if add_bos else None,
        "tokenizer": tok.record(), "dtype": dtype.name, "input_fingerprint": fingerprint, "splits": splits,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip


def merge_part_splits(infos: list[dict[str, Any]], examples: int = 20) -> dict[str, Any]:
    """One split's manifest entry from its parts' entries, in part order: sums, the first
    `examples` bad records, and the list of non-empty parts the loader reads as one stream."""
    by_reason: dict[str, int] = {}
    for info in infos:
        for reason, count in info["bad_records"]["by_reason"].items():
            by_reason[reason] = by_reason.get(reason, 0) + count
    han, other = sum(i["han"] for i in infos), sum(i["other"] for i in infos)
    return {
        "documents": sum(i["documents"] for i in infos),
        "tokens": sum(i["tokens"] for i in infos),
        "han": han,
        "other": other,
        "chinese_share": ScriptCounts(han, other).chinese_share,
        "bad_records": {
            "count": sum(i["bad_records"]["count"] for i in infos), "by_reason": by_reason,
            "examples": [e for i in infos for e in i["bad_records"]["examples"]][:examples],
        },
        "bin_bytes": sum(i["bin_bytes"] for i in infos),
        **_all_contiguous(infos),
        "parts": [
            {k: i[k] for k in ("prefix", "documents", "tokens", "bin_bytes")} for i in infos if i["documents"]
        ],
    }


def _all_contiguous(infos: list[dict[str, Any]]) -> dict[str, bool]:
    """The merged split's `contiguous`: known only when every part recorded it."""
    if all("contiguous" in i for i in infos):
        return {"contiguous": all(i["contiguous"] for i in infos)}
    return {}


def record_contiguity(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Add `contiguous` to the splits of a manifest written before it was recorded, checking
    their shards once (in bounded memory) and rewriting the manifest; the splits it added."""
    added = []
    for split, info in manifest["splits"].items():
        if "contiguous" not in info:
            info["contiguous"] = open_shards(shard_prefixes(folder, manifest, split)).contiguous()
            added.append(split)
    if added:
        write_manifest(folder, manifest)
    return added


def remove_part(folder: Path, path: Path, part: dict[str, Any]) -> None:
    """A part's manifest (first: the part no longer looks done) and then its shards."""
    path.unlink(missing_ok=True)
    for info in part.get("splits", {}).values():
        for suffix in (".bin", ".idx"):
            (folder / f"{info['prefix']}{suffix}").unlink(missing_ok=True)


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
