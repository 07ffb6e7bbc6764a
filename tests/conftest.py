import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for a test module (`pytestmark = pytest.mark.usefixtures(...)`): tiny
    models gain nothing from a second thread, and on a small shared CPU two busy processes with
    two spinning threads each slow a step down 30-fold. Restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
