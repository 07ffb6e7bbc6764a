"""The demo world's judge of the pairwise study (Table 8), a stated rule where the paper had human
annotators: a 1M-parameter model cannot stand in for them (as an LLM judge it rarely writes a
verdict), but the world knows what its emotional-support data teaches a supporter to say.

A reply is *in the user's language* when at least half of its letters are (almr.chinese's share of
Chinese for a Chinese user; below half for an English one), and *supports* by as many of the
world's supporter phrases (`esc.supporter_fragments`) as it contains. Of two replies, the one in
the user's language wins; when both are, the one with more supporter phrases; otherwise a tie. So
the rule rewards exactly the two things Table 8 reports on — answering in Chinese and answering as
a companion — and nothing the models could not have learned from the world's data.
"""

from almr.chinese import chinese_share
from almr.world.esc import supporter_fragments

_FRAGMENTS = {lang: supporter_fragments(lang) for lang in ("en", "zh")}


def user_language(text: str) -> str:
    return "zh" if chinese_share(text) >= 0.5 else "en"


def reply_score(reply: str, lang: str) -> tuple[bool, int]:
    """(in the user's language, supporter phrases contained) of one reply to a `lang` user."""
    if not reply.strip():
        return False, 0
    share = chinese_share(reply)
    in_language = share >= 0.5 if lang == "zh" else share < 0.5
    return in_language, sum(fragment in reply for fragment in _FRAGMENTS[lang])


def world_verdict(user: str, left: str, right: str) -> str:
    """`left`, `right` or `tie`: which reply to the user turn `user` the world's rule prefers."""
    lang = user_language(user)
    a, b = reply_score(left, lang), reply_score(right, lang)
    if a[0] != b[0]:
        return "left" if a[0] else "right"
    if a[0] and a[1] != b[1]:
        return "left" if a[1] > b[1] else "right"
    return "tie"
