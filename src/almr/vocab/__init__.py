"""Vocabulary extension for the additional language: a BPE tokenizer extended with tokens trained on
its corpus, the model resized to match, and a report of what it bought (docs/vocab.md).

- `config`   the `vocab` section
- `extend`   new tokens whose merges compose with the base's; the resized model
- `report`   tokens per character and per word before and after, embedding growth, ALMR in characters
"""
