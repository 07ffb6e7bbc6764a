"""%Chinese: the share of Chinese in a text, as DESIGN.md defines it.

%Chinese = CJK characters / (CJK characters + letters + digits), with whitespace and
punctuation ignored. CJK characters are the Han ideographs (the CJK Unified Ideographs
blocks, their extensions and the compatibility ideographs). Letters are the other Unicode
letters (categories L*: Latin, Cyrillic, kana, hangul, ...) and digits are decimal digits
(category Nd). Over many texts the share is a ratio of sums, not a mean of ratios.
"""

from dataclasses import dataclass
from functools import cache

import numpy as np

# Han ideographs: CJK Unified Ideographs and extensions A-H, compatibility ideographs.
_HAN_RANGES = [
    (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
    (0x20000, 0x2EBEF), (0x30000, 0x3134F), (0x2F800, 0x2FA1F),
]  # fmt: skip
_NEITHER, _HAN, _OTHER = 0, 1, 2


@cache
def _class_of_code_point() -> np.ndarray:
    """A lookup table code point -> Han / other letter or decimal digit / neither, built once per
    process (~0.5 s), so counting is one vectorized pass instead of a Python loop per character."""
    table = np.zeros(0x110000, dtype=np.uint8)
    for code_point in range(0x110000):
        char = chr(code_point)
        if char.isalpha() or char.isdecimal():
            table[code_point] = _OTHER
    for low, high in _HAN_RANGES:
        table[low : high + 1] = _HAN
    return table


@dataclass
class ScriptCounts:
    """Counts of Han characters and of other letters and digits, summable across texts."""

    han: int = 0
    other: int = 0

    def add(self, text: str) -> "ScriptCounts":
        code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        counts = np.bincount(_class_of_code_point()[code_points], minlength=3)
        self.han += int(counts[_HAN])
        self.other += int(counts[_OTHER])
        return self

    @property
    def chinese_share(self) -> float:
        """%Chinese as a fraction in [0, 1]; 0 for a text with no letters or digits."""
        total = self.han + self.other
        return self.han / total if total else 0.0


def chinese_share(text: str) -> float:
    """%Chinese of one text, as a fraction in [0, 1]."""
    return ScriptCounts().add(text).chinese_share


def is_han(char: str) -> bool:
    return any(low <= ord(char) <= high for low, high in _HAN_RANGES)
