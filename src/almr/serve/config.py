"""Config section of the server (`serve`): where it listens, the model's persona, batching, the
conversation store, authentication and limits. `almr serve MODEL_DIR` reads it; every field can
be set with `--set serve.KEY=VALUE`."""

import os
from typing import Literal

from pydantic import Field

from almr.section import Section

COMPANION_PROMPT = (
    "你是一位温暖、耐心的陪伴者。认真倾听，先理解和回应对方的感受，再温和地给出建议；"
    "用对方使用的语言回答（中文或英文），简短自然。"
    "You are a warm, patient companion: listen first, acknowledge feelings, then gently suggest; "
    "answer in the user's language, briefly and naturally."
)
CRISIS_LINE = (
    "If you are in danger or thinking about harming yourself, call your local emergency number now, or reach a "
    "crisis line (China: 12356 心理援助热线; US: 988; elsewhere: findahelpline.com). This companion is an AI, "
    "not a counsellor."
)
CONSENT_NOTICE = (
    "Conversations with this companion are stored to improve it and may be read by annotators. Do not share "
    "names, addresses or other identifying details. You can delete your data at any time (Delete my data)."
)


class PersonaConfig(Section):
    """Who the companion is: the system prompt and generation settings the server applies to every
    chat request; a client cannot change them unless `allow_client_overrides` says so."""

    system_prompt: str = Field(
        COMPANION_PROMPT, description="System prompt put before every conversation ('' for none)."
    )
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature (0: greedy).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, description="Most tokens in one reply; a client may ask for fewer.")
    allow_client_overrides: bool = Field(
        False,
        description="Let requests set temperature, top_p, seed and stop and send their own system message; otherwise "
        "such a request is refused (400) rather than silently changed.",
    )


class BatchingConfig(Section):
    """The request-batching queue of the transformers engine."""

    max_batch_size: int = Field(32, ge=1, description="Most sequences in one generate call.")
    wait_ms: float = Field(
        10.0, ge=0, description="How long the first queued request waits for others to join its batch."
    )
    max_queued: int = Field(256, ge=0, description="Requests waiting beyond this many are refused with 429.")


class AuthConfig(Section):
    """Who may call the server and how much."""

    required: bool = Field(
        True,
        description="Require a bearer token (`almr serve token add NAME`); off only for a server on a loopback "
        "address, where every request is the user 'local'.",
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies are refused (413).")
    requests_per_minute: int = Field(120, ge=1, description="Per user; more within a minute are refused (429).")


class ServeConfig(Section):
    """`almr serve`: an OpenAI-compatible API, the companion chat page and the conversation store."""

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 to serve other machines).")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on (0: any free port).")
    model_name: str | None = Field(None, description="Model id clients use; default: the model directory's name.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the transformers engine runs.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Weights' precision: auto is bfloat16 on a GPU, float32 on a CPU."
    )
    cpu_threads: int = Field(
        max(1, (os.cpu_count() or 2) - 1),
        ge=1,
        description="torch threads of the engine on a CPU; default: all cores but one, which the event loop needs "
        "(with every core busy in matmuls, streams stall: 10-20x slower measured on 2 cores, docs/serving.md).",
    )
    upstream: str | None = Field(
        None, description="Base URL of a vLLM or SGLang server (http://HOST:PORT/v1) to forward generation to."
    )
    upstream_model: str | None = Field(None, description="Model id at the upstream; default: model_name.")
    store: str = Field(
        "sqlite:///almr-serve.db",
        description="SQLAlchemy URL of the conversation store: SQLite (WAL) by default, "
        "postgresql+psycopg://USER@HOST/DB for many server processes.",
    )
    persona: PersonaConfig = Field(default_factory=PersonaConfig, description="The companion's persona.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="Request batching.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="Tokens and limits.")
    crisis_line: str = Field(CRISIS_LINE, description="The crisis-resources line the chat page shows.")
    consent_notice: str = Field(CONSENT_NOTICE, description="The notice a user accepts before chatting.")
