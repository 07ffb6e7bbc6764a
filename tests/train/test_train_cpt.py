"""The CPT trainer on a ~100k-parameter Llama and the in-memory ToyLoader (tests/train_toys.py)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from almr.errors import AlmrError, ConfigError, DataError
from almr.train import checkpoint as ckpt
from almr.train import cpt
from almr.train.checkpoint import Checkpointer
from train_toys import ToyLoader, make_model_dir, toy_config, toy_validation, train_toy

os.environ["HF_HUB_OFFLINE"] = "1"
TESTS = Path(__file__).parents[1]  # train_toys.py lives at the top of tests/
VOCAB, SEQ = 256, 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model") / "tiny", vocab=VOCAB)


def events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def test_loss_falls_on_a_learnable_sequence(tmp_path: Path, model_dir: Path) -> None:
    config = toy_config(tmp_path, model_dir, steps=40, **{"optimizer.lr": 1e-2})
    result = train_toy(config, loader=ToyLoader(4, SEQ, VOCAB))
    assert result.steps == 40 and result.tokens == 40 * 8 * SEQ
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert first > 5.0  # ~ln(256) at random init
    assert last < 0.6 * first


def test_metrics_schema(tmp_path: Path, model_dir: Path) -> None:
    config = toy_config(tmp_path, model_dir, steps=4, **{"validation.every_steps": 2})
    train_toy(config, loader=ToyLoader(4, SEQ, VOCAB), validation=toy_validation(3, SEQ, VOCAB))
    run = tmp_path / "run"
    (start,) = events(run, "start")
    assert start["peak_flops"] > 1e9 and start["flops_per_token"] > 6 * 50_000
    train = events(run, "train")
    assert [e["step"] for e in train] == [1, 2, 3, 4]
    assert [e["tokens"] for e in train] == [256, 512, 768, 1024]
    for e in train:
        assert {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "step_time"} <= set(e)
        assert 0 < e["mfu"] < 1 and e["tokens_per_s"] > 0
    assert [e["lr"] for e in train] == pytest.approx([3e-3, 3e-3, 1.5e-3, 0.0])  # warmup 1, linear
    assert [e["step"] for e in events(run, "val")] == [0, 2, 4]
    assert set(events(run, "val")[0]["loss"]) == {"en", "zh", "math", "code"}
    assert [e["step"] for e in events(run, "checkpoint")] == [4]
    assert (run / "config.yaml").read_text().count("random_init: true") == 1


def test_gradient_accumulation_matches_the_large_batch(tmp_path: Path, model_dir: Path) -> None:
    big = train_toy(toy_config(tmp_path / "a", model_dir, steps=3, **{"batch.micro_batch_size": 8}),
                    loader=ToyLoader(8, SEQ, VOCAB))  # fmt: skip
    small = train_toy(toy_config(tmp_path / "b", model_dir, steps=3, **{"batch.micro_batch_size": 2}),
                      loader=ToyLoader(2, SEQ, VOCAB))  # fmt: skip
    assert small.losses == pytest.approx(big.losses, rel=1e-5)
    from safetensors.torch import load_file

    a, b = load_file(big.checkpoint / "hf/model.safetensors"), load_file(small.checkpoint / "hf/model.safetensors")
    # Summation order differs (2 × 4 micro-batches vs 1 × 8), and Adam divides by √v, so a weight
    # whose gradient is ~0 can move by a visible fraction of one update: 1e-4 is 3% of one step here.
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4)


def test_checkpoint_loads_in_plain_transformers_and_generates(tmp_path: Path, model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = train_toy(toy_config(tmp_path, model_dir, steps=2), loader=ToyLoader(4, SEQ, VOCAB))
    hf = result.checkpoint / "hf"
    model = AutoModelForCausalLM.from_pretrained(hf)
    tokenizer = AutoTokenizer.from_pretrained(hf)
    ids = tokenizer("t10 t12 t14", return_tensors="pt").input_ids
    assert ids.tolist() == [[10, 12, 14]]
    out = model.generate(ids, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    assert out.shape == (1, 8) and torch.equal(out[:, :3], ids)
    assert tokenizer.decode(out[0, 3:]).count("t") + tokenizer.decode(out[0, 3:]).count("<") == 5


def test_validation_loss_is_over_exactly_the_held_out_sequences(tmp_path: Path, model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    held_out = toy_validation(7, SEQ, VOCAB)  # 7 sequences per source: not a multiple of the micro batch
    held_out["code"][1][2, 5:] = -100  # masked targets do not count
    config = toy_config(tmp_path, model_dir, steps=2, **{"validation.every_steps": 2, "validation.micro_batch_size": 3})
    result = train_toy(config, loader=ToyLoader(4, SEQ, VOCAB), validation=held_out)
    logged = events(tmp_path / "run", "val")[-1]
    assert logged["step"] == 2
    model = AutoModelForCausalLM.from_pretrained(result.checkpoint / "hf").eval()
    for source, (inputs, labels) in held_out.items():
        with torch.no_grad():
            logits = model(input_ids=inputs).logits
        expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100).item()
        assert logged["loss"][source] == pytest.approx(expected, rel=1e-5), source


def test_resume_continues_with_the_same_losses(tmp_path: Path, model_dir: Path) -> None:
    config = toy_config(tmp_path, model_dir, steps=6, **{"checkpoint.every_steps": 3, "checkpoint.keep_last": 3})
    full = train_toy(config, loader=ToyLoader(4, SEQ, VOCAB))
    checkpoints = Checkpointer(tmp_path / "run/checkpoints", 3).complete()
    assert [p.name for p in checkpoints] == ["step_00000003", "step_00000006"]
    import shutil

    shutil.rmtree(checkpoints[-1])  # as if the run died after step 3's checkpoint
    resumed = train_toy(config, resume=True, loader=ToyLoader(4, SEQ, VOCAB))
    assert resumed.losses == full.losses[3:]
    assert [e["step"] for e in events(tmp_path / "run", "train")] == [1, 2, 3, 4, 5, 6]


_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from train_toys import ToyLoader, toy_config, train_toy
config = toy_config(Path({tmp!r}), Path({model!r}), steps=12, **{{"checkpoint.every_steps": 4}})
train_toy(config, resume={resume}, loader=ToyLoader(4, 32, 256, delay={delay}))
"""


def _run_script(tmp: Path, model_dir: Path, resume: bool, delay: float) -> subprocess.Popen:
    code = _SCRIPT.format(tests=str(TESTS), tmp=str(tmp), model=str(model_dir), resume=resume, delay=delay)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkill_and_resume_gives_bit_identical_losses(tmp_path: Path, model_dir: Path) -> None:
    reference = _run_script(tmp_path / "ref", model_dir, resume=False, delay=0.0)
    killed = _run_script(tmp_path / "killed", model_dir, resume=False, delay=0.15)
    run = tmp_path / "killed/run"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once the step-4 checkpoint is complete and a few steps have run past it
        if (run / "checkpoints/step_00000004/complete").exists() and len(events(run, "train")) >= 6:
            break
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (run / "checkpoints/step_00000008").exists(), "the run ended before it was killed"
    assert reference.wait() == 0, reference.stderr.read().decode()
    resumed = _run_script(tmp_path / "killed", model_dir, resume=True, delay=0.0)
    assert resumed.wait() == 0, resumed.stderr.read().decode()
    want = [(e["step"], e["loss"], e["grad_norm"], e["lr"]) for e in events(tmp_path / "ref/run", "train")]
    got = [(e["step"], e["loss"], e["grad_norm"], e["lr"]) for e in events(run, "train")]
    assert [s for s, *_ in got] == list(range(1, 13))
    assert got == want  # exact: every loss, gradient norm and LR, bit for bit
    (resume_event,) = events(run, "resume")
    assert resume_event["step"] == 4


# --------------------------------------------------------------------------- bad input


def test_not_a_causal_lm_is_refused(tmp_path: Path) -> None:
    from transformers import ViTConfig

    vit = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    vit.save_pretrained(tmp_path / "vit")
    with pytest.raises(ConfigError, match="not a causal language model"):
        train_toy(toy_config(tmp_path, tmp_path / "vit"), loader=ToyLoader(4, SEQ, VOCAB))
    with pytest.raises(ConfigError, match="missing: no such directory"):
        train_toy(toy_config(tmp_path, tmp_path / "missing"), loader=ToyLoader(4, SEQ, VOCAB))


def test_token_ids_beyond_the_vocabulary_are_refused(tmp_path: Path, model_dir: Path) -> None:
    bad_validation = toy_validation(2, SEQ, VOCAB)
    bad_validation["zh"][0][1, 1] = VOCAB
    with pytest.raises(DataError, match=r"validation set 'zh' holds token id 256 .* 256 entries"):
        train_toy(toy_config(tmp_path, model_dir), loader=ToyLoader(4, SEQ, VOCAB), validation=bad_validation)
    with pytest.raises(DataError, match="a training batch holds token id 261"):
        train_toy(toy_config(tmp_path / "b", model_dir), loader=ToyLoader(4, SEQ, VOCAB, bad_id_at=16))


def test_global_batch_must_divide_by_the_actual_world_size(tmp_path: Path, model_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    two = cpt.Distributed(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"), mesh=None)
    monkeypatch.setattr(cpt, "init_distributed", lambda device: two)
    config = toy_config(tmp_path, model_dir, **{"batch.global_batch_size": 4})
    with pytest.raises(ConfigError, match=r"global_batch_size=4 is not divisible by .* 4 × 2 = 8"):
        train_toy(config, loader=ToyLoader(4, SEQ, VOCAB))


def test_resume_with_a_different_config_names_what_differs(tmp_path: Path, model_dir: Path) -> None:
    train_toy(toy_config(tmp_path, model_dir, steps=2), loader=ToyLoader(4, SEQ, VOCAB))
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train_toy(toy_config(tmp_path, model_dir, steps=2), loader=ToyLoader(4, SEQ, VOCAB))
    changed = toy_config(tmp_path, model_dir, steps=2, seed=3, **{"optimizer.lr": 1e-3, "checkpoint.keep_last": 5})
    with pytest.raises(ConfigError) as err:
        train_toy(changed, resume=True, loader=ToyLoader(4, SEQ, VOCAB))
    message = str(err.value)
    assert "cpt.optimizer.lr: checkpoint 0.003, now 0.001" in message and "cpt.seed: checkpoint 0, now 3" in message
    assert "keep_last" not in message  # how checkpoints are kept does not change the trajectory
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        train_toy(toy_config(tmp_path / "new", model_dir), resume=True, loader=ToyLoader(4, SEQ, VOCAB))


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path: Path, model_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    real_export = ckpt.export_hf
    calls = []

    def export_then_fill_the_disk(model, tokenizer, folder, is_writer, **options):  # type: ignore[no-untyped-def]
        calls.append(folder)
        real_export(model, tokenizer, folder, is_writer, **options)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "export_hf", export_then_fill_the_disk)
    config = toy_config(tmp_path, model_dir, steps=4, **{"checkpoint.every_steps": 2})
    with pytest.raises(AlmrError, match=r"step 4 .* the disk is full.*step_00000002 is complete and usable"):
        train_toy(config, loader=ToyLoader(4, SEQ, VOCAB))
    folders = sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir())
    assert folders == ["step_00000002"]  # the half-written step_00000004.tmp is gone
    monkeypatch.setattr(ckpt, "export_hf", real_export)
    resumed = train_toy(config, resume=True, loader=ToyLoader(4, SEQ, VOCAB))
    assert resumed.steps == 4 and len(resumed.losses) == 2


def test_cli_reports_bad_input_as_one_message(tmp_path: Path) -> None:
    config = tmp_path / "cpt.yaml"
    batch = "{micro_batch_size: 1, global_batch_size: 1}"
    config.write_text(f"cpt: {{run_dir: {tmp_path / 'run'}, steps: 2, batch: {batch}}}\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "almr.cli", "cpt", str(config), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert "model.name_or_path is not set" in done.stderr and "Traceback" not in done.stderr
