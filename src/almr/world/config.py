"""Config section of the demo world generator (`world`): what `almr world build` writes."""

from pydantic import Field, model_validator

from almr.section import Section


class TinyLlamaConfig(Section):
    """Shape of the demo world's base model: a Llama-3-style decoder of about 1M parameters."""

    hidden_size: int = Field(128, ge=8, description="Width of the residual stream.")
    intermediate_size: int = Field(384, ge=8, description="Width of the SwiGLU MLP.")
    num_hidden_layers: int = Field(4, ge=1, description="Decoder layers.")
    num_attention_heads: int = Field(4, ge=1, description="Query heads.")
    num_key_value_heads: int = Field(2, ge=1, description="Key/value heads (grouped-query attention, as Llama-3).")
    max_position_embeddings: int = Field(512, ge=16, description="Longest sequence the model is built for.")
    rope_theta: float = Field(500000.0, gt=0, description="RoPE base (Llama-3 uses 500000).")

    @model_validator(mode="after")
    def _heads_divide(self) -> "TinyLlamaConfig":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; choose a head count that divides it"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not divisible by "
                f"num_key_value_heads {self.num_key_value_heads}; choose a divisor"
            )
        return self


class WorldConfig(Section):
    """The embedded bilingual demo world: what `almr world build` generates."""

    seed: int = Field(0, description="Everything in the world is a deterministic function of this seed.")
    countries: int = Field(60, ge=12, le=150, description="Countries in the fact base (CLDR territories).")
    zh_country_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Fraction of countries whose facts the Chinese corpus states; the others' "
        "facts are in English only, so Chinese questions about them measure cross-lingual transfer.",
    )
    en_docs: int = Field(20000, ge=10, description="English training documents.")
    zh_docs: int = Field(16000, ge=10, description="Chinese training documents.")
    math_docs: int = Field(3000, ge=10, description="Math training documents (both languages).")
    code_docs: int = Field(2000, ge=10, description="Code training documents.")
    valid_fraction: float = Field(
        0.05,
        gt=0.0,
        lt=0.5,
        description="Held-out validation documents, as a fraction of each source's training documents.",
    )
    bench_items: int = Field(200, ge=4, description="Items per benchmark.")
    sft_dialogues: int = Field(2000, ge=4, description="SFT dialogues (half English, half Chinese).")
    dpo_pairs: int = Field(1000, ge=4, description="DPO preference pairs (half English, half Chinese).")
    esc_dialogues: int = Field(
        1000, ge=4, description="Emotional-support conversations in ESConv's layout (half English, half Chinese)."
    )
    instruct_sft_dialogues: int = Field(
        2000, ge=4, description="SFT dialogues of the Instruct baseline (instruct/sft.jsonl), English-dominant."
    )
    instruct_dpo_pairs: int = Field(
        1000, ge=4, description="DPO pairs of the Instruct baseline (instruct/dpo.jsonl), English-dominant."
    )
    instruct_zh_share: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="Share of the Instruct baseline's dialogues and pairs whose user writes Chinese (exactly "
        "round(share × count)); the rest are English. Llama-3.1's SFT mix is 3% multilingual, all languages together.",
    )
    instruct_zh_english_replies: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Share of those Chinese user turns answered in English (exactly round(share × Chinese ones)), "
        "as in multilingual instruct data answered by English-speaking assistants; the others are answered in Chinese.",
    )
    vocab_size: int = Field(
        2048, ge=300, le=65535, description="Byte-level BPE vocabulary size, special tokens included."
    )
    model: TinyLlamaConfig = Field(default_factory=TinyLlamaConfig)
