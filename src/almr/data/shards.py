"""Megatron IndexedDataset shards (`PREFIX.bin` + `PREFIX.idx`, the MMIDIDX format), written
atomically and read by memory map.

Format (as megatron.core.datasets.indexed_dataset writes and reads it; little-endian):
    .idx: b"MMIDIDX\\x00\\x00" | version u64 = 1 | dtype code u8 | sequence count u64 (N) |
          document count u64 (D) | sequence lengths int32[N] | sequence pointers int64[N]
          (byte offsets into .bin) | document indices int64[D]
    .bin: the tokens of all sequences, back to back, in the dtype of the code
          (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16).
We write one sequence per document (document indices 0..N, as Megatron's builder with
`end_document` after each one) and tokens as uint16 when the vocabulary has fewer than 65500
entries (Megatron's `DType.optimal_dtype`), else int32.

Contract
- `ShardWriter(prefix, dtype)`: `add(tokens, lengths)` appends documents, `commit()` writes the
  index, fsyncs both files and renames them from temporary names; without `commit()` (an
  exception, a crash) nothing exists under the final names. Use it as a context manager. Its
  memory does not grow with the document count (lengths are spooled to the temporary .idx).
- `IndexedShard(prefix)`: `len()`, `[i]` (one document), `lengths`, `pointers`, `document_indices`,
  `dtype` and `tokens` (the whole .bin as one flat memmap; documents are contiguous, which
  is what the packed loader reads). Any MMIDIDX shard opens, including Megatron-LM's own.
- `ShardParts(prefixes)`: shards read as one (a source tokenized in parts): the documents of
  the first, then of the second, ...; `tokens` indexes the concatenated token stream by int
  arrays (what the loader reads), without copying the parts; `num_tokens`, `contiguous()`.
- `open_shards(prefixes)`: one shard as `IndexedShard`, several as `ShardParts`.
"""

import os
import struct
from pathlib import Path
from types import TracebackType

import numpy as np

from almr.durable import fsync_dir
from almr.errors import DataError

INDEX_HEADER = b"MMIDIDX\x00\x00"
_CODES: dict[int, type[np.number]] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16,
}
_CODE_OF = {np.dtype(v): k for k, v in _CODES.items()}
_HEADER_BYTES = len(INDEX_HEADER) + 8 + 1 + 8 + 8  # header, version, dtype code, sequence and document counts
_CHUNK = 1 << 18  # documents per step when deriving or checking offsets: ~6 MB of scratch, whatever the count


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits with Megatron's margin, else int32."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


class ShardWriter:
    """Appends documents to a new shard; visible under its final name only after commit().

    Memory does not grow with the document count: each batch's lengths go straight to the
    temporary .idx (they follow its fixed-size header), and commit() derives the pointers and
    document indices from them `_CHUNK` documents at a time."""

    contiguous = True  # documents go to .bin back to back, in index order: the manifest records it

    def __init__(self, prefix: str | Path, dtype: np.dtype | type) -> None:
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in _CODE_OF:
            raise ValueError(f"dtype {self.dtype} has no MMIDIDX code")
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        tag = f".tmp-{os.getpid()}"
        self._bin_tmp = self.prefix.parent / f".{self.prefix.name}.bin{tag}"
        self._idx_tmp = self.prefix.parent / f".{self.prefix.name}.idx{tag}"
        self._bin = self._bin_tmp.open("wb")
        self._idx = self._idx_tmp.open("w+b")
        self._idx.write(bytes(_HEADER_BYTES))  # the counts are known at commit()
        self.documents = 0
        self.tokens = 0
        self._done = False

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append documents given as their concatenated tokens and their lengths."""
        if tokens.dtype != self.dtype:
            tokens = tokens.astype(self.dtype)
        if int(lengths.sum()) != len(tokens):
            raise ValueError("lengths do not add up to the tokens given")
        self._bin.write(tokens.tobytes(order="C"))
        self._idx.write(np.asarray(lengths, dtype=np.int32).tobytes(order="C"))
        self.documents += len(lengths)
        self.tokens += len(tokens)

    def commit(self) -> None:
        self._bin.flush()
        os.fsync(self._bin.fileno())
        self._bin.close()
        count, idx = self.documents, self._idx
        idx.seek(0)
        idx.write(INDEX_HEADER + struct.pack("<QBQQ", 1, _CODE_OF[self.dtype], count, count + 1))
        offset = 0  # byte offset in .bin of the next chunk's first document
        for start in range(0, count, _CHUNK):
            n = min(_CHUNK, count - start)
            idx.seek(_HEADER_BYTES + 4 * start)
            sizes = np.frombuffer(idx.read(4 * n), dtype=np.int32).astype(np.int64) * self.dtype.itemsize
            ends = np.cumsum(sizes) + offset
            idx.seek(_HEADER_BYTES + 4 * count + 8 * start)
            idx.write((ends - sizes).tobytes(order="C"))
            offset = int(ends[-1])
        idx.seek(_HEADER_BYTES + 12 * count)
        for start in range(0, count + 1, _CHUNK):  # one sequence per document: indices 0..count
            idx.write(np.arange(start, min(start + _CHUNK, count + 1), dtype=np.int64).tobytes(order="C"))
        idx.flush()
        os.fsync(idx.fileno())
        idx.close()
        # .bin first, .idx last: an .idx under its final name implies its .bin is complete
        os.replace(self._bin_tmp, self.prefix.with_suffix(".bin"))
        os.replace(self._idx_tmp, self.prefix.with_suffix(".idx"))
        fsync_dir(self.prefix.parent)
        self._done = True

    def abort(self) -> None:
        for stream in (self._bin, self._idx):
            if not stream.closed:
                stream.close()
        for tmp in (self._bin_tmp, self._idx_tmp):
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None or not self._done:
            self.abort()


class IndexedShard:
    """A read-only MMIDIDX shard, memory-mapped."""

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = Path(prefix)
        idx_path, bin_path = self.prefix.with_suffix(".idx"), self.prefix.with_suffix(".bin")
        if not idx_path.is_file() or not bin_path.is_file():
            raise DataError(f"{self.prefix}: shard missing (.bin/.idx); run `almr data tokenize` first")
        with idx_path.open("rb") as stream:
            header = stream.read(9)
            if header != INDEX_HEADER:
                raise DataError(f"{idx_path}: not an MMIDIDX index (header {header!r})")
            (version,) = struct.unpack("<Q", stream.read(8))
            if version != 1:
                raise DataError(f"{idx_path}: MMIDIDX version {version}; only version 1 is known")
            (code,) = struct.unpack("<B", stream.read(1))
            if code not in _CODES:
                raise DataError(f"{idx_path}: unknown dtype code {code}")
            self.dtype = np.dtype(_CODES[code])
            count, doc_count = struct.unpack("<QQ", stream.read(16))
            offset = stream.tell()
        index = np.memmap(idx_path, mode="r", dtype=np.uint8)
        self.lengths = np.frombuffer(index, dtype=np.int32, count=count, offset=offset)
        self.pointers = np.frombuffer(index, dtype=np.int64, count=count, offset=offset + 4 * count)
        self.document_indices = np.frombuffer(index, dtype=np.int64, count=doc_count, offset=offset + 12 * count)
        size = bin_path.stat().st_size
        self.num_tokens = int(self.lengths.sum(dtype=np.int64))
        if size != self.num_tokens * self.dtype.itemsize:
            raise DataError(f"{bin_path}: {size} bytes, but the index describes {self.num_tokens} tokens")
        self.tokens = (
            np.memmap(bin_path, mode="r", dtype=self.dtype) if size else np.zeros(0, dtype=self.dtype)
        )

    def contiguous(self) -> bool:
        """Whether documents lie back to back in index order (true for Megatron's builder and
        ours), checked `_CHUNK` documents at a time. The tokenizer records it in the manifest,
        so the loader asks only of shards whose manifest predates that."""
        offset = 0
        for start in range(0, len(self.lengths), _CHUNK):
            sizes = self.lengths[start : start + _CHUNK].astype(np.int64) * self.dtype.itemsize
            ends = np.cumsum(sizes) + offset
            if not np.array_equal(ends - sizes, self.pointers[start : start + _CHUNK]):
                return False
            offset = int(ends[-1])
        return True

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.pointers[i]) // self.dtype.itemsize
        return np.asarray(self.tokens[start : start + int(self.lengths[i])])


class _ConcatTokens:
    """The token streams of several shards as one, indexed by integer arrays (read-only)."""

    def __init__(self, parts: list[np.ndarray], dtype: np.dtype) -> None:
        self.parts = parts
        self.dtype = dtype
        self.starts = np.cumsum([0] + [len(p) for p in parts], dtype=np.int64)  # part k: [starts[k], starts[k+1])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: np.ndarray | slice) -> np.ndarray:
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)), dtype=np.int64)
        index = np.asarray(index, dtype=np.int64)
        flat = index.ravel()
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"token index out of [0, {len(self)})")
        part = np.searchsorted(self.starts, flat, side="right") - 1
        out = np.empty(flat.shape, dtype=self.dtype)
        for k in np.unique(part):
            sel = part == k
            out[sel] = self.parts[int(k)][flat[sel] - self.starts[k]]
        return out.reshape(index.shape)


class ShardParts:
    """Several shards read as one: documents and tokens of the first part, then the second, ..."""

    def __init__(self, prefixes: list[str | Path]) -> None:
        if not prefixes:
            raise ValueError("ShardParts needs at least one shard")
        self.parts = [IndexedShard(p) for p in prefixes]
        self.prefix = self.parts[0].prefix
        dtypes = {p.dtype for p in self.parts}
        if len(dtypes) > 1:
            names = ", ".join(f"{p.prefix.name}: {p.dtype}" for p in self.parts)
            raise DataError(f"{self.prefix.parent}: shard parts of different token types ({names}); re-tokenize")
        self.dtype = self.parts[0].dtype
        self.num_tokens = sum(p.num_tokens for p in self.parts)
        self.tokens = _ConcatTokens([p.tokens for p in self.parts], self.dtype)

    def contiguous(self) -> bool:
        return all(p.contiguous() for p in self.parts)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)


def open_shards(prefixes: list[Path]) -> "IndexedShard | ShardParts":
    """One shard as it is; several (a source tokenized in parts) as one stream."""
    return IndexedShard(prefixes[0]) if len(prefixes) == 1 else ShardParts(prefixes)
