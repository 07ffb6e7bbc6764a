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
from almr.data.loader import PackedLoader, validation_sequences
from almr.data.plan import Plan, build_plan
from almr.evaluate.probe import TaskProbe, probe_from_config
from almr.train.cpt import CptResult, train_cpt
from almr.train.model import model_path
from almr.train.parallel import close_distributed, init_distributed
from almr.train.validate import Validation


def plan_for(config: AlmrConfig, *, previous: Plan | None = None, consumed: int | None = None) -> Plan:
    """The mixture plan of `config.data` + `config.mixture` in `config.cpt.batch`'s shape, for
    the mixture's token budget or else the CPT run's (the plan `almr data plan` prints); with
    `previous`, a later phase that continues that plan's streams after `consumed` sequences."""
    budget = config.mixture.token_budget or config.cpt.total_tokens
    return build_plan(config.data, config.mixture, config.cpt.batch, token_budget=budget, previous=previous,
                      consumed=consumed)  # fmt: skip


def build_data(config: AlmrConfig, rank: int, world_size: int) -> tuple[PackedLoader, Validation]:
    """The packed mixture loader of data-parallel process `rank` and the held-out sets per source."""
    plan = plan_for(config)
    loader = PackedLoader(plan, config.cpt.batch.micro_batch_size, dp_rank=rank, dp_size=world_size)
    validation = {}
    for source in plan.sources:
        if source.valid_sequences:
            held_out = validation_sequences(plan, source.name)
            validation[source.name] = (held_out["input_ids"], held_out["labels"])
    return loader, validation


def build_probe(config: AlmrConfig) -> TaskProbe | None:
    """The probe suite `cpt.probe.every_tokens` asks for, with the model's tokenizer; None when
    off (or when no model is named: the trainer then says so first)."""
    if not config.cpt.probe.every_tokens or not config.model.name_or_path:
        return None
    window = getattr(AutoConfig.from_pretrained(config.model.name_or_path), "max_position_embeddings", None)
    return probe_from_config(config.eval, AutoTokenizer.from_pretrained(config.model.name_or_path), window)


def run_cpt(config: AlmrConfig, *, resume: bool = False, progress: bool = True) -> CptResult:
    """Run (or with `resume`, continue) the CPT stage `config` describes; one process, or this
    process's part under torchrun."""
    model_path(config.model)  # the cheapest check first: before the data plan is read
    owns_group = not dist.is_initialized()
    dist_env = init_distributed(config.cpt.device)  # the loader needs this process's rank
    try:
        loader, validation = build_data(config, dist_env.rank, dist_env.world_size)
        return train_cpt(
            config.model, config.cpt, loader, validation, probe=build_probe(config), resume=resume,
            progress=progress, record=config.model_dump(mode="json"),
        )  # fmt: skip
    finally:
        if owns_group:
            close_distributed()
