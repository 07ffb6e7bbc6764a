"""Under torchrun each process reads only its shards of a safetensors model (meta build, FSDP2,
DCP's Hugging Face reader): the gathered weights and buffers equal `from_pretrained`'s exactly for
bf16 and fp32 files, tied and untied embeddings, one file or several, a hub id from the hub cache,
files of a bare `*Model` (no prefix); the same on the 2-D mesh with tensor parallelism; training
from them gives the full load's losses and export. `.bin` folders and files that lack a weight fall
back to the full load with a warning; a corrupt file or a config.json that disagrees with the
weights is the usual message, before any weight is read.

One torchrun launch (two gloo processes) does every case; the tests read what it wrote."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaModel

from torchrun_launch import launch
from train_toys import make_model_dir

TESTS = Path(__file__).parents[1]
VOCAB = 256
CASES = {"bf16_untied": (torch.bfloat16, False), "fp32_untied": (torch.float32, False),
         "bf16_tied": (torch.bfloat16, True), "fp32_tied": (torch.float32, True)}  # fmt: skip

HUB_ID, COMMIT = "almr-test/tiny-llama", "0123456789abcdef0123456789abcdef01234567"
TP_CASES = ["bf16_untied", "bf16_tied"]  # also loaded on the 2-D mesh: tensor parallel 2 (parallel.py)

# one torchrun launch for the module: 15–40 s on a shared 2-core CPU (two processes import torch and
# transformers, load 13 models, train 2 × 2 steps)
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]

_WORKER = """
import json, os, sys, warnings
sys.path.insert(0, {tests!r})
from pathlib import Path
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
import almr.train.sharded_load as sharded_load
from almr.errors import ConfigError
from almr.train.config import ModelConfig
from almr.train.parallel import init_distributed, parallelize
from train_toys import ToyLoader, toy_config, train_toy

root = Path({root!r})
HUB_ID = {hub_id!r}
env = init_distributed("cpu")
full_builds = []  # every call of the full load: the sharded path must make none
full_build = sharded_load.build_model
sharded_load.build_model = lambda *a, **k: full_builds.append(1) or full_build(*a, **k)
shard = lambda model, dist_env: parallelize(model, dist_env, gradient_checkpointing=False, compile=False)
out = {{}}
for case in {cases!r}:
    name = HUB_ID if case == "hub" else str(root / case)
    loaded = sharded_load.build_parallel_model(ModelConfig(name_or_path=name), env, shard)
    model = loaded.model
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    buffers = {{n: b for n, b in model.named_buffers()}}
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    torch.save({{"state": state, "buffers": buffers, "tied": tied, "full_builds": len(full_builds),
                "stored_dtype": loaded.stored_dtype,
                "local": model.get_input_embeddings().weight.to_local().shape[0]}}, root / f"{{case}}.{{env.rank}}.pt")
for folder in ("bf16_untied", "bin"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = len(full_builds)
        config = toy_config(root / f"run_{{folder}}", root / folder, steps=2,
                            **{{"batch.micro_batch_size": 2, "export.dtype": "float32"}})
        config.cpt.random_init = False
        result = train_toy(config, loader=ToyLoader(2, 32, 256, rank=env.rank, world_size=env.world_size))
    out[folder] = {{"losses": result.losses, "full_builds": len(full_builds) - before,
                    "export": str(result.checkpoint / "hf"),
                    "warnings": [str(w.message) for w in caught if "model.name_or_path" in str(w.message)]}}
for case in ("corrupt", "wrong_vocab"):
    try:
        sharded_load.build_parallel_model(ModelConfig(name_or_path=str(root / case)), env, shard)
    except ConfigError as err:
        out[case] = str(err)
for case in ("bare_tied", "bare_untied"):  # saved from a bare LlamaModel: no "model." prefix, no lm_head
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = len(full_builds)
        model = sharded_load.build_parallel_model(ModelConfig(name_or_path=str(root / case)), env, shard).model
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    torch.save({{"state": state, "full_builds": len(full_builds) - before,
                "warnings": [str(w.message) for w in caught if "safetensors files" in str(w.message)]}},
               root / f"{{case}}.{{env.rank}}.pt")
# last (a later init_distributed without a layout returns this one): the 2-D mesh, 1 (dp) × 2 (tp)
from almr.train.config import ParallelConfig
tp_env = init_distributed("cpu", ParallelConfig(tensor_parallel=2, gpus_per_node=2))
full_builds.clear()  # the .bin run above made one
for case in {tp_cases!r}:
    model = sharded_load.build_parallel_model(ModelConfig(name_or_path=str(root / case)), tp_env, shard).model
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    torch.save({{"state": state, "buffers": dict(model.named_buffers()), "full_builds": len(full_builds),
                "local": model.model.layers[0].self_attn.q_proj.weight.to_local().shape[0]}},
               root / f"{{case}}_tp2.{{env.rank}}.pt")
(root / f"out.{{env.rank}}.json").write_text(json.dumps(out))
"""


def _save(folder: Path, dtype: torch.dtype, tied: bool, max_shard_size: str = "5GB") -> Path:
    make_model_dir(folder, vocab=VOCAB)
    config = AutoConfig.from_pretrained(folder)
    config.tie_word_embeddings = tied
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).to(dtype).save_pretrained(folder, max_shard_size=max_shard_size)
    return folder


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sharded")
    for case, (dtype, tied) in CASES.items():
        _save(root / case, dtype, tied, max_shard_size="100KB" if case == "fp32_untied" else "5GB")
    assert len(list((root / "fp32_untied").glob("*.safetensors"))) > 2  # a checkpoint in several files
    # the same weights as bf16_untied, as a PyTorch pickle only
    binary = make_model_dir(root / "bin", vocab=VOCAB)
    reference = AutoModelForCausalLM.from_pretrained(root / "bf16_untied", dtype=torch.float32)
    reference.config.save_pretrained(binary)
    torch.save(reference.state_dict(), binary / "pytorch_model.bin")
    # a hub id, as the paper presets name their models: the hub cache's layout, offline
    snapshot = root / "hub" / f"models--{HUB_ID.replace('/', '--')}" / "snapshots" / COMMIT
    shutil.copytree(root / "bf16_tied", snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(COMMIT)
    for tied in (True, False):
        bare = make_model_dir(root / f"bare_{'tied' if tied else 'untied'}", vocab=VOCAB)
        config = AutoConfig.from_pretrained(bare)
        config.tie_word_embeddings = tied
        torch.manual_seed(0)
        LlamaModel(config).to(torch.bfloat16).save_pretrained(bare)
    corrupt = _save(root / "corrupt", torch.float32, False)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    wrong_vocab = shutil.copytree(root / "bf16_untied", root / "wrong_vocab")
    config = json.loads((wrong_vocab / "config.json").read_text())
    (wrong_vocab / "config.json").write_text(json.dumps({**config, "vocab_size": 300}))

    script = root / "worker.py"
    script.write_text(_WORKER.format(tests=str(TESTS), root=str(root), cases=[*CASES, "hub"], tp_cases=TP_CASES,
                                     hub_id=HUB_ID))  # fmt: skip
    launch(str(script), env={"HF_HUB_CACHE": str(root / "hub")})
    return root


@pytest.mark.parametrize("case", list(CASES))
def test_every_process_holds_the_weights_from_pretrained_loads(launched: Path, case: str) -> None:
    reference = AutoModelForCausalLM.from_pretrained(launched / case, dtype=torch.float32)
    expected = reference.state_dict()
    for rank in (0, 1):
        got = torch.load(launched / f"{case}.{rank}.pt", weights_only=False)
        assert got["full_builds"] == 0  # the sharded path, not the full load
        assert got["local"] == VOCAB // 2  # each process allocated half of the embedding rows
        assert got["tied"] == CASES[case][1]
        assert got["stored_dtype"] == CASES[case][0]  # the export's auto dtype: as shipped
        assert set(got["state"]) == set(expected)
        for name, tensor in expected.items():
            assert got["state"][name].dtype == torch.float32
            assert torch.equal(got["state"][name], tensor), name
        # the rotary inverse frequencies, which no file stores, recomputed from the config
        expected_buffers = dict(reference.named_buffers())
        assert set(got["buffers"]) == set(expected_buffers) and expected_buffers
        for name, tensor in expected_buffers.items():
            assert torch.equal(got["buffers"][name], tensor), name


def test_a_hub_id_is_loaded_shard_by_shard_from_the_hub_cache(launched: Path) -> None:
    reference = AutoModelForCausalLM.from_pretrained(launched / "bf16_tied", dtype=torch.float32).state_dict()
    for rank in (0, 1):
        got = torch.load(launched / f"hub.{rank}.pt", weights_only=False)
        assert got["full_builds"] == 0 and got["tied"]
        assert set(got["state"]) == set(reference)
        assert all(torch.equal(got["state"][name], tensor) for name, tensor in reference.items())


def test_files_of_a_bare_model_load_under_the_models_names(launched: Path) -> None:
    """Keys without the base model's prefix map onto it; a tied output layer needs no file entry."""
    reference = AutoModelForCausalLM.from_pretrained(launched / "bare_tied", dtype=torch.float32).state_dict()
    for rank in (0, 1):
        got = torch.load(launched / f"bare_tied.{rank}.pt", weights_only=False)
        assert got["full_builds"] == 0 and got["warnings"] == []
        assert set(got["state"]) == set(reference)
        assert all(torch.equal(got["state"][name], tensor) for name, tensor in reference.items())


def test_a_weight_the_files_lack_falls_back_to_transformers_with_a_warning(launched: Path) -> None:
    """An untied output layer missing from the files: transformers initialises it, so the full load runs."""
    reference = AutoModelForCausalLM.from_pretrained(launched / "bare_untied", dtype=torch.float32).state_dict()
    for rank in (0, 1):
        got = torch.load(launched / f"bare_untied.{rank}.pt", weights_only=False)
        assert got["full_builds"] == 1
        (warning,) = got["warnings"]
        assert warning.startswith("the safetensors files do not hold 1 of the model's weights under its names "
                                  "(first: lm_head.weight)")  # fmt: skip
        assert all(
            torch.equal(got["state"][name], tensor) for name, tensor in reference.items() if "lm_head" not in name
        )


@pytest.mark.parametrize("case", TP_CASES)
def test_tensor_parallel_processes_hold_the_weights_from_pretrained_loads(launched: Path, case: str) -> None:
    reference = AutoModelForCausalLM.from_pretrained(launched / case, dtype=torch.float32)
    q_rows = reference.model.layers[0].self_attn.q_proj.weight.shape[0]
    for rank in (0, 1):
        got = torch.load(launched / f"{case}_tp2.{rank}.pt", weights_only=False)
        assert got["full_builds"] == 0
        assert got["local"] == q_rows // 2  # column-parallel: each process holds half of q's output rows
        assert set(got["state"]) == set(reference.state_dict())
        for name, tensor in reference.state_dict().items():
            assert torch.equal(got["state"][name], tensor), name
        for name, tensor in reference.named_buffers():
            assert torch.equal(got["buffers"][name], tensor), name


def test_training_from_shards_gives_the_full_loads_losses(launched: Path) -> None:
    for rank in (0, 1):
        out = json.loads((launched / f"out.{rank}.json").read_text())
        sharded, full = out["bf16_untied"], out["bin"]
        assert sharded["full_builds"] == 0 and full["full_builds"] == 1
        assert len(sharded["losses"]) == 2
        assert sharded["losses"] == full["losses"]  # same weights, same reductions: bit-identical
    # and the trained models they export are the same
    exported = [AutoModelForCausalLM.from_pretrained(out[f]["export"], dtype=torch.float32).state_dict()
                for f in ("bf16_untied", "bin")]  # fmt: skip
    assert exported[0].keys() == exported[1].keys()
    assert all(torch.equal(exported[0][name], exported[1][name]) for name in exported[0])


def test_bin_only_folders_fall_back_with_a_warning_naming_the_fix(launched: Path) -> None:
    for rank in (0, 1):
        (warning,) = json.loads((launched / f"out.{rank}.json").read_text())["bin"]["warnings"]
        assert warning.startswith(f"model.name_or_path={launched / 'bin'} holds its weights as PyTorch .bin files")
        assert "save_pretrained(folder)" in warning
        assert json.loads((launched / f"out.{rank}.json").read_text())["bf16_untied"]["warnings"] == []


def test_a_corrupt_file_is_the_usual_message(launched: Path) -> None:
    for rank in (0, 1):
        message = json.loads((launched / f"out.{rank}.json").read_text())["corrupt"]
        assert message.startswith(f"model.name_or_path={launched / 'corrupt'}: a weights file (*.safetensors) is ")
        assert message.endswith("copy or download it again")


def test_a_config_that_disagrees_with_the_weights_is_the_usual_message(launched: Path) -> None:
    for rank in (0, 1):
        message = json.loads((launched / f"out.{rank}.json").read_text())["wrong_vocab"]
        assert message == (
            f"model.name_or_path={launched / 'wrong_vocab'}: its config.json does not match the weights' shapes (for "
            "instance vocab_size=300 against the embedding's rows); restore the config.json that was saved with "
            "these weights"
        )
