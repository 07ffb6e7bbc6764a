"""`almr pairwise make`: a study file from dialogues and two or more models.

1. Every source is checked before any reply is collected (endpoints answer GET /models, model
   directories exist, `logged` needs replies in the log).
2. Each model answers every prompt (the same history and user turn); replies are scrubbed of
   model names; a reply that could not be collected is stored as a failure with its reason.
3. For every prompt and every pair of models that both answered, one item. Sides are balanced per
   pair: exactly ⌊n/2⌋ or ⌈n/2⌉ of a pair's n items show its first model on the left, which ones
   drawn by the seed, and the sides are stored with the item.
4. A seeded share (`pairwise.shared_share`) of the items is given to `pairwise.shared_annotators`
   annotators (for agreement); the rest to one. The order annotators meet items is a seeded shuffle.
"""

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from almr.errors import AlmrError
from almr.pairwise.collect import LOGGED, check_source, collect, scrub_names, scrubber
from almr.pairwise.config import PairwiseConfig
from almr.pairwise.dialogues import Prompt, read_prompts
from almr.pairwise.study import Study


@dataclass
class MadeStudy:
    study: Study
    prompts: int
    items: int
    replies: dict[str, int]
    failures: dict[str, int]
    scrubbed: dict[str, int]


def make_study(dialogues: str | Path, models: Mapping[str, str], out: str | Path, config: PairwiseConfig,
               endpoint_models: Mapping[str, str] | None = None,
               log: Callable[[str], None] = lambda _: None) -> MadeStudy:  # fmt: skip
    """Collect every model's replies to the prompts of `dialogues` and write the study file `out`."""
    if len(models) < 2:
        raise AlmrError(f"a pairwise study needs two or more models (--model NAME=SOURCE); got {len(models)}")
    endpoint_models = dict(endpoint_models or {})
    unknown = sorted(set(endpoint_models) - set(models))
    if unknown:
        raise AlmrError(f"--endpoint-model names {', '.join(unknown)}, which no --model names")
    if Path(out).exists():
        raise AlmrError(f"study file {out} already exists; choose another --out or delete it")
    prompts = read_prompts(dialogues, config.turns, config.max_prompts, config.seed)
    if LOGGED in models.values() and not any(p.logged for p in prompts):
        raise AlmrError(f"a model's source is `logged` but {dialogues} holds no assistant reply after any user turn")
    served = {name: check_source(name, source, endpoint_models.get(name), config) for name, source in models.items()}
    scrub = scrubber(scrub_names(models, models.values(), served.values(), config.scrub), config.scrub_with)

    study = Study.create(out, list(models), {
        "sources": dict(models), "served": served, "dialogues": str(dialogues),
        "config": config.model_dump(mode="json"),
    })  # fmt: skip
    try:
        study.add_prompts(prompts)
        collected: dict[str, dict[str, str]] = {}
        summary: dict[str, Any] = {"replies": {}, "failures": {}, "scrubbed": {}}
        for name, source in models.items():
            log(f"collecting {name} ({source}) for {len(prompts)} prompts")
            replies, failures = collect(source, prompts, config, served[name], log)
            cleaned = {key: scrub(text) for key, text in replies.items()}
            study.add_replies(name, cleaned, failures)
            collected[name] = {key: text for key, (text, _) in cleaned.items()}
            summary["replies"][name] = len(replies)
            summary["failures"][name] = len(failures)
            summary["scrubbed"][name] = sum(n > 0 for _, n in cleaned.values())
        rows = item_rows(prompts, list(models), collected, config)
        study.add_items(rows)
    except BaseException:
        # a half-made study would block the rerun (`--out` exists) and hold items of no use
        for leftover in (study.path, Path(f"{study.path}-wal"), Path(f"{study.path}-shm")):
            leftover.unlink(missing_ok=True)
        raise
    return MadeStudy(study, len(prompts), len(rows), **summary)


def item_rows(prompts: list[Prompt], models: list[str], replies: Mapping[str, Mapping[str, str]],
              config: PairwiseConfig) -> list[tuple[str, str, str, int, int]]:  # fmt: skip
    """(prompt_key, model_left, model_right, rank, required) for every prompt and pair both answered."""
    rng = np.random.default_rng(config.seed)
    rows: list[tuple[str, str, str]] = []
    for a, b in itertools.combinations(models, 2):
        keys = [p.key for p in prompts if p.key in replies[a] and p.key in replies[b]]
        # exactly half (up to one) of the pair's items show `a` on the left: balance by construction,
        # not by chance, so a position preference cannot masquerade as a model preference
        flips = np.array([i < len(keys) // 2 for i in range(len(keys))])
        if len(keys) % 2 and rng.random() < 0.5:
            flips[len(keys) // 2] = True
        rng.shuffle(flips)
        rows += [(key, b, a) if flip else (key, a, b) for key, flip in zip(keys, flips, strict=True)]
    ranks = rng.permutation(len(rows))
    shared = set(rng.choice(len(rows), size=round(config.shared_share * len(rows)), replace=False).tolist())
    return [(key, left, right, int(ranks[i]), config.shared_annotators if i in shared else 1)
            for i, (key, left, right) in enumerate(rows)]  # fmt: skip
