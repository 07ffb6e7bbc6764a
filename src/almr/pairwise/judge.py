"""`almr pairwise judge`: an LLM judge votes on a study's items for a cheap first look.

Each item is judged twice, through any OpenAI-compatible endpoint (almr's one HTTP client:
retries, one-line errors): once with the item's left reply shown as A, once with it shown as B.
Both verdicts are stored in the side terms they were shown in (`first`: A = left; `second`: A =
right); when they agree after the swap the item's verdict is that side, otherwise — the judge
preferred a position, not a reply — a tie. A failed call or an unparseable verdict is stored as the
item's error and listed by the report, never counted. Verdicts live apart from the human votes
and are reported in their own section. A second run judges only the items without a verdict.
"""

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from almr.evaluate.endpoint import Endpoint, EndpointError
from almr.pairwise.config import PairwiseConfig
from almr.pairwise.study import Study

JUDGE_PROMPT = """Please act as an impartial judge and evaluate the two AI assistants' replies to the user's last \
message in the conversation below. The assistant is meant to be a warm, empathetic companion: prefer the reply that \
understands and responds to the user's feelings, is helpful and appropriate, and answers in the user's language. \
Do not let the order of the replies, their length or the assistants' names influence you.
请公正地比较两位助手对用户最后一条消息的回复：更能理解并回应用户的感受、更有帮助、用用户的语言回答者为佳。

[Conversation]
{history}
User: {user}

[Reply A]
{reply_a}

[Reply B]
{reply_b}

Explain briefly, then give your verdict on the last line exactly as "[[A]]" if A is better, "[[B]]" if B is better, \
or "[[C]]" for a tie."""

_VERDICT = re.compile(r"\[\[([ABC])\]\]")


def parse_verdict(text: str) -> str | None:
    """`A`, `B` or `C` from the last `[[X]]` of the judge's reply, or None."""
    found = _VERDICT.findall(text)
    return found[-1] if found else None


def _as_side(verdict: str) -> str:
    return {"A": "left", "B": "right", "C": "tie"}[verdict]


def consistent(first: str | None, second: str | None) -> bool:
    """The two orders agree: `second` was shown swapped, so its "left" is the item's right reply."""
    swapped = {"left": "right", "right": "left", "tie": "tie"}
    return first is not None and second is not None and swapped[second] == first


def judge_with_rule(study: Study, name: str, verdict: Callable[[str, str, str], str]) -> dict[str, int | str]:
    """Judge every item of `study` with a rule `verdict(user turn, left reply, right reply)` →
    left/right/tie, in both orders as the LLM judge is (a rule that looks at positions shows up as
    inconsistent), stored as judge `name`'s verdicts; counts as `judge_study` returns them."""
    counts: dict[str, int | str] = {"judge": name, "judged": 0, "consistent": 0, "failed": 0}
    for item in study.items():
        view = study.item_view(item.id)
        first = verdict(view["user"], view["left"], view["right"])
        second = verdict(view["user"], view["right"], view["left"])  # shown swapped
        agree = consistent(first, second)
        study.save_judge_verdict(item.id, name, first, second, first if agree else "tie", None)
        counts["judged"] = int(counts["judged"]) + 1
        counts["consistent"] = int(counts["consistent"]) + int(agree)
    return counts


def judge_prompt(view: dict[str, Any], swap: bool, template: str = JUDGE_PROMPT) -> str:
    history = "\n".join(f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in view["history"])
    a, b = (view["right"], view["left"]) if swap else (view["left"], view["right"])
    return template.format(history=history or "(none)", user=view["user"], reply_a=a, reply_b=b)


def judge_study(study: Study, url: str, config: PairwiseConfig, judge_model: str | None = None,
                prompt_file: str | Path | None = None, limit: int | None = None,
                log: Callable[[str], None] = lambda _: None) -> dict[str, int | str]:  # fmt: skip
    """Judge every item of `study` not yet judged by this judge (both orders); counts of the outcome."""
    endpoint = Endpoint(url, config.timeout_s, config.retries, config.backoff_s)
    name = endpoint.model_name(judge_model, flag="--judge-model")  # a judge that is down stops here
    template = Path(prompt_file).read_text(encoding="utf-8") if prompt_file else JUDGE_PROMPT
    done = {j["item_id"] for j in study.judge_votes() if j["judge"] == name and j["choice"] is not None}
    todo = [item for item in study.items() if item.id not in done][:limit]

    def ask(prompt: str) -> str:
        return endpoint.chat([{"role": "user", "content": prompt}], name, temperature=0,
                             max_tokens=config.judge_max_tokens)  # fmt: skip

    def one(item_id: int) -> tuple[int, str | None, str | None, str | None, str | None]:
        """(item, first, second, choice, error)."""
        view = study.item_view(item_id)
        verdicts: list[str | None] = []
        try:
            for swap in (False, True):
                reply = ask(judge_prompt(view, swap, template))
                verdict = parse_verdict(reply)
                if verdict is None:
                    return item_id, None, None, None, f"unparseable verdict: {reply[-200:]!r}"
                verdicts.append(_as_side(verdict))
        except EndpointError as err:
            if err.fatal:
                raise
            return item_id, None, None, None, str(err)
        first, second = verdicts
        # `second` was shown swapped: its "left" is the item's right reply
        return item_id, first, second, first if consistent(first, second) else "tie", None

    counts = {"judge": name, "judged": 0, "consistent": 0, "failed": 0}
    with ThreadPoolExecutor(config.concurrency) as pool:
        for item_id, first, second, choice, error in pool.map(one, [i.id for i in todo]):
            study.save_judge_verdict(item_id, name, first, second, choice, error)
            if error:
                counts["failed"] += 1
                log(f"item {item_id}: not judged: {error}")
                continue
            counts["judged"] += 1
            counts["consistent"] += int(consistent(first, second))
    return counts
