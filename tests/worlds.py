"""Small demo worlds for tests (a module of its own: more than one file here is named conftest)."""

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from almr.world.config import WorldConfig

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
    esc_dialogues=24,
    vocab_size=700,
)


def save_world_model(world_dir: Path, out: Path, seed: int = 0) -> Path:
    """The world's tiny Llama with weights drawn from `seed`, saved to `out` with the world's chat
    tokenizer: a chat model directory for the SFT, DPO and ablation tests."""
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(world_dir / "model")).save_pretrained(out)
    AutoTokenizer.from_pretrained(world_dir / "model").save_pretrained(out)
    return out
