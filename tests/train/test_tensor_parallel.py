"""Tensor parallelism on gloo: 4 processes as 2 data-parallel × 2 tensor-parallel train a tiny Llama
to the losses of one process, their checkpoint resumes on 1 × 1 and on 4 × 1 (DCP reshards), a tied
Qwen2 with q/k/v biases trains 2-way tensor parallel, the probe's scoring and decoding run 2 × 2;
layouts that cannot work are refused before any model is read; the process group gets its timeout."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, MistralConfig, Qwen2Config

from almr.config import load_config
from almr.errors import ConfigError
from almr.train.config import ParallelConfig
from almr.train.parallel import check_tensor_parallel, check_world
from torchrun_launch import launch
from train_toys import ToyLoader, make_model_dir, toy_config, toy_validation, train_toy

TESTS = Path(__file__).parents[1]
SEQ = 32
SETTINGS = {"steps": 4, "batch.micro_batch_size": 2, "checkpoint.every_steps": 2, "checkpoint.keep_last": 2,
            "validation.every_steps": 2}  # fmt: skip

# Every process: the layout first (init_distributed with the parallel section), then the trainer,
# which finds it set up; each reads the batches of its data-parallel rank.
_WORKER = """
import os, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from train_toys import ToyLoader, toy_config, toy_validation, train_toy
from almr.train.config import ParallelConfig
from almr.train.parallel import close_distributed, init_distributed
env = init_distributed("cpu", ParallelConfig(gpus_per_node=int(os.environ["WORLD_SIZE"]), tensor_parallel={tp}))
config = toy_config(Path({tmp!r}), Path({model!r}), **{settings!r})
train_toy(config, loader=ToyLoader(2, {seq}, {vocab}, rank=env.dp_rank, world_size=env.dp_size),
          validation=toy_validation(3, {seq}, {vocab}), resume={resume})
close_distributed()
"""


def _torchrun(
    tmp: Path,
    name: str,
    processes: int,
    tp: int,
    model: Path,
    vocab: int,
    resume: bool = False,
    settings: dict = SETTINGS,
) -> Path:
    """Train (or resume) run `tmp/name/run` under `processes` gloo processes, `tp`-way tensor parallel."""
    script = tmp / f"{name}-{processes}x{tp}-{int(resume)}.py"
    script.write_text(_WORKER.format(tests=str(TESTS), tmp=str(tmp / name), model=str(model), settings=settings,
                                     tp=tp, seq=SEQ, vocab=vocab, resume=resume))  # fmt: skip
    launch(str(script), processes=processes)
    return tmp / name / "run"


def _events(run: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if e["event"] == kind]


def _one_process(tmp: Path, model: Path, vocab: int, settings: dict = SETTINGS) -> list[float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = toy_config(tmp / "one", model, **settings)
        return train_toy(one, loader=ToyLoader(2, SEQ, vocab), validation=toy_validation(3, SEQ, vocab)).losses
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow  # three torchrun launches of 4 processes: ~60 s on 2 cores
def test_two_by_two_matches_one_process_and_resumes_on_other_layouts(tmp_path: Path) -> None:
    vocab = 256
    model = make_model_dir(tmp_path / "model", vocab=vocab)  # 4 heads, 2 kv heads, MLP 128: 2-way splits
    run = _torchrun(tmp_path, "tp", 4, 2, model, vocab)
    one_losses = _one_process(tmp_path, model, vocab)

    (start,) = _events(run, "start")
    assert start["world_size"] == 4 and start["grad_accumulation"] == 2  # 8 sequences = 2 micro × 2 dp × 2
    # Same sequences in every global batch; the order of float sums differs (tp partial sums, dp
    # reduce-scatter), so the losses agree to ~1e-7 relative.
    tp_losses = [e["loss"] for e in _events(run, "train")]
    assert len(tp_losses) == 4 and tp_losses == pytest.approx(one_losses, rel=1e-5)
    for a, b in zip(_events(run, "val"), _events(tmp_path / "one/run", "val"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)

    # The 2 × 2 checkpoint of step 2 resumes on 1 × 1 (in this process) and on 4 × 1 (4-way FSDP).
    shutil.rmtree(run / "checkpoints/step_00000004")
    shutil.copytree(tmp_path / "tp", tmp_path / "dp4")
    resumed = train_toy(toy_config(tmp_path / "tp", model, **SETTINGS), resume=True,
                        loader=ToyLoader(2, SEQ, vocab), validation=toy_validation(3, SEQ, vocab))  # fmt: skip
    assert resumed.losses == pytest.approx(one_losses[2:], rel=1e-5)
    dp4 = _torchrun(tmp_path, "dp4", 4, 1, model, vocab, resume=True)
    assert [e["loss"] for e in _events(dp4, "train")][2:] == pytest.approx(one_losses[2:], rel=1e-5)


@pytest.mark.slow  # one torchrun launch of 2 processes: ~20 s
def test_tied_qwen2_with_biases_and_checkpointing_trains_two_way_tensor_parallel(tmp_path: Path) -> None:
    vocab = 272  # transformers gives the 256-word tokenizer one more token under a Qwen2 config: room for it
    model = make_model_dir(tmp_path / "model", vocab=256)
    Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                tie_word_embeddings=True).save_pretrained(model)  # fmt: skip
    settings = {**SETTINGS, "gradient_checkpointing": True}  # activation checkpointing composes with the split
    run = _torchrun(tmp_path, "tp", 2, 2, model, vocab, settings=settings)
    one_losses = _one_process(tmp_path, model, vocab, settings)
    # a tie broken by the split would train two matrices apart and drift from step 2 on
    assert [e["loss"] for e in _events(run, "train")] == pytest.approx(one_losses, rel=1e-5)


_SCORE_WORKER = """
import json, random, sys
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig
from almr.evaluate.loglik import LoglikScorer
from almr.train.config import ParallelConfig
from almr.train.parallel import close_distributed, init_distributed, parallelize

env = init_distributed("cpu", ParallelConfig(gpus_per_node=4, tensor_parallel=2))
family = {"llama": LlamaConfig, "mistral": MistralConfig}[sys.argv[2]]
config = family(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64)
torch.manual_seed(0)
whole = AutoModelForCausalLM.from_config(config).eval()
torch.manual_seed(0)
split = parallelize(AutoModelForCausalLM.from_config(config), env, gradient_checkpointing=False, compile=False).eval()
rng = random.Random(0)  # odd lengths, padded batches: what the probe's log-likelihoods look like
def tokens(most):
    return [rng.randrange(3, 64) for _ in range(rng.randint(1, most))]
pairs = [(tokens(9), tokens(4)) for _ in range(7)]
scored = [ll for ll, _ in LoglikScorer(split, None, batch_size=2).score_with_greedy(pairs)]
expected = []
with torch.no_grad():
    for ctx, cont in pairs:
        ids = torch.tensor([ctx + cont])
        logprobs = whole(input_ids=ids[:, :-1]).logits.log_softmax(-1)[0, -len(cont):]
        expected.append(float(logprobs[torch.arange(len(cont)), torch.tensor(cont)].sum()))
    prompt = torch.tensor([pairs[0][0]])  # decoding: one token a step
    generated = split.generate(prompt, max_new_tokens=4, do_sample=False, synced_gpus=True).tolist()
    reference = whole.generate(prompt, max_new_tokens=4, do_sample=False).tolist()
json.dump({"scored": scored, "expected": expected, "generated": generated, "reference": reference},
          open(sys.argv[1] + f"/rank{env.rank}.json", "w"))
close_distributed()
"""


@pytest.mark.slow  # one torchrun launch of 4 processes: ~25 s each
@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_probe_scoring_and_decoding_run_under_two_by_two(tmp_path: Path, family: str) -> None:
    script = tmp_path / "score.py"
    script.write_text(_SCORE_WORKER)
    launch(str(script), str(tmp_path), family, processes=4)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    for result in ranks:  # every process gets every score: 7 pairs over 2 data-parallel groups, summed once
        assert result["scored"] == pytest.approx(result["expected"], abs=1e-4)
        assert result["generated"] == result["reference"]  # greedy decoding, one token a step


# ---------------------------------------------------------------- refused before any model is read


def _llama(**overrides: int) -> LlamaConfig:
    sizes = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2}
    return LlamaConfig(**{**sizes, **overrides})


@pytest.mark.parametrize(("overrides", "key"), [
    ({"num_attention_heads": 6, "num_key_value_heads": 6, "hidden_size": 96}, "num_attention_heads=6"),
    ({"num_key_value_heads": 1}, "num_key_value_heads=1"),
    ({"intermediate_size": 99}, "intermediate_size=99"),
])  # fmt: skip
def test_a_model_the_degree_does_not_divide_is_refused(overrides: dict, key: str) -> None:
    tp = 4 if "num_attention_heads" in key else 2
    with pytest.raises(ConfigError, match=rf"tensor_parallel={tp} does not divide the model's {key} .*divisor"):
        check_tensor_parallel(_llama(**overrides), tp)
    check_tensor_parallel(_llama(), 2)  # 4 heads, 2 kv heads, MLP 128: fine
    check_tensor_parallel(MistralConfig(num_attention_heads=8, num_key_value_heads=8), 8)


def test_a_family_without_a_plan_is_refused_listing_the_supported_ones() -> None:
    from transformers import GPT2Config

    with pytest.raises(ConfigError, match=r"model_type 'gpt2'; supported families: llama, mistral, qwen2"):
        check_tensor_parallel(GPT2Config(), 2)
    check_tensor_parallel(GPT2Config(), 1)  # FSDP alone shards any model


def test_a_world_size_the_layout_cannot_use_is_refused() -> None:
    paper = load_config("paper-llama3-8b").parallel  # 4 nodes × 8 GPUs, tensor_parallel 2
    with pytest.raises(
        ConfigError, match=r"4 × 8 = 32 processes, but torchrun started 6 .*--nnodes 4 --nproc_per_node 8"
    ):
        check_world(paper, 6)  # 6 is a multiple of 2, yet not the declared layout
    with pytest.raises(ConfigError, match=r"= 32 processes, but this is one process \(no torchrun\)"):
        check_world(paper, 1)
    check_world(paper, 32)
    check_world(ParallelConfig(), 3)  # one declared GPU: any number of processes (data parallel)
    # a declared count the degree does not divide is refused when the config is read
    with pytest.raises(ConfigError, match=r"gpus_per_node = 6 is not divisible by tensor_parallel = 4"):
        load_config(None, ["parallel.gpus_per_node=6", "parallel.tensor_parallel=4"])


def test_pipeline_parallel_is_refused_saying_what_to_set() -> None:
    with pytest.raises(ConfigError, match=r"pipeline_parallel=2: pipeline parallelism is not implemented.*"
                                          r"set pipeline_parallel: 1"):  # fmt: skip
        load_config("paper-llama3-70b", ["parallel.pipeline_parallel=2"])


def test_the_70b_preset_is_fsdp_by_tensor_parallel_and_fits_its_batch() -> None:
    parallel = load_config("paper-llama3-70b").parallel
    assert (parallel.world_size, parallel.tensor_parallel, parallel.pipeline_parallel) == (128, 8, 1)
    assert parallel.data_parallel == 16  # 256 sequences = micro 4 × 16 replicas × 4 accumulation steps
    check_world(parallel, 128)
    check_tensor_parallel(LlamaConfig(num_attention_heads=64, num_key_value_heads=8, intermediate_size=28672), 8)


def test_the_cli_refuses_a_paper_preset_in_one_process_before_reading_anything() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the preset's hub id is never fetched: the layout is refused first
    done = subprocess.run([sys.executable, "-m", "almr.cli", "cpt", "paper-llama3-70b"], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert "16 × 8 = 128 processes, but this is one process (no torchrun); start 128" in done.stderr


def test_the_stage_reads_only_config_json_to_refuse_a_model(tmp_path: Path) -> None:
    from almr.stages.cpt import check_model_layout
    from almr.train.config import ModelConfig

    _llama(num_attention_heads=6, num_key_value_heads=6, hidden_size=96).save_pretrained(tmp_path)  # no weights
    model = ModelConfig(name_or_path=str(tmp_path))
    with pytest.raises(ConfigError, match=r"tensor_parallel=4 does not divide the model's num_attention_heads=6"):
        check_model_layout(model, ParallelConfig(gpus_per_node=4, tensor_parallel=4), 4)
    check_model_layout(model, ParallelConfig(gpus_per_node=4, tensor_parallel=2), 4)


def test_a_model_whose_training_state_cannot_fit_the_declared_memory_is_refused(tmp_path: Path) -> None:
    """16 bytes a parameter (fp32 weights, gradients, AdamW states) spread over every process,
    counted exactly on the meta device from config.json."""
    from almr.stages.cpt import check_fits, check_model_layout, count_parameters
    from almr.train.config import ModelConfig

    config = _llama()
    config.save_pretrained(tmp_path)  # no weights
    from transformers import AutoModelForCausalLM

    parameters = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    assert count_parameters(config) == parameters
    gib = parameters * 16 / 2**30
    model = ModelConfig(name_or_path=str(tmp_path))
    check_model_layout(model, ParallelConfig(gpus_per_node=2, gpu_memory_gib=gib / 2 * 1.01), 2)
    with pytest.raises(ConfigError, match=r"above parallel.gpu_memory_gib=.*run on at least 3 GPUs"):
        check_model_layout(model, ParallelConfig(gpus_per_node=2, gpu_memory_gib=gib / 2 * 0.99), 2)
    # Llama-3 70B on one 8-GPU node of 80 GB: 70.6B × 16 B / 8 = 131 GiB each — the 70B preset's 128 fit
    with pytest.raises(ConfigError, match=r"70.55B parameters .* 131.4 GiB each, above parallel.gpu_memory_gib=80 "
                                          r"before any activation; run on at least 14 GPUs"):  # fmt: skip
        check_fits(70_553_706_496, 80, 8, "meta-llama/Meta-Llama-3-70B")
    check_fits(70_553_706_496, 80, 128, "meta-llama/Meta-Llama-3-70B")


def test_the_process_group_gets_the_configured_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """NCCL's and gloo's collective timeout is parallel.timeout_minutes, not torch's default."""
    from datetime import timedelta

    from almr.train import parallel

    seen: dict = {}
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setattr(parallel.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(parallel.dist, "init_process_group", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(parallel, "init_device_mesh", lambda *args, **kwargs: seen.update(mesh=(args, kwargs)))
    env = parallel.init_distributed("cpu", ParallelConfig(gpus_per_node=4, tensor_parallel=2, timeout_minutes=90))
    monkeypatch.setattr(parallel, "_current", None)
    assert seen["backend"] == "gloo" and seen["timeout"] == timedelta(minutes=90)
    assert seen["mesh"] == (("cpu", (2, 2)), {"mesh_dim_names": ("dp", "tp")})
    assert (env.dp_size, env.tensor_parallel) == (2, 2)
