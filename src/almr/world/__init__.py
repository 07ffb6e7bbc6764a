"""The embedded bilingual demo world: a generator of data only (no training, no evaluation).
config (the `world` section), build (`almr world build`: writes a world directory and its
world.json), stats (`almr world stats`), and the parts it is made of: facts, lexicon, scenes,
arithmetic, code, corpus (pretraining documents), bench (benchmarks), chat (SFT/DPO data), esc
(ESConv-style emotional-support conversations), tokenizer and model (the base model's shape).
See docs/world.md."""
