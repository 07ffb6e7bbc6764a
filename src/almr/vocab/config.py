"""Config section of vocabulary extension (`vocab`): how many tokens to add and where to write."""

from pydantic import Field, model_validator

from almr.section import Section


class VocabConfig(Section):
    """Extend the base tokenizer with tokens of the additional language (`almr vocab extend`,
    docs/vocab.md). The corpus is the training files of the sources tagged
    `mixture.additional_language`; the base is `model.name_or_path`."""

    out_dir: str = Field("vocab/extended", description="Folder of the extended tokenizer, model and report.")
    new_tokens: int | None = Field(
        20000, ge=1, description="How many tokens to add (the first new merges of a BPE trained on the corpus)."
    )
    min_frequency: int = Field(
        2, ge=1, description="Only merges seen this often in the corpus; with new_tokens null, add every such token."
    )
    max_characters: int | None = Field(
        None, ge=1, description="Read at most this many characters of the corpus to train on (default: all)."
    )

    @model_validator(mode="after")
    def _something_to_add(self) -> "VocabConfig":
        if self.new_tokens is None and self.min_frequency < 2:
            raise ValueError(
                "vocab.new_tokens is null and vocab.min_frequency < 2: every string of the corpus would become a "
                "token; give vocab.new_tokens or a vocab.min_frequency of at least 2"
            )
        return self
