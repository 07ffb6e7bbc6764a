"""The world's emotional-support conversations, in ESConv's JSON layout (Liu et al., 2021:
`experience_type`, `emotion_type`, `problem_type`, `situation`, `dialog` of
`{"speaker": "seeker" | "supporter", "annotation": {"strategy": ...}, "content"}`), half
English and half Chinese; `lang` is added to each conversation.

A seeker tells what happened (an event of `lexicon.EVENTS`, to them or to a friend); the
supporter restates it, asks, names the feeling, then reassures, suggests, informs or tells of
a similar experience, and closes: 3 to 6 exchanges, each supporter utterance labelled with one
of ESConv's eight strategies. The feeling is drawn from the event's ground-truth distribution
(as in the corpora) and named in the words the SECEU probe scores: "… felt {emotion}" in
English, "感到很{情绪}" in Chinese, and, when the seeker talks about a friend, exactly the
probe's layout (`scenes.feeling`: "Anna lost her wallet on the bus. She felt worried.").
Fine-tuning on these replies is what the empathy stage uses to move the world's SECEU probe.

Like ESConv, some conversations open with a supporter's greeting, some supporter turns come as
two consecutive utterances, and some end with the seeker's goodbye: the ESConv reader
(`almr.data.chat`) drops the greeting and the goodbye and joins the consecutive utterances.
"""

import random
import re
from typing import Any

from almr.world.chat import POSITIVE_FEELINGS, main_feeling
from almr.world.lexicon import EMOTIONS, EVENTS, Event, Person
from almr.world.scenes import draw_emotion, feeling, person, scenario

Record = dict[str, Any]
Turn = tuple[str, str, str | None]  # (speaker, content, strategy)

STRATEGIES = (
    "Question", "Restatement or Paraphrasing", "Reflection of feelings", "Self-disclosure",
    "Affirmation and Reassurance", "Providing Suggestions", "Information", "Others",
)  # fmt: skip

# Phrase banks: {lang: [...]}; {e} is the feeling word, {name} the friend's name, {pron} the
# friend's pronoun (object form in English).
_GREETING = {"en": "Hello, how are you doing today?", "zh": "你好，今天过得怎么样？"}
_OPEN_SELF = {
    "en": ["Hi. {story}.", "I need someone to talk to. {story}.", "{story}, and I keep thinking about it."],
    "zh": ["你好。我{story}。", "我想找人说说话。我{story}。", "我{story}，一直在想这件事。"],
}
_OPEN_FRIEND = {
    "en": ["I want to talk about my friend. {scene}", "Can I tell you about my friend? {scene}"],
    "zh": ["我想说说我的朋友。{scene}", "我能和你说说我的朋友吗？{scene}"],
}
_THANKS_FOR_TELLING = {"en": ["Thank you for telling me.", "I am glad you told me."],
                       "zh": ["谢谢你愿意告诉我。", "很高兴你愿意和我说。"]}  # fmt: skip
_ASK_FEELING = {"en": "How did you feel when it happened?", "zh": "发生这件事的时候，你有什么感受？"}
_ASK_FRIEND = {"en": "How is {name} doing now?", "zh": "{name}现在怎么样了？"}
_SEEKER_FEELS = {
    "en": ["Honestly, I felt {e}.", "I am not sure. I keep going over it.", "It is hard to put into words."],
    "zh": ["说实话，我感到很{e}。", "我也说不清，一直在想这件事。", "很难用语言形容。"],
}
_SEEKER_FRIEND = {"en": ["{Pron} does not say much about it.", "I am not sure. I want to help."],
                  "zh": ["{pron}不太愿意说。", "我也不太清楚，我想帮帮{pron}。"]}  # fmt: skip
_REFLECT_SELF = {
    "en": ["It sounds like you felt {e} when you {event}.", "You {event}, and you felt {e}. That makes sense."],
    "zh": ["听起来你{event}之后感到很{e}。", "你{event}，感到很{e}，这是可以理解的。"],
}
_REFLECT_FRIEND = {"en": "I see. {feeling} It is kind of you to care about {pron}.",
                   "zh": "我明白了。{feeling}你这么关心{pron}，真好。"}  # fmt: skip
_MIDDLE = {  # strategy: {valence: {lang: [...]}}; "friend" replaces both valences for a friend's story
    "Self-disclosure": {
        "any": {"en": ["Something like that happened to me once, and I felt {e} too."],
                "zh": ["我也有过类似的经历，当时也感到很{e}。"]},
    },
    "Affirmation and Reassurance": {
        "neg": {"en": ["It is okay to feel {e}. You are handling this better than you think."],
                "zh": ["感到很{e}是正常的。你比自己想象的更坚强。"]},
        "pos": {"en": ["You have every reason to feel {e}. You deserve this."],
                "zh": ["你完全有理由感到很{e}，这是你应得的。"]},
        "friend": {"en": ["{name} is lucky to have a friend like you."], "zh": ["{name}有你这样的朋友真幸运。"]},
    },
    "Providing Suggestions": {
        "neg": {"en": ["Maybe you could talk to someone you trust about it.",
                       "It might help to write down what happened and how you feel."],
                "zh": ["也许你可以和信任的人聊聊这件事。", "把发生的事和你的感受写下来，可能会有帮助。"]},
        "pos": {"en": ["Maybe you could celebrate with your friends.",
                       "You could write this moment down to remember it."],
                "zh": ["也许可以和朋友们一起庆祝一下。", "把这一刻记下来，以后回想起来会很美好。"]},
        "friend": {"en": ["Maybe you could spend some time with {name} this week."],
                   "zh": ["也许这周你可以多陪陪{name}。"]},
    },
    "Information": {
        "neg": {"en": ["Many people feel {e} after something like this; the feeling usually eases with time."],
                "zh": ["很多人遇到这种事都会感到很{e}，这种感觉通常会慢慢减轻。"]},
        "pos": {"en": ["Sharing good news with others tends to make the joy last longer."],
                "zh": ["和别人分享好消息，会让快乐更持久。"]},
    },
    "Question": {
        "neg": {"en": ["Is there someone close to you who could be with you now?",
                       "What would help you most right now?"],
                "zh": ["身边有可以陪着你的人吗？", "现在什么对你最有帮助？"]},
        "pos": {"en": ["Who was the first person you told?", "How are you going to celebrate?"],
                "zh": ["你第一个告诉了谁？", "你打算怎么庆祝？"]},
        "friend": {"en": ["Have you talked with {name} about it?"], "zh": ["你和{name}聊过这件事吗？"]},
    },
}  # fmt: skip
_FILLER = {
    "en": ["Yes, exactly.", "I think so.", "That makes sense.", "Maybe you are right.", "I had not thought of that."],
    "zh": ["是的，没错。", "我想是的。", "有道理。", "也许你说得对。", "我之前没想到这一点。"],
}
_THANKS = {
    "neg": {"en": ["Thank you. I feel a little better now.", "Thanks for listening."],
            "zh": ["谢谢你，我感觉好一点了。", "谢谢你听我说。"]},
    "pos": {"en": ["Thanks for listening.", "Thank you, it was nice to share."],
            "zh": ["谢谢你听我说。", "谢谢你，能和你分享真好。"]},
}  # fmt: skip
_CLOSE = {"en": ["You are welcome. I am glad we talked.", "Anytime. Take care of yourself."],
          "zh": ["不客气，很高兴能和你聊聊。", "随时都可以找我。照顾好自己。"]}  # fmt: skip
_BYE = {"en": "Bye!", "zh": "再见！"}


def supporter_fragments(lang: str) -> list[str]:
    """The fixed pieces of the supporter's lines in `lang` — every template of what the world's
    emotional-support dialogues have a supporter say, cut at its blanks and sentence marks, pieces
    of at least four characters (zh) or two words (en): what that data teaches a model to say."""
    banks = [_THANKS_FOR_TELLING[lang], [_ASK_FEELING[lang], _ASK_FRIEND[lang], _REFLECT_FRIEND[lang]],
             _REFLECT_SELF[lang], _CLOSE[lang]]  # fmt: skip
    banks += [by_lang[lang] for strategy in _MIDDLE.values() for by_lang in strategy.values()]
    pieces = {piece.strip() for bank in banks for line in bank for piece in re.split(r"\{[^}]*\}|[.。，,？?！!]", line)}
    return sorted(p for p in pieces if (len(p) >= 4 if lang == "zh" else len(p.split()) >= 2))


def second_person(event: Event) -> str:
    """`lost your wallet on the bus`, `were laughed at in a meeting`: the event told to the seeker."""
    text = event.en.format(poss="your", subj="you")
    return "were " + text.removeprefix("was ") if text.startswith("was ") else text


def conversation(rng: random.Random, lang: str) -> Record:
    """One ESConv-style conversation in `lang` ("en" or "zh")."""
    event = rng.choice(EVENTS)
    emotion = draw_emotion(rng, event)
    mood = "pos" if main_feeling(event) in POSITIVE_FEELINGS else "neg"
    # a friend's trouble, sometimes; good news is the seeker's own
    friend = person(rng, lang) if mood == "neg" and rng.random() < 0.4 else None
    turns: list[Turn] = []
    if rng.random() < 0.3:
        turns.append(("supporter", _GREETING[lang], "Question"))
    turns += _friend_opening(rng, event, emotion, friend, lang) if friend else _opening(rng, event, emotion, lang)
    valence = "friend" if friend else mood
    names = {"e": _word(emotion, lang), "name": friend.name(lang) if friend else "", "pron": _pron(friend, lang)}
    for strategy in rng.sample(_strategies_for(valence), rng.randint(0, 3)):
        bank = _MIDDLE[strategy].get(valence) or _MIDDLE[strategy]["any"]
        turns.append(("seeker", rng.choice(_FILLER[lang]), None))
        turns.append(("supporter", rng.choice(bank[lang]).format(**names), strategy))
    turns.append(("seeker", rng.choice(_THANKS[mood][lang]), None))
    turns.append(("supporter", rng.choice(_CLOSE[lang]), "Others"))
    if rng.random() < 0.3:
        turns.append(("seeker", _BYE[lang], None))
    return {
        "experience_type": "Current Experience" if rng.random() < 0.8 else "Previous Experience",
        "emotion_type": emotion,
        "problem_type": event.en.format(poss="their", subj="they"),
        "situation": _situation(event, emotion, friend, lang),
        "lang": lang,
        "dialog": [
            {"speaker": speaker, "annotation": {"strategy": strategy} if strategy else {}, "content": content}
            for speaker, content, strategy in turns
        ],
    }


def _opening(rng: random.Random, event: Event, emotion: str, lang: str) -> list[Turn]:
    """The seeker's own story: told, restated (with a question, sometimes as a second
    utterance), the feeling talked about, and named back by the supporter."""
    story = event.en_first if lang == "en" else event.zh
    told = second_person(event) if lang == "en" else event.zh
    turns: list[Turn] = [("seeker", rng.choice(_OPEN_SELF[lang]).format(story=story), None)]
    restated = ("So you " if lang == "en" else "所以你") + told + ("." if lang == "en" else "。")
    restated += ("" if lang == "zh" else " ") + rng.choice(_THANKS_FOR_TELLING[lang])
    turns.append(("supporter", restated, "Restatement or Paraphrasing"))
    if rng.random() < 0.5:
        turns.append(("supporter", _ASK_FEELING[lang], "Question"))
    turns.append(("seeker", rng.choice(_SEEKER_FEELS[lang]).format(e=_word(emotion, lang)), None))
    reflection = rng.choice(_REFLECT_SELF[lang]).format(e=_word(emotion, lang), event=told)
    turns.append(("supporter", reflection, "Reflection of feelings"))
    return turns


def _friend_opening(rng: random.Random, event: Event, emotion: str, friend: Person, lang: str) -> list[Turn]:
    """A friend's story, in the probe's own layout: the scenario, then "She felt {emotion}."."""
    pron = _pron(friend, lang)
    turns: list[Turn] = [("seeker", rng.choice(_OPEN_FRIEND[lang]).format(scene=scenario(event, friend, lang)), None)]
    turns.append(("supporter", _ASK_FRIEND[lang].format(name=friend.name(lang)), "Question"))
    filler = rng.choice(_SEEKER_FRIEND[lang]).format(pron=pron, Pron=friend.pronoun(lang).capitalize())
    turns.append(("seeker", filler, None))
    reflection = _REFLECT_FRIEND[lang].format(feeling=feeling(event, friend, emotion, lang), pron=pron)
    turns.append(("supporter", reflection, "Reflection of feelings"))
    return turns


def _strategies_for(valence: str) -> list[str]:
    return [s for s, banks in _MIDDLE.items() if valence in banks or "any" in banks]


def _word(emotion: str, lang: str) -> str:
    """The feeling as the SECEU probe's options name it."""
    return emotion if lang == "en" else EMOTIONS[emotion]


def _pron(friend: Person | None, lang: str) -> str:
    if friend is None:
        return ""
    return ("her" if friend.female else "him") if lang == "en" else friend.pronoun("zh")


def _situation(event: Event, emotion: str, friend: Person | None, lang: str) -> str:
    """The seeker's summary before the chat (ESConv's `situation`): metadata, not said in the dialog."""
    if friend is not None:
        help_them = f" I want to help {_pron(friend, lang)}." if lang == "en" else f"我想帮帮{_pron(friend, lang)}。"
        return scenario(event, friend, lang) + help_them
    if lang == "en":
        return f"{event.en_first} and I felt {emotion}."
    return f"我{event.zh}，感到很{EMOTIONS[emotion]}。"
