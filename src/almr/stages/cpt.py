"""The CPT stage (`almr cpt CONFIG`): a whole config in, a run folder out.

It connects the components the trainer does not know about: the mixture plan and its packed
loader for this process (almr.data), the held-out sets per source, and the benchmark probe
(almr.evaluate); then it hands them to `almr.train.cpt.train_cpt` with the model and cpt
sections. The run folder stores the whole resolved config, and a resume is checked against the
model, cpt, data and mixture sections of it.
"""

import math
from typing import Any

import torch
import torch.distributed as dist
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from almr.config import AlmrConfig
from almr.data.loader import PackedLoader, held_out
from almr.data.manifest import tokenizer_info
from almr.data.plan import Plan, build_plan
from almr.errors import AlmrError, ConfigError
from almr.evaluate.probe import TaskProbe, probe_from_config
from almr.train.config import ModelConfig, ParallelConfig
from almr.train.cpt import CptResult, train_cpt
from almr.train.model import hub_kwargs, model_path
from almr.train.parallel import Distributed, check_tensor_parallel, close_distributed, init_distributed
from almr.train.validate import Validation


def plan_for(config: AlmrConfig, *, previous: Plan | None = None, consumed: int | None = None) -> Plan:
    """The mixture plan of `config.data` + `config.mixture` in `config.cpt.batch`'s shape, for
    the mixture's token budget or else the CPT run's (cpt.total_tokens, or cpt.steps × global
    batch × sequence length) — the plan `almr data plan` prints; with `previous`, a later phase
    that continues that plan's streams after `consumed` sequences."""
    cpt = config.cpt
    budget = config.mixture.token_budget or cpt.total_tokens
    if budget is None and cpt.steps is not None:
        budget = cpt.steps * cpt.batch.global_batch_size * cpt.batch.seq_len
    return build_plan(config.data, config.mixture, config.cpt.batch, token_budget=budget, previous=previous,
                      consumed=consumed)  # fmt: skip


def plan_once(config: AlmrConfig, dist_env: Distributed) -> Plan:
    """`plan_for(config)` built by rank 0 alone and sent to the others: the plan reads every
    manifest and stats every raw file, which for a web corpus is millions of files — once per
    start, not once per process. A refusal on rank 0 is raised on every rank alike."""
    if dist_env.world_size == 1:
        return plan_for(config)
    box: list[Any] = [None]
    if dist_env.is_main:
        try:
            box[0] = plan_for(config)
        except AlmrError as err:
            box[0] = err
    dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], AlmrError):
        raise box[0]
    return box[0]


def build_data(
    config: AlmrConfig, rank: int, world_size: int, plan: Plan | None = None
) -> tuple[PackedLoader, Validation]:
    """The packed mixture loader of data-parallel process `rank` and the held-out sets per source
    (of `plan`, default `plan_for(config)`), which read their sequences only when scored."""
    plan = plan or plan_for(config)
    loader = PackedLoader(plan, config.cpt.batch.micro_batch_size, dp_rank=rank, dp_size=world_size)
    # read lazily from the memory-mapped shards: the trainer scores cpt.validation.max_sequences of each
    validation = {source.name: held_out(plan, source.name) for source in plan.sources if source.valid_sequences}
    return loader, validation


def build_probe(config: AlmrConfig) -> TaskProbe | None:
    """The probe suite `cpt.probe.every_tokens` asks for, with the model's tokenizer; None when
    off (or when no model is named: the trainer then says so first)."""
    if not config.cpt.probe.every_tokens or not config.model.name_or_path:
        return None
    hub = hub_kwargs(config.model)
    window = getattr(AutoConfig.from_pretrained(config.model.name_or_path, **hub), "max_position_embeddings", None)
    return probe_from_config(config.eval, AutoTokenizer.from_pretrained(config.model.name_or_path, **hub), window)


def check_model_tokenizer(model: ModelConfig, plan: Plan) -> None:
    """Refuse a model whose tokenizer is not the one the plan's shards were made with: training
    would read token ids of another vocabulary, and every checkpoint would ship the wrong tokenizer.
    A directory without a loadable tokenizer is left to the model loader, which names it."""
    try:
        ours = tokenizer_info(model_path(model), **hub_kwargs(model))
    except AlmrError:
        return
    theirs = plan.tokenizer
    if ours.fingerprint != theirs["fingerprint"]:
        raise ConfigError(
            f"the tokenizer of model.name_or_path={ours.path} (fingerprint {ours.fingerprint[:12]}, "
            f"{ours.vocab_size} tokens) is not the one the shards were made with, data.tokenizer={theirs['path']} "
            f"(fingerprint {theirs['fingerprint'][:12]}, {theirs['vocab_size']} tokens); tokenize the data with "
            "the model's tokenizer (set data.tokenizer to the model directory, then `almr data tokenize`), or "
            "train a model of that tokenizer"
        )


def check_model_layout(model: ModelConfig, parallel: ParallelConfig, processes: int) -> None:
    """Refuse a model that `parallel.tensor_parallel` ranks cannot split, or whose training state
    cannot fit `parallel.gpu_memory_gib` over `processes`, from its config.json alone: before the
    data plan and any weights are read. An unreadable config is left to the model loader, which
    names it."""
    try:
        hf_config = AutoConfig.from_pretrained(model_path(model), **hub_kwargs(model))
    except (OSError, ValueError):
        return
    if parallel.tensor_parallel > 1:
        check_tensor_parallel(hf_config, parallel.tensor_parallel)
    if parallel.gpu_memory_gib is not None:
        check_fits(count_parameters(hf_config, model.trust_remote_code), parallel.gpu_memory_gib, processes,
                   model_path(model))  # fmt: skip


# fp32 master weights (4) + gradients (4) + AdamW's two moments (8), whatever the compute dtype
TRAINING_BYTES_PER_PARAMETER = 16


def count_parameters(hf_config: Any, trust_remote_code: bool = False) -> int:
    """The model's parameter count, from a build on the meta device: exact, and no memory spent."""
    with torch.device("meta"):
        built = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust_remote_code)
    return sum(p.numel() for p in built.parameters())


def check_fits(parameters: int, gpu_memory_gib: float, processes: int, where: str) -> None:
    """FSDP (× tensor parallelism) spreads the training state evenly over every process; the state
    alone above one GPU's memory cannot train, whatever the activations need on top."""
    per_process = parameters * TRAINING_BYTES_PER_PARAMETER / processes / 2**30
    if per_process > gpu_memory_gib:
        needed = math.ceil(parameters * TRAINING_BYTES_PER_PARAMETER / 2**30 / gpu_memory_gib)
        raise ConfigError(
            f"model.name_or_path={where}: {parameters / 1e9:.2f}B parameters × {TRAINING_BYTES_PER_PARAMETER} bytes "
            f"(fp32 weights, gradients, AdamW states) over {processes} process(es) is {per_process:.1f} GiB each, "
            f"above parallel.gpu_memory_gib={gpu_memory_gib:g} before any activation; run on at least {needed} GPUs "
            "(parallel.nodes × gpus_per_node and torchrun's --nproc-per-node/--nnodes), or set gpu_memory_gib to "
            "the GPUs you have"
        )


def run_cpt(config: AlmrConfig, *, resume: bool = False, progress: bool = True) -> CptResult:
    """Run (or with `resume`, continue) the CPT stage `config` describes; one process, or this
    process's part under torchrun."""
    model_path(config.model)  # the cheapest check first: before the data plan is read
    owns_group = not dist.is_initialized()
    dist_env = init_distributed(config.cpt.device, config.parallel)  # the loader needs this process's rank
    try:
        check_model_layout(config.model, config.parallel, dist_env.world_size)
        plan = plan_once(config, dist_env)
        check_model_tokenizer(config.model, plan)
        # the tp ranks of one model replica read the same batch: split by data-parallel rank
        loader, validation = build_data(config, dist_env.dp_rank, dist_env.dp_size, plan)
        return train_cpt(
            config.model, config.cpt, loader, validation, probe=build_probe(config), resume=resume,
            progress=progress, record=config.model_dump(mode="json"),
        )  # fmt: skip
    finally:
        if owns_group:
            close_distributed()
