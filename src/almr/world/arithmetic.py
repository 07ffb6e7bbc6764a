"""Arithmetic word problems in English and Chinese with worked solutions in the GSM8K
layout (reasoning lines, then `#### N`), and plain arithmetic drills."""

import random
from dataclasses import dataclass

from almr.world.lexicon import EN_PEOPLE, THINGS, ZH_PEOPLE


@dataclass(frozen=True)
class WordProblem:
    question: str
    solution: str  # reasoning, then "#### N" on the last line
    answer: int


def word_problem(rng: random.Random, lang: str) -> WordProblem:
    kind = rng.choice(("add", "subtract", "multiply", "two_step"))
    _, plural, zh_noun, measure = rng.choice(THINGS)
    people = EN_PEOPLE if lang == "en" else ZH_PEOPLE
    who, other = rng.sample(people, 2)
    name, friend = who.name(lang), other.name(lang)
    subj = who.pronoun(lang).capitalize()
    if kind == "add":
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        result, steps = a + b, [f"{a} + {b} = {a + b}"]
        q = {
            "en": f"{name} has {a} {plural}. {subj} buys {b} more. How many {plural} does {name} have now?",
            "zh": f"{name}有{a}{measure}{zh_noun}，又买了{b}{measure}。{name}现在有多少{measure}{zh_noun}？",
        }[lang]
    elif kind == "subtract":
        a = rng.randint(10, 90)
        b = rng.randint(1, a - 1)
        result, steps = a - b, [f"{a} - {b} = {a - b}"]
        q = {
            "en": f"{name} has {a} {plural} and gives {b} to {friend}. How many {plural} does {name} have left?",
            "zh": f"{name}有{a}{measure}{zh_noun}，送给{friend}{b}{measure}。{name}还剩多少{measure}{zh_noun}？",
        }[lang]
    elif kind == "multiply":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        result, steps = a * b, [f"{a} × {b} = {a * b}"]
        q = {
            "en": f"{name} buys {a} boxes with {b} {plural} in each box. How many {plural} does {name} buy?",
            "zh": f"{name}买了{a}盒{zh_noun}，每盒有{b}{measure}。{name}一共买了多少{measure}{zh_noun}？",
        }[lang]
    else:
        a, b = rng.randint(5, 50), rng.randint(2, 30)
        c = rng.randint(1, a + b - 1)
        result = a + b - c
        steps = [f"{a} + {b} = {a + b}", f"{a + b} - {c} = {result}"]
        q = {
            "en": f"{name} has {a} {plural}. {subj} buys {b} more and then gives {c} to {friend}. "
            f"How many {plural} does {name} have now?",
            "zh": f"{name}有{a}{measure}{zh_noun}，又买了{b}{measure}，然后送给{friend}{c}{measure}。"
            f"{name}现在有多少{measure}{zh_noun}？",
        }[lang]
    return WordProblem(question=q, solution="\n".join([*steps, f"#### {result}"]), answer=result)


def drill(rng: random.Random, lines: int) -> str:
    """Lines of plain arithmetic facts such as `37 + 48 = 85`."""
    out = []
    for _ in range(lines):
        op = rng.choice("+-×")
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if op == "-" and b > a:
            a, b = b, a
        value = {"+": a + b, "-": a - b, "×": a * b}[op]
        out.append(f"{a} {op} {b} = {value}")
    return "\n".join(out)
