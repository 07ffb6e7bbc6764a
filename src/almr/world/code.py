"""Tiny Python programs in the HumanEval layout: a signature with a docstring (`prompt`), the
body that solves it (`canonical_solution`), a `check(candidate)` function of asserts (`test`)
and the function's name (`entry_point`). Each family draws its names and constants from the
seed, so the corpus and the benchmark hold different instances of the same skills."""

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class CodeTask:
    entry_point: str
    prompt: str
    canonical_solution: str
    test: str

    @property
    def program(self) -> str:
        return self.prompt + self.canonical_solution


def _task(name: str, signature: str, doc: str, body: str, calls: list[tuple[str, object]]) -> CodeTask:
    prompt = f'def {name}({signature}:\n    """{doc}"""\n'
    asserts = "".join(f"    assert candidate({args}) == {expected!r}\n" for args, expected in calls)
    return CodeTask(name, prompt, f"    {body}\n", f"def check(candidate):\n{asserts}")


def _ints(rng: random.Random, n: int, lo: int = -20, hi: int = 40) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


def _add_constant(rng: random.Random) -> CodeTask:
    k = rng.randint(2, 99)
    var = rng.choice(("x", "n", "value"))
    xs = _ints(rng, 3)
    return _task(
        f"add_{k}",
        f"{var}: int) -> int",
        f"Return {var} plus {k}.",
        f"return {var} + {k}",
        [(str(x), x + k) for x in xs],
    )


def _multiply_constant(rng: random.Random) -> CodeTask:
    k = rng.randint(2, 19)
    var = rng.choice(("x", "n", "value"))
    xs = [x for x in _ints(rng, 4) if x][:3] or [3, 5, 7]
    return _task(
        f"times_{k}",
        f"{var}: int) -> int",
        f"Return {var} multiplied by {k}.",
        f"return {var} * {k}",
        [(str(x), x * k) for x in xs],
    )


def _is_multiple(rng: random.Random) -> CodeTask:
    k = rng.randint(2, 12)
    yes = [k * rng.randint(1, 9) for _ in range(2)]
    no = [k * rng.randint(0, 9) + rng.randint(1, k - 1) for _ in range(2)]
    return _task(
        f"is_multiple_of_{k}",
        "n: int) -> bool",
        f"Return True if n is a multiple of {k}, else False.",
        f"return n % {k} == 0",
        [(str(n), True) for n in yes] + [(str(n), False) for n in no],
    )


def _sum_list(rng: random.Random) -> CodeTask:
    name = rng.choice(("total", "sum_all", "add_up"))
    cases = [_ints(rng, rng.randint(2, 5)) for _ in range(3)]
    return _task(
        name,
        "xs: list[int]) -> int",
        "Return the sum of the numbers in xs.",
        "return sum(xs)",
        [(repr(c), sum(c)) for c in cases],
    )


def _largest(rng: random.Random) -> CodeTask:
    name = rng.choice(("largest", "biggest", "max_of"))
    cases = [_ints(rng, rng.randint(2, 5)) for _ in range(3)]
    return _task(
        name,
        "xs: list[int]) -> int",
        "Return the largest number in xs.",
        "return max(xs)",
        [(repr(c), max(c)) for c in cases],
    )


def _count_char(rng: random.Random) -> CodeTask:
    char = rng.choice("aeiost")
    words = ["banana", "session", "tattoo", "assist", "teeth", "mississippi", "potato", "eerie", "toast"]
    cases = rng.sample(words, 3)
    if all(w.count(char) == 0 for w in cases):
        cases[0] = char * 3
    return _task(
        f"count_{char}",
        "s: str) -> int",
        f"Count how many times '{char}' appears in s.",
        f"return s.count({char!r})",
        [(repr(w), w.count(char)) for w in cases],
    )


def _repeat(rng: random.Random) -> CodeTask:
    k = rng.randint(2, 5)
    words = rng.sample(["ab", "hi", "xyz", "go", "na", "ok"], 3)
    return _task(
        f"repeat_{k}",
        "s: str) -> str",
        f"Return s repeated {k} times.",
        f"return s * {k}",
        [(repr(w), w * k) for w in words],
    )


def _reverse(rng: random.Random) -> CodeTask:
    name = rng.choice(("reverse", "backwards", "flip"))
    words = rng.sample(["hello", "stressed", "python", "abc", "level", "world"], 3)
    return _task(
        name,
        "s: str) -> str",
        "Return s with its characters in reverse order.",
        "return s[::-1]",
        [(repr(w), w[::-1]) for w in words],
    )


def _keep_above(rng: random.Random) -> CodeTask:
    k = rng.randint(0, 20)
    cases = [_ints(rng, 5, -5, 40) for _ in range(3)]
    return _task(
        f"above_{k}",
        "xs: list[int]) -> list[int]",
        f"Return the numbers in xs that are greater than {k}, in order.",
        f"return [x for x in xs if x > {k}]",
        [(repr(c), [x for x in c if x > k]) for c in cases],
    )


def _squares(rng: random.Random) -> CodeTask:
    name = rng.choice(("squares", "square_all", "squared"))
    cases = [_ints(rng, rng.randint(2, 4), -9, 9) for _ in range(3)]
    return _task(
        name,
        "xs: list[int]) -> list[int]",
        "Return the square of each number in xs.",
        "return [x * x for x in xs]",
        [(repr(c), [x * x for x in c]) for c in cases],
    )


def _clamp(rng: random.Random) -> CodeTask:
    lo = rng.randint(-10, 10)
    hi = lo + rng.randint(5, 30)
    xs = [lo - rng.randint(1, 9), hi + rng.randint(1, 9), rng.randint(lo, hi)]
    return _task(
        f"clamp_{lo}_{hi}".replace("-", "m"),
        "x: int) -> int",
        f"Return x limited to the range from {lo} to {hi}.",
        f"return min(max(x, {lo}), {hi})",
        [(str(x), min(max(x, lo), hi)) for x in xs],
    )


def _label(rng: random.Random) -> CodeTask:
    k = rng.randint(3, 9)
    word = rng.choice(("fizz", "buzz", "bing", "pop"))
    xs = [k * rng.randint(1, 9), k * rng.randint(1, 9) + 1, k * rng.randint(1, 9) + 2]
    return _task(
        f"{word}_{k}",
        "n: int) -> str",
        f'Return "{word}" if n is divisible by {k}, else str(n).',
        f'return "{word}" if n % {k} == 0 else str(n)',
        [(str(n), word if n % k == 0 else str(n)) for n in xs],
    )


FAMILIES: list[Callable[[random.Random], CodeTask]] = [
    _add_constant, _multiply_constant, _is_multiple, _sum_list, _largest, _count_char,
    _repeat, _reverse, _keep_above, _squares, _clamp, _label,
]  # fmt: skip


def code_task(rng: random.Random) -> CodeTask:
    return rng.choice(FAMILIES)(rng)
