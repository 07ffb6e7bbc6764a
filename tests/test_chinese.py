import pytest

from almr.chinese import ScriptCounts, chinese_share


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("你好世界", 1.0),
        ("hello", 0.0),
        ("", 0.0),
        ("，。！ ？\n", 0.0),  # punctuation and whitespace only
        ("我有3个apple", 3 / (3 + 1 + 5)),
        ("法国（France）的货币是欧元。", 8 / (8 + 6)),
        ("日本語のテキスト", 3 / 8),  # kana are letters, kanji are CJK
        ("Ⅻ½²", 0.0),  # numerals that are not decimal digits are ignored
        ("𠀀a", 0.5),  # an ideograph outside the basic plane
    ],
)
def test_chinese_share_definition(text: str, expected: float) -> None:
    assert chinese_share(text) == pytest.approx(expected)


def test_share_over_texts_is_ratio_of_sums() -> None:
    counts = ScriptCounts().add("中文").add("english words")
    assert (counts.han, counts.other) == (2, 12)
    assert counts.chinese_share == pytest.approx(2 / 14)
