"""The reference model's log-probabilities of a DPO data set, kept on disk so that they are
computed once: DPO then trains with one model in memory, and a rerun reads them back.

An entry is the folder `<root>/<key>/` holding `ref_logps.npz` (two float arrays,
`chosen` and `rejected`: the summed log-probability of each pair's response tokens under the
reference model, in data-set row order) and `meta.json` (what the key was made of). It is written
under a temporary name and renamed into place, so a reader sees a whole entry or none.

The key is sha256 over two fingerprints, and changes whenever the numbers could:

- the reference model (`model_fingerprint`): the bytes of its config.json and, for every weight
  file (`*.safetensors`, `*.bin`, their index), its name, size and modification time in
  nanoseconds. Not the weights' bytes: hashing a 16 GB checkpoint would cost minutes on every
  run, while any rewrite of a weight file changes its mtime. A copied checkpoint gets a new mtime
  and so a fresh computation: the safe direction.
- the data as the reference sees it (`data_fingerprint`): the token ids of every pair (prompt,
  chosen, rejected, after prompt truncation) in row order, the sequence-length cap, the truncation
  rule and the precision of the forward pass. Token ids cover the examples, their order and
  selection, the tokenizer, the chat template and max_prompt_length at once.
"""

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from almr.durable import fsync_dir, fsync_tree

FORMAT = 1  # bump when the entry layout or the meaning of its numbers changes
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


def model_fingerprint(model_dir: Path | str) -> str:
    """sha256 of the reference checkpoint's config.json bytes and its weight files' names,
    sizes and mtimes (see the module docstring for why not their bytes)."""
    root = Path(model_dir)
    digest = hashlib.sha256()
    digest.update((root / "config.json").read_bytes())
    for path in sorted(p for p in root.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES)):
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def data_fingerprint(
    rows: Iterable[tuple[Sequence[int], Sequence[int], Sequence[int]]], *, max_length: int | None,
    truncation: str, precision: str,
) -> str:  # fmt: skip
    """sha256 of each row's (prompt, chosen, rejected) token ids, in order, and of what else
    decides the reference's numbers: the length cap, the truncation rule and the precision."""
    digest = hashlib.sha256(f"max_length={max_length};truncation={truncation};precision={precision}\n".encode())
    for prompt, chosen, rejected in rows:
        for ids in (prompt, chosen, rejected):
            digest.update(np.asarray(ids, dtype=np.int64).tobytes())
            digest.update(b"|")
        digest.update(b"\n")
    return digest.hexdigest()


def cache_key(model_fp: str, data_fp: str) -> str:
    """The entry name: 24 hex digits of sha256(format, model fingerprint, data fingerprint)."""
    return hashlib.sha256(f"{FORMAT}\0{model_fp}\0{data_fp}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class RefLogps:
    chosen: np.ndarray
    rejected: np.ndarray


class RefLogpCache:
    """One entry of the cache under `root`: `load` it if it is there, `save` it once computed."""

    def __init__(self, root: Path | str, key: str) -> None:
        self.root = Path(root)
        self.key = key

    @property
    def path(self) -> Path:
        return self.root / self.key

    def load(self, rows: int) -> RefLogps | None:
        """The cached log-probabilities, or None when the entry is absent or does not hold `rows`
        rows (an entry of another data set under a colliding key is never used)."""
        file = self.path / "ref_logps.npz"
        if not file.is_file():
            return None
        with np.load(file) as arrays:
            chosen, rejected = arrays["chosen"], arrays["rejected"]
        if len(chosen) != rows or len(rejected) != rows:
            return None
        return RefLogps(chosen, rejected)

    def save(self, logps: RefLogps, meta: dict[str, Any]) -> Path:
        """Write the entry under a temporary name and rename it into place; a concurrent writer
        of the same key (another process) may win, and its entry is equally valid."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{self.key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        np.savez(tmp / "ref_logps.npz", chosen=np.asarray(logps.chosen), rejected=np.asarray(logps.rejected))
        record = {"format": FORMAT, "key": self.key, "rows": len(logps.chosen), **meta}
        (tmp / "meta.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        fsync_tree(tmp)
        try:
            os.replace(tmp, self.path)
        except OSError:  # the entry appeared meanwhile (a non-empty folder cannot be replaced)
            shutil.rmtree(tmp, ignore_errors=True)
        fsync_dir(self.root)
        return self.path
