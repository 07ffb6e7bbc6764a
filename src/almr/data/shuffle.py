"""A keyed bijection on [0, n), computed on the fly: the per-epoch order of a source too large
for a materialized permutation (4 bytes per sequence; 0.8 GB per process for 2×10⁸ sequences).

Contract
- `KeyedPermutation(n, key)(i)` maps an int array of indices in [0, n) to their images, a
  permutation of [0, n) fixed by `key` (bytes); O(len(i)) time and memory, nothing stored.
- `epoch_key(seed, name, epoch)` is the key of one source's epoch: another seed, source or
  epoch gives an unrelated permutation.

Invariant and why: an 8-round balanced Feistel network on 2h-bit words (the smallest even
width with 2^(2h) ≥ n) is a bijection of [0, 2^(2h)) whatever its round function (each round
(L, R) → (R, L ⊕ F_k(R)) is undone by (L', R') → (R' ⊕ F_k(L'), L')). Cycle walking — applying
it again while the image is ≥ n — restricts it to a bijection of [0, n): following the cycle
of i through the out-of-range values reaches the next in-range value of that cycle, which no
other in-range index reaches. As 2^(2h) < 4n, a walk takes fewer than 4 steps on average.
The round function is the murmur3 64-bit finalizer of R ⊕ round key; round keys are the
sha512 of the key (8 words). Tested exhaustively on small domains (tests/data/test_shuffle.py).
"""

import hashlib

import numpy as np

ROUNDS = 8
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)


def epoch_key(seed: int, name: str, epoch: int) -> bytes:
    """The key of source `name`'s order in `epoch` under the plan's seed."""
    return f"almr-keyed-shuffle|{seed}|{name}|{epoch}".encode()


def _fmix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(33))
    x = x * _M1
    x = x ^ (x >> np.uint64(33))
    x = x * _M2
    return x ^ (x >> np.uint64(33))


class KeyedPermutation:
    """A permutation of [0, n) fixed by `key`, evaluated per index (see the module docstring)."""

    def __init__(self, n: int, key: bytes) -> None:
        if n < 1:
            raise ValueError(f"a permutation of [0, {n}) is empty")
        self.n = n
        self.half = max(1, ((n - 1).bit_length() + 1) // 2)  # bits of each half: 2^(2·half) ≥ n
        self.mask = np.uint64((1 << self.half) - 1)
        digest = hashlib.sha512(key).digest()
        self.round_keys = [np.uint64(int.from_bytes(digest[8 * r : 8 * r + 8], "little")) for r in range(ROUNDS)]

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        shift = np.uint64(self.half)
        left, right = x >> shift, x & self.mask
        with np.errstate(over="ignore"):  # uint64 products wrap, as the mixing function intends
            for key in self.round_keys:
                left, right = right, left ^ (_fmix(right ^ key) & self.mask)
        return (left << shift) | right

    def __call__(self, index: np.ndarray) -> np.ndarray:
        x = np.asarray(index, dtype=np.int64)
        if x.size and (x.min() < 0 or x.max() >= self.n):
            raise IndexError(f"index out of [0, {self.n})")
        y = self._feistel(x.astype(np.uint64))
        out_of_range = y >= np.uint64(self.n)
        while out_of_range.any():  # cycle walking
            y[out_of_range] = self._feistel(y[out_of_range])
            out_of_range = y >= np.uint64(self.n)
        return y.astype(np.int64)
