"""Each stage as a Slurm job (`sweep.launcher: slurm`): one sbatch script per stage that runs
`almr run CONFIG --out OUT --only STAGE` on the resources its kind needs, and a submit script that
chains them with `--dependency=afterok:` on the jobs of their inputs. The resources come from the
`parallel` section (training stages: `parallel.nodes` × `parallel.gpus_per_node`, under torchrun)
and `sweep.slurm` (partition, account, time, setup lines, requeue).

Training stages (`kind` "train": the CPT, almr's own trainer) run under torchrun; fine-tuning
stages (`kind` "finetune": SFT, DPO, the empathy stage, the baselines, the ablation: TRL's trainers)
run under `accelerate launch` with FSDP2 (`accelerate_config`, written beside the scripts as
`fsdp2.yaml`: one FSDP unit per decoder layer, weights read on rank 0 and broadcast when sharded,
whole weights in the export) — DDP would hold a whole 8B model and its optimizer on every GPU.

A job that reaches its time limit is signalled (`--signal=USR2@sweep.slurm.signal_s`: the trainers
checkpoint and stop) and requeued (`--requeue`); the requeued job finds its stage `running` with
the same fingerprint and resumes it. Inside a job `ALMR_STAGE_JOB=1` makes `almr run` run the stage
here instead of submitting again; the study stage's own runs are still submitted as jobs by the
sweep's launcher, so its job is a CPU-only driver.
"""

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from almr.run.runner import Stage

IN_JOB = "ALMR_STAGE_JOB"


ACCELERATE_CONFIG = "fsdp2.yaml"


def resources(stage: Stage, config: Any) -> dict[str, int]:
    """{nodes, gpus_per_node, processes} a stage runs on."""
    parallel = config.parallel
    if stage.kind in ("train", "finetune"):
        return {"nodes": parallel.nodes, "gpus_per_node": parallel.gpus_per_node,
                "processes": parallel.nodes * parallel.gpus_per_node}  # fmt: skip
    if stage.kind == "gpu":
        return {"nodes": 1, "gpus_per_node": 1, "processes": 1}
    if stage.kind == "study" and config.sweep.launcher == "local":
        gpus = config.sweep.gpus_per_run or 0
        return {"nodes": 1, "gpus_per_node": gpus * config.sweep.parallel, "processes": config.sweep.parallel}
    return {"nodes": 1, "gpus_per_node": 0, "processes": 1}


def describe_resources(stage: Stage, config: Any) -> str:
    r = resources(stage, config)
    if stage.kind == "study":
        if config.sweep.launcher == "slurm":
            return "a driver process; each run its own Slurm job (sweep.slurm)"
        return f"{config.sweep.parallel} run(s) at a time, {r['gpus_per_node']} GPU(s) in all (0: CPU)"
    if not r["gpus_per_node"]:
        return "1 process, CPU"
    if r["processes"] == 1:
        return "1 process on 1 GPU (the CPU where none is visible)"
    return f"{r['processes']} process(es): {r['nodes']} node(s) × {r['gpus_per_node']} GPU(s)"


def accelerate_config(config: Any) -> str:
    """The accelerate config (FSDP2) of the fine-tuning stages' jobs; the launch command gives the
    machines and processes."""
    precision = {"bfloat16": "bf16", "float16": "fp16"}.get(config.model.dtype, "no")
    return "\n".join([
        "compute_environment: LOCAL_MACHINE", "distributed_type: FSDP", f"mixed_precision: {precision}",
        "fsdp_config:", "  fsdp_version: 2", "  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP",
        "  fsdp_cpu_ram_efficient_loading: true", "  fsdp_reshard_after_forward: true",
        "  fsdp_state_dict_type: FULL_STATE_DICT", "  fsdp_offload_params: false",
        "  fsdp_activation_checkpointing: false", "",
    ])  # fmt: skip


def stage_command(stage: Stage, config_ref: str, out: Path, config: Any) -> str:
    """The command a stage's job runs on each node (one task per node)."""
    run = f"-m almr.cli run {shlex.quote(config_ref)} --out {shlex.quote(str(out))} --only {stage.name}"
    r = resources(stage, config)
    if stage.kind not in ("train", "finetune") or r["processes"] == 1:
        return f"python {run}"
    head = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)'
    port = f"$(( {config.sweep.slurm.rdzv_port} + SLURM_JOB_ID % 10000 ))"
    if stage.kind == "train":
        return (f"torchrun --nnodes {r['nodes']} --nproc_per_node {r['gpus_per_node']} --rdzv_backend c10d "
                f'--rdzv_endpoint "{head}:{port}" --rdzv_id "$SLURM_JOB_ID" {run}')  # fmt: skip
    # each node's task learns its own rank: expanded in that task's shell, not in the batch script's
    launch = (f"accelerate launch --config_file {shlex.quote(str(out / 'slurm' / ACCELERATE_CONFIG))} "
              f"--num_machines {r['nodes']} --num_processes {r['processes']} --machine_rank $SLURM_NODEID "
              f'--main_process_ip "{head}" --main_process_port {port} {run}')  # fmt: skip
    return f"bash -c {shlex.quote(launch)}"


def sbatch_script(stage: Stage, config_ref: str, out: Path, config: Any) -> str:
    """The sbatch script of one stage's job."""
    slurm = config.sweep.slurm
    r = resources(stage, config)
    lines = ["#!/bin/bash", f"#SBATCH --job-name=almr-{stage.name}", f"#SBATCH --nodes={r['nodes']}",
             "#SBATCH --ntasks-per-node=1"]  # fmt: skip
    if r["gpus_per_node"]:
        lines.append(f"#SBATCH --gpus-per-node={r['gpus_per_node']}")
    lines.append(f"#SBATCH --time={slurm.time_min}")
    for key, value in (("partition", slurm.partition), ("account", slurm.account),
                       ("cpus-per-task", slurm.cpus_per_task), ("mem", slurm.mem)):  # fmt: skip
        if value is not None:
            lines.append(f"#SBATCH --{key}={value}")
    if slurm.exclusive:
        lines.append("#SBATCH --exclusive")
    if slurm.requeue:
        lines += ["#SBATCH --requeue", f"#SBATCH --signal=USR2@{slurm.signal_s}"]
    lines.append(f"#SBATCH --output={out / stage.name}/slurm-%j.out")
    # a node whose task fails stops the others: they may be waiting on files its first process writes
    lines += [*slurm.setup, f"export {IN_JOB}=1",
              f"srun --kill-on-bad-exit=1 {stage_command(stage, config_ref, out, config)}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def submit_script(stages: Sequence[Stage], config_ref: str, out: Path, scripts: Path) -> str:
    """The shell lines that submit `stages` (in order), each after the jobs of its inputs among them."""
    names = {s.name for s in stages}
    lines = ["#!/bin/bash", "set -euo pipefail"]
    for stage in stages:
        after = [f"$jid_{n}" for n in (*stage.inputs, *stage.optional) if n in names]
        dependency = f"--dependency=afterok:{':'.join(after)} " if after else ""
        script = shlex.quote(str(scripts / f"{stage.name}.sbatch"))
        lines.append(f"jid_{stage.name}=$(sbatch --parsable {dependency}{script})")
        lines.append(f'echo "{stage.name}: job $jid_{stage.name}"')
    return "\n".join(lines) + "\n"
