"""Config sections of the data pipeline: the corpora (`data`), the mixture (`mixture`) and the
shape of the batches the loader packs (`cpt.batch`, `sft.batch`, ...)."""

from typing import Literal

from pydantic import Field, model_validator

from almr.section import Section

# sources with more packed samples per epoch than this are shuffled by a keyed bijection computed per
# index instead of a materialized permutation (4 bytes a sample: 0.2 GB per process at this size)
KEYED_SHUFFLE_ABOVE = 50_000_000


class BatchConfig(Section):
    micro_batch_size: int = Field(4, ge=1, description="Sequences per process per forward pass.")
    global_batch_size: int = Field(
        256, ge=1, description="Sequences per optimizer step, over all processes; gradient accumulation fills it."
    )
    seq_len: int = Field(2048, ge=8, description="Tokens per sequence.")


class SourceConfig(Section):
    """One named corpus: where its files are, how to read them, and its language and domain tags."""

    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Unique name; also the folder of its shards (letters, digits, '_', '.', '-').",
    )
    language: str = Field(
        "en", description="Language tag; sources tagged mixture.additional_language count toward the ALMR."
    )
    domain: str = Field("general", description="Domain tag (general, math, code, ...), reported per source.")
    train: list[str] = Field(
        ...,
        min_length=1,
        description="Training files: paths, directories or glob patterns (jsonl, .gz, .zst, parquet, txt).",
    )
    valid: list[str] = Field(default_factory=list, description="Held-out validation files, same forms; may be empty.")
    format: Literal["auto", "jsonl", "parquet", "txt"] = Field(
        "auto", description="File format; auto: from the suffix (.jsonl[.gz|.zst], .json[.gz|.zst], .parquet, .txt)."
    )
    text_field: str = Field("text", description="JSONL key or Parquet column holding the document text.")


class DataSlurmConfig(Section):
    """Resources of each task of `almr data tokenize --parts N --slurm` (a Slurm array, one task per part)."""

    partition: str | None = Field(None, description="Slurm partition (sbatch --partition): CPU nodes suffice.")
    account: str | None = Field(None, description="Slurm account (sbatch --account).")
    cpus_per_task: int | None = Field(
        None, ge=1, description="Cores per part (sbatch --cpus-per-task); with data.workers 0 the tokenizer uses all."
    )
    mem: str | None = Field(None, description="Memory per part (sbatch --mem, e.g. 16G); default: the partition's.")
    time_min: int = Field(1440, ge=1, description="Wall-time limit of each part in minutes (sbatch --time).")
    parallelism: int = Field(256, ge=1, description="Most parts running at once (the array's %limit).")
    setup: list[str] = Field(
        default_factory=list, description="Shell lines run before each part (module load, venv activation ...)."
    )


class DataConfig(Section):
    """Sources and how `almr data tokenize` turns them into Megatron indexed shards."""

    tokenizer: str | None = Field(None, description="A local Hugging Face tokenizer directory (or hub id when online).")
    shard_dir: str = Field(
        "shards", description="Folder of shards: a sub-folder per source with train/valid .bin/.idx and manifest.json."
    )
    sources: list[SourceConfig] = Field(default_factory=list, description="The corpora.")
    workers: int = Field(
        0,
        ge=0,
        description="0: in this process, the Rust tokenizer's own threads on every core (fastest); 1: in this "
        "process, one thread; N >= 2: N tokenizer processes.",
    )
    chunk_documents: int = Field(256, ge=1, description="Documents per task handed to a tokenizer process.")
    skip_bad_records: bool = Field(
        False,
        description="Skip malformed records (reported and counted in the manifest) instead of stopping at the first.",
    )
    slurm: DataSlurmConfig = Field(
        default_factory=DataSlurmConfig, description="Slurm resources of `almr data tokenize --parts N --slurm`."
    )
    add_bos: bool | None = Field(
        None,
        description="Start every document with the tokenizer's BOS token (Llama-3's <|begin_of_text|>); default: as "
        "the tokenizer's own template does when it encodes a text. The manifest records the choice.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> "DataConfig":
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sources: duplicate name(s) {', '.join(dupes)}; give each source its own name")
        return self


class MixtureConfig(Section):
    """The CPT mixture: ALMR (or explicit weights), sub-weights for the rest, budget, seed, repetition limit.
    Sequence length and global batch size come from cpt.batch."""

    additional_language: str = Field("zh", description="The language whose token share is the ALMR.")
    almr: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Fraction of CPT tokens from sources tagged additional_language; set this or weights, not both.",
    )
    weights: dict[str, float] | None = Field(
        None, description="Explicit per-source token weights (normalized); instead of almr and sub_weights."
    )
    sub_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Relative weights inside each group (additional language / the rest); unnamed sources weigh 1.",
    )
    sources: list[str] | None = Field(None, description="Sources taking part; default: all data.sources.")
    token_budget: int | None = Field(
        None,
        ge=1,
        description="CPT tokens of this phase; default: cpt.total_tokens. Rounded up to whole global batches.",
    )
    seed: int = Field(1234, description="Seeds the per-epoch shuffle inside each source; keep it across phases.")
    max_epochs: float = Field(
        4.0, gt=0.0, description="Most passes over any source's training split that a plan may need."
    )
    keyed_shuffle_above: int = Field(
        KEYED_SHUFFLE_ABOVE,
        ge=0,
        description="Sources with more sequences per epoch are shuffled by a keyed bijection computed per index "
        "(a Feistel network: no memory) instead of a stored permutation (4 bytes a sequence); keep it across phases.",
    )

    @model_validator(mode="after")
    def _weights_make_sense(self) -> "MixtureConfig":
        if self.almr is not None and self.weights is not None:
            raise ValueError("set either almr (with optional sub_weights) or explicit weights, not both")
        for key, table in (("weights", self.weights or {}), ("sub_weights", self.sub_weights)):
            bad = {k: v for k, v in table.items() if not (v >= 0.0 and v < float("inf"))}
            if bad:
                raise ValueError(f"{key}: {bad} must be finite and non-negative")
        if self.weights is not None and sum(self.weights.values()) <= 0:
            raise ValueError("weights: all zero; give at least one source a positive weight")
        if self.weights is not None and self.sub_weights:
            raise ValueError("sub_weights apply only with almr; put the relative weights into weights instead")
        return self


ChatFormat = Literal["auto", "messages", "sharegpt", "alpaca", "prompt_completion", "esconv", "preference", "ranking"]


class ChatDatasetConfig(Section):
    """One fine-tuning data set: SFT conversations or DPO preference pairs, in a format users
    already have, tagged with its language so that a language's data can be left out (Table 6)."""

    path: str = Field(
        ..., description="A file (.jsonl/.json, .gz/.zst), or a LlamaFactory data folder holding dataset_info.json."
    )
    format: ChatFormat = Field(
        "auto",
        description="messages: {messages: [{role, content}]}; sharegpt / alpaca: LlamaFactory's formats; "
        "prompt_completion: {prompt, completion}; esconv: ESConv's JSON; preference: {prompt, chosen, rejected} "
        "(TRL's conversational format); ranking: LlamaFactory's ranking format; auto: from dataset_info.json "
        "or the first record's keys.",
    )
    dataset: str | None = Field(None, description="The entry of dataset_info.json to read, when path is a folder.")
    language: str = Field("en", description="Language tag of every conversation in it (sft.exclude_languages).")
    language_field: str | None = Field(
        None, description="A record field holding each conversation's own language tag (e.g. lang); overrides language."
    )
    weight: float = Field(
        1.0, gt=0.0, description="Scales this data set's examples: round(weight × n) of them, repeated or subsampled."
    )
    max_samples: int | None = Field(None, ge=1, description="Use only the first N conversations.")
