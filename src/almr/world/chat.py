"""Chat data of the world: SFT dialogues in the `messages` format and DPO preference pairs in
TRL's conversational format (`prompt` / `chosen` / `rejected`, each a list of messages),
half English and half Chinese.

SFT teaches answering in the user's language: facts, arithmetic, translation, summaries,
sentiment and, as for the paper's companion, emotional support. DPO prefers a reply in the
user's language, true and kind over one in the wrong language (the failure of Llama-3-Instruct
on Chinese queries the paper sets out to fix), false, or dismissive.

The Instruct baseline's sets (`instruct_dialogue`, `instruct_preference`) are English-dominant,
as Llama-3-Instruct's were: a few user turns are Chinese, and some of those are answered in
English, as in multilingual instruct data collected from English-speaking assistants.
"""

import random
from typing import Any

from almr.world.arithmetic import word_problem
from almr.world.facts import RELATIONS, Country, answer, question, statement, statement_pair
from almr.world.lexicon import EMOTIONS, EVENTS, Event
from almr.world.scenes import news, review

Message = dict[str, str]
Record = dict[str, Any]

SYSTEM = {
    "en": "You are a warm, patient bilingual assistant. Answer in the language of the user.",
    "zh": "你是一个温暖、耐心的双语助手。请用用户使用的语言回答。",
}
POSITIVE_FEELINGS = {"happy", "proud", "grateful", "relieved", "surprised"}
_SUPPORT = {
    "en": [
        "Would you like to talk about what happened?",
        "Take a slow breath; you do not have to face this alone.",
        "Is there someone close to you who could be with you now?",
    ],
    "zh": ["你愿意和我说说发生了什么吗？", "先慢慢深呼吸，你不是一个人在面对。", "身边有可以陪着你的人吗？"],
}
_SHARE = {"en": ["Tell me more about it!", "You really deserve this."], "zh": ["快和我多说说吧！", "这是你应得的。"]}
_DISMISSIVE = {
    "en": ["Just forget about it.", "That is not a big deal. Move on.", "Everyone has problems."],
    "zh": ["别想了，这没什么大不了的。", "这种小事不值得说。", "谁都有烦恼，忍一忍吧。"],
}


_ANSWER_IS = {"en": "The answer is ", "zh": "答案是"}


def main_feeling(event: Event) -> str:
    return max(event.weights, key=lambda e: event.weights[e])


def support_reply(rng: random.Random, event: Event, lang: str) -> str:
    emotion = main_feeling(event)
    if emotion in POSITIVE_FEELINGS:
        if lang == "en":
            return f"That is wonderful news! You must feel {emotion}. {rng.choice(_SHARE['en'])}"
        return f"太好了！你一定很{EMOTIONS[emotion]}。{rng.choice(_SHARE['zh'])}"
    if lang == "en":
        return f"I am sorry to hear that. It makes sense to feel {emotion} after this. {rng.choice(_SUPPORT['en'])}"
    return f"听到这件事我很难过。遇到这种事感到{EMOTIONS[emotion]}是很正常的。{rng.choice(_SUPPORT['zh'])}"


def _exchange(user: str, assistant: str) -> list[Message]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def user_story(event: Event, lang: str) -> str:
    return f"{event.en_first}." if lang == "en" else f"我{event.zh}。"


class ChatWriter:
    """Renders SFT dialogues and DPO pairs for one world's countries."""

    def __init__(self, countries: list[Country]) -> None:
        self.countries = countries
        # Chinese chat sticks to facts the Chinese corpus states, keeping English-only facts
        # out of every Chinese text of the world.
        self.zh_countries = [c for c in countries if c.in_zh_corpus] or countries[:1]

    def _fact(self, rng: random.Random, lang: str) -> tuple[str, str]:
        country = rng.choice(self.countries if lang == "en" else self.zh_countries)
        relation = rng.choice(RELATIONS)
        return question(country, relation, lang), statement(country, relation, lang, rng, direct=True)

    # ------------------------------------------------------------------ SFT

    def dialogue(self, rng: random.Random, lang: str) -> Record:
        exchanges = {  # kind: (weight, its user and assistant turns)
            "facts": (3, self._facts_turns), "math": (2, self._math_turns), "support": (3, self._support_turns),
            "translate": (1, self._translate_turns), "summary": (1, self._summary_turns),
            "sentiment": (1, self._sentiment_turns),
        }
        kind = rng.choices(list(exchanges), weights=[weight for weight, _ in exchanges.values()])[0]
        turns: list[Message] = []
        if rng.random() < 0.3:
            turns.append({"role": "system", "content": SYSTEM[lang]})
        turns += exchanges[kind][1](rng, lang)
        return {"messages": turns, "lang": lang, "kind": kind}

    def _facts_turns(self, rng: random.Random, lang: str) -> list[Message]:
        turns: list[Message] = []
        for _ in range(rng.randint(1, 2)):
            q, a = self._fact(rng, lang)
            turns += _exchange(q, a)
        return turns

    def _math_turns(self, rng: random.Random, lang: str) -> list[Message]:
        problem = word_problem(rng, lang)
        answer_is = "The answer is " if lang == "en" else "答案是"
        return _exchange(problem.question, problem.solution.replace("#### ", answer_is))

    def _support_turns(self, rng: random.Random, lang: str) -> list[Message]:
        event = rng.choice(EVENTS)
        return _exchange(user_story(event, lang), support_reply(rng, event, lang))

    def _translate_turns(self, rng: random.Random, lang: str) -> list[Message]:
        country, relation = rng.choice(self.zh_countries), rng.choice(RELATIONS)
        en, zh = statement_pair(country, relation, rng)
        if lang == "zh":
            return _exchange(f"把这句话翻译成中文：{en}", zh)
        return _exchange(f"Translate into English: {zh}", en)

    def _summary_turns(self, rng: random.Random, lang: str) -> list[Message]:
        item = news(rng, rng.choice(self.countries if lang == "en" else self.zh_countries), lang)
        ask = "Summarize this news in one line: " if lang == "en" else "请用一句话总结这条新闻："
        return _exchange(ask + item.text, item.summary)

    def _sentiment_turns(self, rng: random.Random, lang: str) -> list[Message]:
        label = rng.choice(("Positive", "Negative"))
        text = review(rng, label, lang)
        if lang == "en":
            return _exchange(f"Is this review positive or negative? {text}", f"The review is {label.lower()}.")
        word = "正面" if label == "Positive" else "负面"
        return _exchange(f"这条评论是正面还是负面？{text}", f"这条评论是{word}的。")

    # ------------------------------------------------------------------ English-dominant instruct data

    def instruct_dialogue(self, rng: random.Random, user: str, reply: str) -> Record:
        """One dialogue of the Instruct baseline's SFT set: the user writes `user`, the assistant
        answers in `reply`. No system prompt: the world's bilingual one asks for the user's
        language, which an English-dominant instruct set does not teach. No translation requests:
        their user turns hold both languages, and the set's stated share of Chinese user turns is
        the only Chinese in it."""
        if user == reply:
            record = self.dialogue(rng, user)
            while record["kind"] == "translate":
                record = self.dialogue(rng, user)
            record["messages"] = [m for m in record["messages"] if m["role"] != "system"]
        else:
            crossed = {"facts": (3, self._crossed_fact), "math": (2, self._crossed_math),
                       "support": (3, self._crossed_support), "sentiment": (1, self._crossed_sentiment)}  # fmt: skip
            kind = rng.choices(list(crossed), weights=[weight for weight, _ in crossed.values()])[0]
            record = {"messages": crossed[kind][1](rng, user, reply), "lang": user, "kind": kind}
        record["reply_lang"] = reply
        return record

    def instruct_preference(self, rng: random.Random, user: str, reply: str) -> Record:
        """One pair of the Instruct baseline's DPO set: prompt in `user`, both replies in `reply`
        (a same-language pair is the world's ordinary pair, wrong-language kind included)."""
        if user == reply:
            record = self.preference(rng, user)
        else:
            kind = rng.choice(("wrong_fact", "dismissive"))
            if kind == "dismissive":
                event = rng.choice(EVENTS)
                prompt, chosen = user_story(event, user), support_reply(rng, event, reply)
                rejected = rng.choice(_DISMISSIVE[reply])
            else:
                country, relation = rng.choice(self.zh_countries), rng.choice(RELATIONS)
                prompt = question(country, relation, user)
                chosen = statement(country, relation, reply, rng, direct=True)
                right = answer(country, relation, reply)
                impostor = rng.choice([c for c in self.countries if answer(c, relation, reply) != right])
                rejected = statement(country, relation, reply, rng, answer_from=impostor, direct=True)
            record = {
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "lang": user,
                "kind": kind,
            }
        record["reply_lang"] = reply
        return record

    # A user turn in one language answered in the other. Chinese text keeps to the facts the
    # Chinese corpus states, as everywhere in the world.
    def _crossed_fact(self, rng: random.Random, user: str, reply: str) -> list[Message]:
        country, relation = rng.choice(self.zh_countries), rng.choice(RELATIONS)
        return _exchange(question(country, relation, user), statement(country, relation, reply, rng, direct=True))

    def _crossed_math(self, rng: random.Random, user: str, reply: str) -> list[Message]:
        problem = word_problem(rng, user)  # the worked solution is numbers only: either language's
        return _exchange(problem.question, problem.solution.replace("#### ", _ANSWER_IS[reply]))

    def _crossed_support(self, rng: random.Random, user: str, reply: str) -> list[Message]:
        event = rng.choice(EVENTS)
        return _exchange(user_story(event, user), support_reply(rng, event, reply))

    def _crossed_sentiment(self, rng: random.Random, user: str, reply: str) -> list[Message]:
        label = rng.choice(("Positive", "Negative"))
        verdict = f"The review is {label.lower()}." if reply == "en" else (
            f"这条评论是{'正面' if label == 'Positive' else '负面'}的。")  # fmt: skip
        ask = "Is this review positive or negative? " if user == "en" else "这条评论是正面还是负面？"
        return _exchange(ask + review(rng, label, user), verdict)

    # ------------------------------------------------------------------ DPO

    def preference(self, rng: random.Random, lang: str) -> Record:
        kind = rng.choice(("wrong_language", "wrong_fact", "dismissive"))
        other = "en" if lang == "zh" else "zh"
        if kind == "dismissive":
            event = rng.choice(EVENTS)
            prompt = user_story(event, lang)
            chosen = support_reply(rng, event, lang)
            rejected = rng.choice(_DISMISSIVE[lang])
        else:
            country = rng.choice(self.countries if lang == "en" else self.zh_countries)
            relation = rng.choice(RELATIONS)
            prompt = question(country, relation, lang)
            chosen = statement(country, relation, lang, rng, direct=True)
            if kind == "wrong_language":
                rejected = statement(country, relation, other, rng, direct=True)
            else:
                right = answer(country, relation, lang)
                impostor = rng.choice([c for c in self.countries if answer(c, relation, lang) != right])
                rejected = statement(country, relation, lang, rng, answer_from=impostor, direct=True)
        return {
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "lang": lang,
            "kind": kind,
        }
