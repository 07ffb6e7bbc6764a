"""Config section of evaluation (`eval`): data, batching, the averaged metric, probe and judge."""

import math
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from almr.section import Section

DEFAULT_AVERAGE_NAME = "avg"


class EvalProbeConfig(Section):
    """The probe the CPT trainer runs every cpt.probe.every_tokens: a fixed subset of lm-eval tasks
    (almr.evaluate.probe), for metric trajectories, early stopping and the study's ranking."""

    tasks: list[str] = Field(
        default_factory=lambda: ["world_mmlu", "world_ceval", "world_eprstmt", "world_seceu"],
        description="Tasks the probe scores: almr's (`almr eval tasks`, the demo world's world_* included) or any "
        "lm-eval task or group (ceval-valid, cmmlu, mmlu, hellaswag, gsm8k, ...).",
    )
    items_per_task: int = Field(
        32, ge=1, description="Documents per task, a seeded sample (stratified by subject for groups), every call."
    )
    seed: int = Field(0, description="Seeds the choice of documents; the same seed gives the same items everywhere.")
    batch_size: int = Field(64, ge=1, description="Sequences per forward pass.")
    max_gen_toks: int | None = Field(
        None, ge=1, description="Cap on generated tokens per item of a generation task (required for them)."
    )


class JudgeConfig(Section):
    """The LLM judge of BelleEval and the Turing test: any OpenAI-compatible chat endpoint."""

    url: str | None = Field(None, description="Judge base URL, e.g. http://127.0.0.1:8000/v1.")
    model: str | None = Field(None, description="Judge model name; default: the first of GET URL/models.")
    timeout_s: float = Field(60.0, gt=0, description="Seconds to wait for one judge reply.")
    retries: int = Field(
        3, ge=0, description="Retries of a failed or timed-out judge call before the item is reported."
    )
    prompts_dir: str | None = Field(None, description="Folder of judge prompt files; default: the shipped ones.")


class AverageConfig(Section):
    """The averaged metric: a named, weighted mean of scores on the 0-100 scale (`eval.average`).

    A plain list of keys (`[world_mmlu, world_ceval]`) reads as weights 1 and the default name, so
    configs written before weights existed load unchanged. `almr.evaluate.results.averaged_metric`
    computes it."""

    name: str = Field(DEFAULT_AVERAGE_NAME, min_length=1, description="Name of the metric in tables and reports.")
    terms: dict[str, float] = Field(
        ..., description="Score key (a task for its primary metric, or task:metric) -> positive weight."
    )

    @model_validator(mode="before")
    @classmethod
    def _plain_list(cls, data: Any) -> Any:
        if not isinstance(data, list | tuple):
            return data
        keys = [str(key) for key in data]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise ValueError(f"lists {', '.join(twice)} more than once; list each key once, or weight it: "
                             "{name: NAME, terms: {KEY: WEIGHT}}")  # fmt: skip
        return {"terms": dict.fromkeys(keys, 1.0)}

    @model_validator(mode="after")
    def _terms_make_sense(self) -> "AverageConfig":
        # results knows each metric's scale; it imports this module, so it is imported here, late
        from almr.evaluate.results import scale_of

        if not self.terms:
            raise ValueError("names no score; give at least one key, e.g. [world_mmlu, world_ceval]")
        for key, weight in self.terms.items():
            task, colon, metric = key.partition(":")
            if not task.strip() or (colon and not metric.strip()) or key != key.strip() or " " in task:
                raise ValueError(f"{key!r} is not a score key; write TASK (its primary metric) or TASK:METRIC, "
                                 "e.g. world_ceval or world_cmrc:em")  # fmt: skip
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"the weight of {key} is {weight}; weights must be positive and finite "
                                 "(leave a key out rather than weight it 0)")  # fmt: skip
            scale = scale_of(key)
            if scale != "0-100":
                raise ValueError(f"{key} is on the {scale} scale, not 0-100; leave it out of the averaged metric")
        return self

    def describe(self) -> str:
        """`NAME = mean of a, b` (equal weights) or `NAME = (2·a + 1·b) / 3`: what reports print."""
        weights = list(self.terms.values())
        if len(set(weights)) == 1:
            return f"{self.name} = mean of {', '.join(self.terms)}"
        parts = " + ".join(f"{weight:g}·{key}" for key, weight in self.terms.items())
        return f"{self.name} = ({parts}) / {sum(weights):g}"


class EvalConfig(Section):
    """Evaluation on lm-evaluation-harness: data, batching, the averaged metric, probe and judge."""

    data_dir: str | None = Field(
        None, description="Folder of benchmark files in their published layouts (a world directory for world tasks)."
    )
    batch_size: int = Field(16, ge=1, description="lm-eval batch size (requests per forward pass or API call).")
    device: str = Field(
        "auto",
        description="Where a local model runs: auto, cpu, cuda or cuda:N; auto is CUDA when available, else the CPU.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights of a local model: auto is bfloat16 on CUDA, float32 on the CPU."
    )
    limit: int | None = Field(None, ge=1, description="Items per task (for quick looks; results record it).")
    max_gen_toks: int | None = Field(None, ge=1, description="Cap on generated tokens for every generation task.")
    allow_code_execution: bool = Field(
        False, description="Run model-written code for HumanEval (sandboxed subprocess, time limit)."
    )
    timeout_s: int = Field(120, ge=1, description="Seconds per request to a model endpoint.")
    max_retries: int = Field(3, ge=0, description="Retries per request to a model endpoint.")
    retry_backoff_s: float = Field(
        1.0,
        ge=0,
        description="Wait before the first retry of an endpoint or judge request; doubled at each retry "
        "(at most 30 s; a server's Retry-After is honoured).",
    )
    average: AverageConfig = Field(
        default_factory=lambda: AverageConfig(terms=dict.fromkeys(["world_mmlu", "world_ceval", "world_eprstmt"], 1.0)),
        description="The averaged metric the sweep ranks by: {name, terms: {task or task:metric: weight}}, or a "
        "plain list of keys (weights 1).",
    )
    task_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="lm-eval config keys replaced per task, e.g. {hellaswag: {dataset_path: /data/hellaswag}} "
        "to read a local copy, or {ceval-valid: {num_fewshot: 0}}.",
    )
    probe: EvalProbeConfig = Field(default_factory=EvalProbeConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N")
        return value
