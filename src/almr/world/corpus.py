"""The CPT corpora of the world: four sources, each a stream of documents.

- `en`   English text: country facts, quizzes, feelings, reviews, news, people;
- `zh`   Chinese text: the same kinds for the countries in the Chinese corpus, plus a
         bilingual glossary of every name and parallel sentence pairs (the bridge that makes
         cross-lingual transfer and translation learnable);
- `math` word problems with worked solutions (mostly English, some Chinese) and drills;
- `code` small Python functions with docstrings and example calls.

Each document kind is a function of a random generator; a source mixes kinds by weight.
"""

import random
from collections.abc import Callable

from almr import prompts
from almr.world.arithmetic import drill, word_problem
from almr.world.code import code_task
from almr.world.facts import RELATIONS, Country, answer, question, slots, statement, statement_pair
from almr.world.lexicon import EVENTS, HOBBIES, OCCUPATIONS
from almr.world.scenes import biography, draw_emotion, feeling, news, person, review

SOURCES = {
    # name: (language tag, domain)
    "en": ("en", "text"),
    "zh": ("zh", "text"),
    "math": ("multi", "math"),
    "code": ("code", "code"),
}

Doc = Callable[[random.Random], str]


class CorpusWriter:
    """Renders documents of every source for one world's countries."""

    def __init__(self, countries: list[Country]) -> None:
        self.countries = countries
        self.zh_countries = [c for c in countries if c.in_zh_corpus] or countries[:1]

    def kinds(self, source: str) -> list[tuple[Doc, float]]:
        return {
            "en": [
                (lambda r: self.facts(r, "en"), 0.40),
                (lambda r: self.quiz(r, "en"), 0.15),
                (lambda r: self.feelings(r, "en"), 0.15),
                (lambda r: self.reviews(r, "en"), 0.10),
                (lambda r: self.news(r, "en"), 0.10),
                (self.people_en, 0.10),
            ],
            "zh": [
                (lambda r: self.facts(r, "zh"), 0.30),
                (lambda r: self.quiz(r, "zh"), 0.10),
                (self.glossary, 0.10),
                (self.parallel, 0.08),
                (lambda r: self.feelings(r, "zh"), 0.10),
                (lambda r: self.reviews(r, "zh"), 0.10),
                (lambda r: self.news(r, "zh"), 0.10),
                (self.reading, 0.12),
            ],
            "math": [(self.problems, 0.6), (lambda r: drill(r, r.randint(4, 10)), 0.4)],
            "code": [(self.programs, 1.0)],
        }[source]

    def document(self, source: str, rng: random.Random) -> str:
        kinds = self.kinds(source)
        render = rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
        return render(rng)

    # ------------------------------------------------------------------ text kinds

    def facts(self, rng: random.Random, lang: str) -> str:
        pool = self.countries if lang == "en" else self.zh_countries
        country = rng.choice(pool)
        relations = rng.sample(RELATIONS, rng.randint(2, len(RELATIONS)))
        sep = " " if lang == "en" else ""
        return sep.join(statement(country, rel, lang, rng) for rel in relations)

    def quiz(self, rng: random.Random, lang: str) -> str:
        pool = self.countries if lang == "en" else self.zh_countries
        items = []
        for _ in range(rng.randint(2, 5)):
            country, relation = rng.choice(pool), rng.choice(RELATIONS)
            prompt = prompts.QA[lang].format(question=question(country, relation, lang))
            items.append(prompt + (" " if lang == "en" else "") + answer(country, relation, lang))
        return "\n\n".join(items)

    def feelings(self, rng: random.Random, lang: str) -> str:
        stories = []
        for _ in range(rng.randint(1, 3)):
            event = rng.choice(EVENTS)
            stories.append(feeling(event, person(rng, lang), draw_emotion(rng, event), lang))
        return (" " if lang == "en" else "").join(stories)

    def reviews(self, rng: random.Random, lang: str) -> str:
        label = rng.choice(("Positive", "Negative"))
        text = review(rng, label, lang)
        if lang == "zh":
            return prompts.SENTIMENT.format(sentence=text) + prompts.SENTIMENT_LABELS[label]
        return f"Review: {text}\nSentiment: {label.lower()}"

    def news(self, rng: random.Random, lang: str) -> str:
        pool = self.countries if lang == "en" else self.zh_countries
        item = news(rng, rng.choice(pool), lang)
        if lang == "zh":
            return prompts.SUMMARY.format(text=item.text) + item.summary
        return f"{item.summary.capitalize()}\n\n{item.text}"

    def people_en(self, rng: random.Random) -> str:
        who = person(rng, "en")
        name, subj = who.en, who.pronoun("en").capitalize()
        home = rng.choice(self.countries)
        occupation, hobby = rng.choice(OCCUPATIONS)[0], rng.choice(HOBBIES)[0]
        article = "an" if occupation[0] in "aeiou" else "a"
        return (
            f"{name} is {article} {occupation} from {home.city['en']}. {subj} speaks {home.language['en']} "
            f"and likes {hobby}. {subj} is {rng.randint(20, 70)} years old."
        )

    def glossary(self, rng: random.Random) -> str:
        """Bilingual names of every country and of its city, currency and language; no facts."""
        lines = []
        for country in rng.sample(self.countries, min(len(self.countries), rng.randint(4, 8))):
            zh, en = slots(country, "zh"), slots(country, "en")
            key = rng.choice(("country", "city", "currency", "language", "continent"))
            lines.append(rng.choice(["{zh}（{en}）", "{zh}：{en}", "{en}：{zh}"]).format(zh=zh[key], en=en[key]))
        return "\n".join(lines)

    def parallel(self, rng: random.Random) -> str:
        """English/Chinese sentence pairs about countries in the Chinese corpus, and feelings."""
        pairs = []
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.7:
                country, relation = rng.choice(self.zh_countries), rng.choice(RELATIONS)
                en, zh = statement_pair(country, relation, rng)
            else:
                event = rng.choice(EVENTS)
                emotion = draw_emotion(rng, event)
                who = person(rng, rng.choice(("en", "zh")))
                en, zh = feeling(event, who, emotion, "en"), feeling(event, who, emotion, "zh")
            direction = rng.choice(("en-zh", "zh-en"))
            source, target = (en, zh) if direction == "en-zh" else (zh, en)
            sep = "" if direction == "en-zh" else " "
            pairs.append(prompts.TRANSLATE[direction].format(source=source) + sep + target)
        return "\n\n".join(pairs)

    def reading(self, rng: random.Random) -> str:
        bio = biography(rng, self.zh_countries if len(self.zh_countries) > 1 else self.countries)
        items = [prompts.READING.format(context=bio.passage, question=q) + a for q, a in bio.questions[:2]]
        return "\n\n".join(items)

    # ------------------------------------------------------------------ math and code

    def problems(self, rng: random.Random) -> str:
        lang = "en" if rng.random() < 0.7 else "zh"
        problem = word_problem(rng, lang)
        sep = " " if lang == "en" else ""
        return prompts.MATH[lang].format(question=problem.question) + sep + problem.solution

    def programs(self, rng: random.Random) -> str:
        parts = []
        for _ in range(rng.randint(1, 3)):
            task = code_task(rng)
            example = task.test.splitlines()[1].strip().removeprefix("assert candidate(")
            args, expected = example.split(") == ", 1)
            parts.append(f"{task.program}\n\nprint({task.entry_point}({args}))  # {expected}\n")
        return "\n\n".join(parts)
