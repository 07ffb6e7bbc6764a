"""Config section of the pairwise study (`pairwise`): how items are made, shared between annotators,
and reported. `almr pairwise make|report|judge` read it; every field can be set with
`--set pairwise.KEY=VALUE`."""

from typing import Literal

from pydantic import Field

from almr.section import Section

# Names a reply may use for itself or its maker; scrubbed so that annotators stay blind.
KNOWN_NAMES = (
    "ChatGPT", "GPT-4o", "GPT-4", "GPT4", "GPT-3.5", "OpenAI", "Llama-3", "Llama3", "LLaMA", "Llama", "Meta AI",
    "Claude", "Anthropic", "Qwen", "通义千问", "Alibaba Cloud", "Gemini", "Google", "文心一言", "ERNIE", "百度",
    "阿里云", "Mistral", "DeepSeek",
)  # fmt: skip


class PairwiseConfig(Section):
    """A blind pairwise study of chat models (Table 8): items, sharing, statistics."""

    seed: int = Field(0, description="Seeds the left/right sides, the shared items and the item order.")
    turns: Literal["all", "last", "first"] = Field(
        "all", description="Which user turns of a dialogue become items: every one (with its history), or one."
    )
    max_prompts: int | None = Field(
        None, ge=1, description="Keep a seeded sample of this many prompts (user turns); None keeps all."
    )
    system_prompt: str | None = Field(
        None, description="A system message put before every history sent to the models (None: none)."
    )
    max_new_tokens: int = Field(256, ge=1, description="Most tokens of one collected reply.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature of collected replies (0: greedy).")
    batch_size: int = Field(8, ge=1, description="Prompts per generate call of a model run in this process.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds to wait for one endpoint reply.")
    retries: int = Field(3, ge=0, description="Retries of a failed endpoint call before the reply is listed failed.")
    backoff_s: float = Field(1.0, ge=0, description="First wait between retries (doubles each time).")
    concurrency: int = Field(4, ge=1, description="Endpoint requests in flight at once, per model.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where a model run in this process generates.")
    scrub: list[str] = Field(
        default_factory=lambda: list(KNOWN_NAMES),
        description="Names replaced in replies (with `scrub_with`), besides the study's own model names and ids.",
    )
    scrub_with: str = Field("AI", description="What a scrubbed name becomes.")
    shared_share: float = Field(
        0.2, ge=0, le=1, description="Share of items given to several annotators (for agreement)."
    )
    shared_annotators: int = Field(3, ge=2, description="How many annotators vote on each shared item.")
    judge_max_tokens: int = Field(
        1024, ge=16, description="Most tokens of one LLM-judge answer (reasoning, then verdict)."
    )
    bootstrap_resamples: int = Field(2000, ge=100, description="Bootstrap resamples of conversations per interval.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the win-rate intervals.")
