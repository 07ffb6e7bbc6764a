import os
from pathlib import Path

import pytest

# Nothing in the tests may reach a model or data hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from almr.config import WorldConfig

SMALL_WORLD = WorldConfig(
    seed=7,
    countries=16,
    en_docs=400,
    zh_docs=400,
    math_docs=100,
    code_docs=100,
    valid_fraction=0.1,
    bench_items=24,
    sft_dialogues=40,
    dpo_pairs=30,
    vocab_size=700,
)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small world built once per test session (a few seconds)."""
    from almr.world.build import build_world

    out = tmp_path_factory.mktemp("world") / "world"
    build_world(out, SMALL_WORLD)
    return out
