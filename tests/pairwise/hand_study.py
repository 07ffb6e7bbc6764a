"""Studies made by hand, without any model: prompts, replies, items with fixed sides, annotators."""

from collections.abc import Sequence
from pathlib import Path

from almr.pairwise.dialogues import Prompt
from almr.pairwise.study import Study

MODELS = ("ours", "llama70b", "gpt4")


def hand_study(
    path: Path,
    items: Sequence[tuple[str, str, str]],
    models: Sequence[str] = MODELS,
    annotators: Sequence[str] = ("ann1", "ann2", "ann3"),
    replies: dict[str, str] | None = None,
) -> tuple[Study, dict[str, str]]:
    """A study with one prompt per distinct conversation id of `items` ((conversation, left, right)),
    one item per entry (ids 1, 2, … in order); every model's reply is `replies[model]` (default: its
    name reversed, so no reply names a model). Returns the study and each annotator's token."""
    study = Study.create(path, list(models), {"sources": dict.fromkeys(models, "hand")})
    conversations = list(dict.fromkeys(c for c, _, _ in items))
    study.add_prompts([Prompt(f"{c}#0", c, 0, [], f"question of {c}") for c in conversations])
    texts = replies or {m: m[::-1] for m in models}
    for model in models:
        study.add_replies(model, {f"{c}#0": (texts[model], 0) for c in conversations}, {})
    study.add_items([(f"{c}#0", left, right, rank, 1) for rank, (c, left, right) in enumerate(items)])
    tokens = {name: study.add_annotator(name) for name in annotators}
    return study, tokens
