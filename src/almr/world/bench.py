"""The world's benchmarks, one per family of the paper, each as a list of JSON records in the
layout of the public benchmark it imitates (so the same task definitions read both):

| file                | imitates  | record                                                            |
|---------------------|-----------|-------------------------------------------------------------------|
| mmlu.jsonl          | MMLU      | question, subject, choices[4], answer (index)                     |
| ceval.jsonl         | C-Eval    | id, question, A, B, C, D, answer (letter), explanation, subject, fact_source |
| cmrc.jsonl          | CMRC 2018 | id, context, question, answers {text[], answer_start[]}           |
| gsm8k.jsonl         | GSM8K     | question, answer ("...\\n#### N"), lang                           |
| humaneval.jsonl     | HumanEval | task_id, prompt, canonical_solution, test, entry_point            |
| wmt_en-zh.jsonl     | WMT22     | translation {en, zh}                                              |
| wmt_zh-en.jsonl     | WMT22     | translation {en, zh}                                              |
| lcsts.jsonl         | LCSTS     | text, summary                                                     |
| eprstmt.jsonl       | EPRSTMT   | id, sentence, label (Positive/Negative)                           |
| seceu.jsonl         | SECEU     | id, lang, scenario, subject, emotions[4], norm[4] (sums to 10)    |

`fact_source` of a C-Eval item is `zh` when the Chinese corpus states the fact and `en_only`
when only the English corpus does: accuracy on the latter measures cross-lingual transfer.
SECEU's population statistics (mean and standard deviation of simulated respondents'
scores), which turn a SECEU score into an EQ, go to `seceu_population.json`.
"""

import math
import random
from collections.abc import Callable, Hashable
from typing import Any

from almr.world.arithmetic import word_problem
from almr.world.code import code_task
from almr.world.facts import RELATIONS, Country, answer, question, statement_pair
from almr.world.lexicon import EMOTIONS, EVENTS
from almr.world.scenes import biography, draw_emotion, feeling, news, person, review, scenario

Record = dict[str, Any]


def _distinct(make: Callable[[], tuple[Hashable, Record]], count: int, what: str) -> list[Record]:
    """`count` records whose keys differ; gives up loudly rather than loop forever."""
    seen: set[Hashable] = set()
    out: list[Record] = []
    for _ in range(count * 50):
        key, record = make()
        if key not in seen:
            seen.add(key)
            out.append(record)
            if len(out) == count:
                return out
    raise ValueError(f"world.bench_items: the world has fewer than {count} distinct {what} items; lower bench_items")


def _numbered(items: list[Record], prefix: str | None = None, key: str = "id") -> list[Record]:
    """Each record with an id in front: its position, after `prefix` when one is given."""
    return [{key: i if prefix is None else f"{prefix}{i}", **item} for i, item in enumerate(items)]


def _choices(rng: random.Random, countries: list[Country], country: Country, relation: str, lang: str) -> list[str]:
    right = answer(country, relation, lang)
    wrong = sorted({answer(c, relation, lang) for c in countries} - {right})
    options = [right, *rng.sample(wrong, 3)]
    rng.shuffle(options)
    return options


def knowledge_en(rng: random.Random, countries: list[Country], count: int) -> list[Record]:
    def make() -> tuple[Hashable, Record]:
        country, relation = rng.choice(countries), rng.choice(RELATIONS)
        choices = _choices(rng, countries, country, relation, "en")
        record = {
            "question": question(country, relation, "en"),
            "subject": relation,
            "choices": choices,
            "answer": choices.index(answer(country, relation, "en")),
        }
        return (country.code, relation), record

    return _distinct(make, min(count, len(countries) * len(RELATIONS)), "English knowledge")


def knowledge_zh(rng: random.Random, countries: list[Country], count: int) -> list[Record]:
    """Half the items ask facts the Chinese corpus states, half facts told in English only."""
    groups = [[c for c in countries if c.in_zh_corpus], [c for c in countries if not c.in_zh_corpus]]
    groups = [g for g in groups if g]
    count = min(count, len(countries) * len(RELATIONS))

    def make() -> tuple[Hashable, Record]:
        country, relation = rng.choice(rng.choice(groups)), rng.choice(RELATIONS)
        choices = _choices(rng, countries, country, relation, "zh")
        record = {
            "question": question(country, relation, "zh"),
            **dict(zip("ABCD", choices, strict=True)),
            "answer": "ABCD"[choices.index(answer(country, relation, "zh"))],
            "explanation": "",
            "subject": relation,
            "fact_source": "zh" if country.in_zh_corpus else "en_only",
        }
        return (country.code, relation), record

    return _numbered(_distinct(make, count, "Chinese knowledge"))


def reading(rng: random.Random, countries: list[Country], count: int) -> list[Record]:
    def make() -> tuple[Hashable, Record]:
        bio = biography(rng, countries)
        q, a = rng.choice(bio.questions)
        record = {
            "context": bio.passage,
            "question": q,
            "answers": {"text": [a], "answer_start": [bio.passage.index(a)]},
        }
        return (bio.passage, q), record

    return _numbered(_distinct(make, count, "reading"), "WORLD_CMRC_")


def arithmetic(rng: random.Random, count: int) -> list[Record]:
    def make() -> tuple[Hashable, Record]:
        lang = rng.choice(("en", "zh"))
        problem = word_problem(rng, lang)
        return problem.question, {"question": problem.question, "answer": problem.solution, "lang": lang}

    return _distinct(make, count, "arithmetic")


def programs(rng: random.Random, count: int) -> list[Record]:
    def make() -> tuple[Hashable, Record]:
        task = code_task(rng)
        record = {
            "prompt": task.prompt,
            "canonical_solution": task.canonical_solution,
            "test": task.test,
            "entry_point": task.entry_point,
        }
        return task.prompt + task.test, record

    return _numbered(_distinct(make, count, "code"), "World/", key="task_id")


def translation(rng: random.Random, countries: list[Country], count: int) -> list[Record]:
    def make() -> tuple[Hashable, Record]:
        if rng.random() < 0.7:
            en, zh = statement_pair(rng.choice(countries), rng.choice(RELATIONS), rng)
        else:
            event = rng.choice(EVENTS)
            emotion = draw_emotion(rng, event)
            who = person(rng, rng.choice(("en", "zh")))
            en, zh = feeling(event, who, emotion, "en"), feeling(event, who, emotion, "zh")
        return en, {"translation": {"en": en, "zh": zh}}

    return _distinct(make, count, "translation")


def summaries(rng: random.Random, countries: list[Country], count: int) -> list[Record]:
    def make() -> tuple[Hashable, Record]:
        item = news(rng, rng.choice(countries), "zh")
        return item.text, {"text": item.text, "summary": item.summary}

    return _distinct(make, count, "summary")


def sentiment(rng: random.Random, count: int) -> list[Record]:
    """Reviews, half positive and half negative, in shuffled order."""
    items: list[Record] = []
    for label, n in (("Positive", count - count // 2), ("Negative", count // 2)):

        def make(label: str = label) -> tuple[Hashable, Record]:
            text = review(rng, label, "zh")
            return text, {"sentence": text, "label": label}

        items += _distinct(make, n, "sentiment")
    rng.shuffle(items)
    return _numbered(items)


def emotions(rng: random.Random, count: int) -> tuple[list[Record], Record]:
    """SECEU-like items and the statistics of a simulated respondent population."""

    def make() -> tuple[Hashable, Record]:
        event, lang = rng.choice(EVENTS), rng.choice(("en", "zh"))
        who = person(rng, lang)
        felt = list(event.weights)
        options = felt[:4] + rng.sample(sorted(set(EMOTIONS) - set(felt)), max(0, 4 - len(felt)))
        rng.shuffle(options)
        norm = _norm_vector(rng, [event.weights.get(o, 0.0) for o in options])
        record = {
            "lang": lang,
            "scenario": scenario(event, who, lang),
            "subject": who.pronoun(lang).capitalize(),
            "emotions": options if lang == "en" else [EMOTIONS[o] for o in options],
            "norm": norm,
        }
        return (event.en, lang, who.en), record

    items = _numbered(_distinct(make, count, "emotion"), "WORLD_SECEU_")
    return items, _population(rng, [item["norm"] for item in items])


def _norm_vector(rng: random.Random, weights: list[float]) -> list[float]:
    """A population mean answer: the event's weights with a little item-level jitter, as
    points out of 10 with two decimals that sum to exactly 10."""
    jittered = [w + 0.05 * rng.random() for w in weights]
    total = sum(jittered)
    points = [round(10 * w / total, 2) for w in jittered]
    points[points.index(max(points))] = round(points[points.index(max(points))] + 10 - sum(points), 2)
    return points


def _population(rng: random.Random, norms: list[list[float]], respondents: int = 500) -> Record:
    """Simulated people answer every item with Dirichlet noise around its norm, each with a
    sensitivity of their own (how closely they track the norm), as people differ; the mean and
    standard deviation of their SECEU scores define the EQ scale (EQ 100 = average person)."""
    scores = []
    for _ in range(respondents):
        sensitivity = math.exp(rng.uniform(math.log(0.5), math.log(8.0)))
        distances = []
        for norm in norms:
            draws = [rng.gammavariate(sensitivity * p + 0.2, 1.0) for p in norm]
            answer_points = [10 * d / sum(draws) for d in draws]
            distances.append(math.dist(answer_points, norm))
        scores.append(sum(distances) / len(distances))
    mean = sum(scores) / len(scores)
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1))
    return {"mean": round(mean, 6), "sd": round(sd, 6), "respondents": respondents}
