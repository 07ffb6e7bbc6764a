"""%Chinese: the share of Chinese in a text, as DESIGN.md defines it.

%Chinese = CJK characters / (CJK characters + letters + digits), with whitespace and
punctuation ignored. CJK characters are the Han ideographs (the CJK Unified Ideographs
blocks, their extensions and the compatibility ideographs). Letters are the other Unicode
letters (categories L*: Latin, Cyrillic, kana, hangul, ...) and digits are decimal digits
(category Nd). Over many texts the share is a ratio of sums, not a mean of ratios.
"""

import re
from dataclasses import dataclass

_HAN = re.compile(
    "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef\U00030000-\U0003134f\U0002f800-\U0002fa1f]"
)
# \w is letters, digits and other numerics plus "_"; removing "_" and the non-decimal
# numerics leaves exactly letters + decimal digits.
_ALNUM = re.compile(r"[^\W_]")


@dataclass
class ScriptCounts:
    """Counts of Han characters and of other letters and digits, summable across texts."""

    han: int = 0
    other: int = 0

    def add(self, text: str) -> "ScriptCounts":
        han = len(_HAN.findall(text))
        alnum = sum(1 for c in _ALNUM.findall(text) if c.isalpha() or c.isdecimal())
        self.han += han
        self.other += alnum - han
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
    return _HAN.fullmatch(char) is not None
