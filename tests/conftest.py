import os
from pathlib import Path

import pytest

# Nothing in the tests may reach a model or data hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small world (worlds.SMALL_WORLD) built once per test session (a few seconds)."""
    from almr.world.build import build_world
    from worlds import SMALL_WORLD

    out = tmp_path_factory.mktemp("world") / "world"
    build_world(out, SMALL_WORLD)
    return out
