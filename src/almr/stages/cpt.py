"""The CPT stage (`almr cpt CONFIG`): a whole config in, a run folder out.

It connects the components the trainer does not know about: the mixture plan and its packed
loader for this process (almr.data), the held-out sets per source, and the benchmark probe
(almr.evaluate); then it hands them to `almr.train.cpt.train_cpt` with the model and cpt
sections. The run folder stores the whole resolved config, and a resume is checked against the
model, cpt, data and mixture sections of it.
"""

import torch.distributed as dist
from transformers import AutoConfig, AutoTokenizer

from almr.config import AlmrConfig
from almr.data.loader import PackedLoader, held_out
from almr.data.manifest import tokenizer_info
from almr.data.plan import Plan, build_plan
from almr.errors import AlmrError, ConfigError
from almr.evaluate.probe import TaskProbe, probe_from_config
from almr.train.config import ModelConfig
from almr.train.cpt import CptResult, train_cpt
from almr.train.model import hub_kwargs, model_path
from almr.train.parallel import check_tensor_parallel, close_distributed, init_distributed
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


def check_model_layout(model: ModelConfig, tensor_parallel: int) -> None:
    """Refuse a model that `tensor_parallel` ranks cannot split, from its config.json alone: before
    the data plan and any weights are read. An unreadable config is left to the model loader, which
    names it."""
    try:
        hf_config = AutoConfig.from_pretrained(model_path(model), **hub_kwargs(model))
    except (OSError, ValueError):
        return
    check_tensor_parallel(hf_config, tensor_parallel)


def run_cpt(config: AlmrConfig, *, resume: bool = False, progress: bool = True) -> CptResult:
    """Run (or with `resume`, continue) the CPT stage `config` describes; one process, or this
    process's part under torchrun."""
    model_path(config.model)  # the cheapest check first: before the data plan is read
    owns_group = not dist.is_initialized()
    dist_env = init_distributed(config.cpt.device, config.parallel)  # the loader needs this process's rank
    try:
        if dist_env.tensor_parallel > 1:
            check_model_layout(config.model, dist_env.tensor_parallel)
        plan = plan_for(config)
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
