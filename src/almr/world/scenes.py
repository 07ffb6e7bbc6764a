"""Small renderable situations — a feeling after an event, a product review, a news item with
its summary, a short biography with questions — each in English and Chinese. The corpora,
the benchmarks and the chat data all draw from these, so a skill seen in pretraining is the
skill a benchmark measures."""

import random
from dataclasses import dataclass

from almr.world.facts import Country
from almr.world.lexicon import (
    EMOTIONS,
    EN_PEOPLE,
    HOBBIES,
    NEGATIVE,
    NEWS_EVENTS,
    OCCUPATIONS,
    POSITIVE,
    PRODUCTS,
    VERDICT,
    ZH_PEOPLE,
    Event,
    Person,
)


def person(rng: random.Random, lang: str) -> Person:
    """Someone texts in `lang` would talk about."""
    return rng.choice(EN_PEOPLE if lang == "en" else ZH_PEOPLE)


def draw_emotion(rng: random.Random, event: Event) -> str:
    names = list(event.weights)
    return rng.choices(names, weights=[event.weights[n] for n in names])[0]


def scenario(event: Event, who: Person, lang: str) -> str:
    """`Anna lost her wallet on the bus.` / `李娜在公交车上丢了钱包。` (the SECEU stem)."""
    if lang == "en":
        return f"{who.en} {event.en.format(poss=who.possessive, subj=who.pronoun('en'))}."
    return f"{who.zh}{event.zh}。"


def feeling(event: Event, who: Person, emotion: str, lang: str) -> str:
    """The scenario followed by the feeling, as the corpora tell it."""
    if lang == "en":
        return f"{scenario(event, who, lang)} {who.pronoun('en').capitalize()} felt {emotion}."
    return f"{scenario(event, who, lang)}{who.pronoun('zh')}感到很{EMOTIONS[emotion]}。"


def review(rng: random.Random, label: str, lang: str) -> str:
    product = rng.choice(PRODUCTS)
    opinion = rng.choice(POSITIVE if label == "Positive" else NEGATIVE)
    verdict = rng.choice(VERDICT[label])
    if lang == "en":
        return f"The {product[0]} {opinion[0]}. {verdict[0]}"
    return f"这个{product[1]}{opinion[1]}，{verdict[1]}"


@dataclass(frozen=True)
class News:
    text: str
    summary: str


def news(rng: random.Random, country: Country, lang: str) -> News:
    """A short news item about an event in a city, with a one-line summary (LCSTS-like)."""
    event = rng.choice(NEWS_EVENTS)
    visitors = rng.randint(2, 90) * 100
    days = rng.randint(2, 9)
    city, name = country.city[lang], country.name[lang]
    if lang == "en":
        sentences = [
            f"This week {city} in {name} held {event[0]}.",
            f"About {visitors} visitors came over {days} days.",
            rng.choice(
                [
                    f"Local shops accepted the {country.currency['en']}.",
                    f"Guides spoke {country.language['en']} and English.",
                    "The organizers said they would hold it again next year.",
                ]
            ),
        ]
        return News(" ".join(sentences), f"{city} holds {event[0]} with {visitors} visitors")
    sentences = [
        f"本周，{name}{city}举办了{event[1]}。",
        f"{days}天里约有{visitors}名游客到场。",
        rng.choice(
            [
                f"当地商店接受{country.currency['zh']}付款。",
                f"导游用{country.language['zh']}和英语讲解。",
                "主办方表示明年还会继续举办。",
            ]
        ),
    ]
    return News("".join(sentences), f"{city}举办{event[1]}，吸引{visitors}名游客")


@dataclass(frozen=True)
class Biography:
    passage: str
    questions: list[tuple[str, str]]  # (question, answer); each answer is a span of the passage


def biography(rng: random.Random, countries: list[Country]) -> Biography:
    """A Chinese passage about a person with span-answer questions (CMRC-like)."""
    who = person(rng, "zh")
    name, pronoun = who.zh, who.pronoun("zh")
    home, work = rng.sample(countries, 2)
    occupation = rng.choice(OCCUPATIONS)[1]
    hobby = rng.choice(HOBBIES)[1]
    age = rng.randint(20, 70)
    facts = [
        (f"{name}今年{age}岁，出生在{home.city['zh']}。", (f"{name}出生在哪里？", home.city["zh"])),
        (f"{pronoun}是一名{occupation}，现在在{work.name['zh']}工作。", (f"{name}的职业是什么？", occupation)),
        (f"{pronoun}会说{home.language['zh']}。", (f"{name}会说什么语言？", home.language["zh"])),
        (f"业余时间，{pronoun}喜欢{hobby}。", (f"{name}业余时间喜欢做什么？", hobby)),
        ("", (f"{name}现在在哪个国家工作？", work.name["zh"])),
        ("", (f"{name}今年多少岁？", str(age))),
    ]
    passage = "".join(sentence for sentence, _ in facts)
    questions = [qa for _, qa in facts]
    rng.shuffle(questions)
    return Biography(passage, questions)
