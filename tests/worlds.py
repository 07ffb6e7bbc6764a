"""Small demo worlds for tests (a module of its own: more than one file here is named conftest)."""

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
