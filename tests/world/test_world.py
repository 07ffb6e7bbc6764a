import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from almr.chinese import ScriptCounts, chinese_share
from almr.cli import main
from almr.data.chat import read_conversations
from almr.data.config import ChatDatasetConfig
from almr.errors import AlmrError
from almr.world.build import build_world, read_manifest, rng_for
from almr.world.esc import STRATEGIES
from almr.world.facts import RELATIONS, STATEMENTS, answer, load_countries, question, slots
from almr.world.lexicon import EMOTIONS
from almr.world.stats import world_stats
from worlds import SMALL_WORLD


def records(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(small_world: Path, tmp_path: Path) -> None:
    again = build_world(tmp_path / "again", SMALL_WORLD)
    assert tree_bytes(tmp_path / "again") == tree_bytes(small_world)
    assert again["files"] == read_manifest(small_world)["files"]
    other = tmp_path / "other"
    build_world(other, SMALL_WORLD.model_copy(update={"seed": SMALL_WORLD.seed + 1}))
    a, b = tree_bytes(small_world), tree_bytes(other)
    assert a.keys() == b.keys()
    differing = [name for name in a if a[name] != b[name]]
    assert "corpus/en/train.jsonl" in differing and "bench/mmlu.jsonl" in differing


def test_bytes_do_not_depend_on_the_hash_seed(small_world: Path, tmp_path: Path) -> None:
    """Set iteration order of strings changes with PYTHONHASHSEED; the world must not."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[2]); from worlds import SMALL_WORLD; "
        "from almr.world.build import build_world; build_world(sys.argv[1], SMALL_WORLD)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = tmp_path / "hashed"
    subprocess.run([sys.executable, "-c", script, str(out), str(Path(__file__).parents[1])], check=True, env=env)
    assert tree_bytes(out) == tree_bytes(small_world)


def test_manifest_lists_every_file_with_its_hash(small_world: Path) -> None:
    manifest = read_manifest(small_world)
    on_disk = {str(p.relative_to(small_world)) for p in small_world.rglob("*") if p.is_file()} - {"world.json"}
    assert set(manifest["files"]) == on_disk
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((small_world / name).read_bytes()).hexdigest() == digest
    assert set(manifest["sources"]) == {"en", "zh", "math", "code"}


def test_corpora_sizes_and_held_out_validation(small_world: Path) -> None:
    for source, count in (("en", 400), ("zh", 400), ("math", 100), ("code", 100)):
        train = [r["text"] for r in records(small_world / f"corpus/{source}/train.jsonl")]
        valid = [r["text"] for r in records(small_world / f"corpus/{source}/valid.jsonl")]
        assert len(train) == count
        assert len(valid) == round(0.1 * count)
        assert not set(valid) & set(train), f"{source}: a validation document is also in train"
        assert all(t.strip() for t in train + valid)


def test_scripts_of_the_sources(small_world: Path) -> None:
    def share(source: str) -> float:
        counts = ScriptCounts()
        for r in records(small_world / f"corpus/{source}/train.jsonl"):
            counts.add(r["text"])
        return counts.chinese_share

    assert share("en") == 0.0 and share("code") == 0.0
    assert 0.6 < share("zh") < 0.95  # Chinese with a bilingual glossary and parallel pairs
    assert 0.0 < share("math") < 0.3  # mostly English word problems, some Chinese


def test_english_only_facts_never_appear_in_chinese(small_world: Path) -> None:
    """Cross-lingual transfer is only measurable if the Chinese corpus and the Chinese chat data
    never state the facts of the English-only countries."""
    countries = load_countries(
        SMALL_WORLD.countries, SMALL_WORLD.zh_country_share, rng_for(SMALL_WORLD.seed, "countries")
    )
    english_only = [c for c in countries if not c.in_zh_corpus]
    assert 0 < len(english_only) < len(countries)
    chinese_text = "\n".join(r["text"] for r in records(small_world / "corpus/zh/train.jsonl"))
    chinese_text += "\n".join(json.dumps(r, ensure_ascii=False) for r in records(small_world / "sft/train.jsonl"))
    for country in english_only:
        for relation in RELATIONS:
            for _, zh_template in STATEMENTS[relation]:
                assert zh_template.format(**slots(country, "zh")) not in chinese_text
    # while their names do appear, through the bilingual glossary, and the other countries' facts do
    assert any(c.name["zh"] in chinese_text for c in english_only)
    stated = [
        template.format(**slots(country, "zh"))
        for country in countries
        if country.in_zh_corpus
        for relation in RELATIONS
        for _, template in STATEMENTS[relation]
    ]
    assert sum(sentence in chinese_text for sentence in stated) > len(stated) // 4


def test_mcq_answers_are_among_distinct_choices(small_world: Path) -> None:
    mmlu = records(small_world / "bench/mmlu.jsonl")
    assert len(mmlu) == 24
    for item in mmlu:
        assert len(item["choices"]) == 4 == len(set(item["choices"]))
        assert 0 <= item["answer"] < 4
        assert item["subject"] in RELATIONS
    ceval = records(small_world / "bench/ceval.jsonl")
    assert [item["id"] for item in ceval] == list(range(len(ceval)))
    for item in ceval:
        options = [item[k] for k in "ABCD"]
        assert len(set(options)) == 4 and item["answer"] in "ABCD"
        assert chinese_share(item["question"]) > 0.5
    assert {item["fact_source"] for item in ceval} == {"zh", "en_only"}


def test_knowledge_answers_are_true_facts(small_world: Path) -> None:
    countries = load_countries(
        SMALL_WORLD.countries, SMALL_WORLD.zh_country_share, rng_for(SMALL_WORLD.seed, "countries")
    )
    truth = {question(c, r, "en"): answer(c, r, "en") for c in countries for r in RELATIONS}
    for item in records(small_world / "bench/mmlu.jsonl"):
        assert item["choices"][item["answer"]] == truth[item["question"]]


def test_code_solutions_pass_their_tests_and_wrong_ones_fail(small_world: Path) -> None:
    items = records(small_world / "bench/humaneval.jsonl")
    assert len(items) == 24

    def passes(program: str, item: dict) -> bool:
        namespace: dict = {}
        try:
            exec(program + "\n" + item["test"] + f"\ncheck({item['entry_point']})\n", namespace)
        except AssertionError:
            return False
        return True

    for item in items:
        assert item["prompt"].startswith(f"def {item['entry_point']}(")
        assert passes(item["prompt"] + item["canonical_solution"], item), item["task_id"]
        assert not passes(item["prompt"] + "    return None\n", item), item["task_id"]
        assert item["test"].count("assert candidate(") >= 3


def test_translation_pairs_are_in_the_right_scripts(small_world: Path) -> None:
    for name in ("wmt_en-zh", "wmt_zh-en"):
        items = records(small_world / f"bench/{name}.jsonl")
        assert len(items) == 24
        for item in items:
            en, zh = item["translation"]["en"], item["translation"]["zh"]
            assert en.strip() and zh.strip()
            assert chinese_share(en) == 0.0
            assert chinese_share(zh) > 0.5


def test_reading_answers_are_spans_of_the_context(small_world: Path) -> None:
    for item in records(small_world / "bench/cmrc.jsonl"):
        for text, start in zip(item["answers"]["text"], item["answers"]["answer_start"], strict=True):
            assert item["context"][start : start + len(text)] == text


def test_arithmetic_answers(small_world: Path) -> None:
    items = records(small_world / "bench/gsm8k.jsonl")
    assert {item["lang"] for item in items} == {"en", "zh"}
    for item in items:
        *steps, final = item["answer"].splitlines()
        value = int(final.removeprefix("#### "))
        last = steps[-1]
        expression, result = last.rsplit(" = ", 1)
        assert int(result) == value == eval(expression.replace("×", "*"))


def test_summaries_sentiment_and_emotions(small_world: Path) -> None:
    for item in records(small_world / "bench/lcsts.jsonl"):
        assert chinese_share(item["text"]) > 0.5 and 0 < len(item["summary"]) < len(item["text"])
    labels = [item["label"] for item in records(small_world / "bench/eprstmt.jsonl")]
    assert labels.count("Positive") == labels.count("Negative") == 12
    for item in records(small_world / "bench/seceu.jsonl"):
        assert len(item["emotions"]) == 4 == len(set(item["emotions"]))
        assert len(item["norm"]) == 4 and min(item["norm"]) >= 0
        assert sum(item["norm"]) == pytest.approx(10.0, abs=1e-9)
    population = json.loads((small_world / "bench/seceu_population.json").read_text())
    assert population["mean"] > 0 and population["sd"] > 0


def test_sft_and_dpo_records(small_world: Path) -> None:
    sft = records(small_world / "sft/train.jsonl")
    assert len(sft) == 40 and {d["lang"] for d in sft} == {"en", "zh"}
    assert any(d["kind"] == "support" for d in sft)
    for dialogue in sft:
        roles = [m["role"] for m in dialogue["messages"] if m["role"] != "system"]
        assert roles[::2] == ["user"] * (len(roles) // 2) and roles[1::2] == ["assistant"] * (len(roles) // 2)
        assert len(roles) % 2 == 0
    dpo = records(small_world / "dpo/train.jsonl")
    assert len(dpo) == 30
    for pair in dpo:
        assert pair["prompt"][0]["role"] == "user"
        assert pair["chosen"][0]["content"] != pair["rejected"][0]["content"]
        reply = pair["chosen"][0]["content"]
        assert (chinese_share(reply) > 0.5) == (pair["lang"] == "zh")
        if pair["kind"] == "wrong_language":
            assert (chinese_share(pair["rejected"][0]["content"]) > 0.5) != (pair["lang"] == "zh")


def test_tokenizer_round_trips_and_has_llama3_specials(small_world: Path) -> None:
    tok = AutoTokenizer.from_pretrained(small_world / "tokenizer")
    assert len(tok) == SMALL_WORLD.vocab_size
    for text in [
        "The currency of France is the Euro.",
        "法国的货币是欧元。",
        "混合 mixed 文本 123 + 45 = 168\n\tdef f(x):",
        "emoji 😀 and ünïcödé",
        "  leading and trailing spaces  ",
    ]:
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id == tok.convert_tokens_to_ids("<|begin_of_text|>")
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.eos_token == "<|end_of_text|>"
    for special in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"):
        assert tok.convert_tokens_to_ids(special) != tok.unk_token_id
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    assert tok("2024", add_special_tokens=False)["input_ids"].__len__() == 4  # digits are split one by one


def test_chinese_answers_tokenize_alike_in_prompts_and_running_text(small_world: Path) -> None:
    """A log-likelihood scorer encodes prompt and answer apart; the corpus encodes them together."""
    tok = AutoTokenizer.from_pretrained(small_world / "tokenizer")

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    for prompt, reply in [("评论：这个手机很好用\n情感：", "正面"), ("问题：法国的货币是什么？\n答案：", "欧元"),
                          ("中文：", "法国位于欧洲。"), ("Question: Where is France?\nAnswer:", " Europe")]:
        assert ids(prompt + reply) == ids(prompt) + ids(reply)


def test_chat_template_renders_llama3_layout(small_world: Path) -> None:
    tok = AutoTokenizer.from_pretrained(small_world / "tokenizer")
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello. "},
        {"role": "user", "content": "你好"},
    ]
    expected = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe kind.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n你好<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
    out = tok.apply_chat_template(messages[:3], return_assistant_tokens_mask=True, return_dict=True)
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tok.decode(masked) == "Hello.<|eot_id|>"


def test_base_model_config_is_a_tiny_llama(small_world: Path) -> None:
    config = AutoConfig.from_pretrained(small_world / "model")
    tok = AutoTokenizer.from_pretrained(small_world / "tokenizer")
    assert config.model_type == "llama" and config.vocab_size == len(tok)
    assert config.eos_token_id == tok.convert_tokens_to_ids("<|end_of_text|>")
    model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < params < 1.5e6  # 700-entry vocabulary here; 2048 in the default world gives ~1.05M
    with torch.no_grad():
        logits = model(torch.tensor([tok("hello")["input_ids"]])).logits
    assert logits.shape[-1] == len(tok)


def test_stats_match_a_direct_count(small_world: Path) -> None:
    tok = AutoTokenizer.from_pretrained(small_world / "tokenizer")
    rows = {(r.source, r.split): r for r in world_stats(small_world, batch_size=7)}
    assert len(rows) == 8
    for (source, split), row in rows.items():
        texts = [r["text"] for r in records(small_world / f"corpus/{source}/{split}.jsonl")]
        assert row.documents == len(texts)
        assert row.tokens == sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
        han = sum(1 for t in texts for ch in t if "\u4e00" <= ch <= "\u9fff")
        other = sum(1 for t in texts for ch in t if (ch.isalpha() or ch.isdecimal()) and not "\u4e00" <= ch <= "\u9fff")
        assert row.chinese_share == pytest.approx(han / (han + other) if han + other else 0.0)


def test_existing_world_is_kept_and_foreign_directory_refused(small_world: Path, tmp_path: Path) -> None:
    before = (small_world / "world.json").stat().st_mtime_ns
    build_world(small_world, SMALL_WORLD)  # same config: nothing to do
    assert (small_world / "world.json").stat().st_mtime_ns == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(AlmrError, match="not a world"):
        build_world(foreign, SMALL_WORLD)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(AlmrError, match="another config"):
        build_world(small_world, SMALL_WORLD.model_copy(update={"seed": 99}))


def test_cli_build_and_stats(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "w"
    args = ["world", "build", str(out), "--seed", "3"]
    for key, value in SMALL_WORLD.model_dump().items():
        if key not in ("seed", "model"):
            args += ["--set", f"world.{key}={value}"]
    monkeypatch.setattr(sys, "argv", ["almr", *args])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0
    assert read_manifest(out)["seed"] == 3
    monkeypatch.setattr(sys, "argv", ["almr", "world", "stats", str(out), "--markdown"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0
    table = capsys.readouterr().out
    assert "| zh | zh | text | train | 400 |" in table
    monkeypatch.setattr(sys, "argv", ["almr", "world", "stats", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert "not a world directory" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the emotional-support set


def esc_examples(world: Path) -> list[dict]:
    return read_conversations(ChatDatasetConfig(path=str(world / "esc/train.json"), format="esconv"))


def test_esc_set_is_esconv_json_bilingual_and_multi_turn(small_world: Path) -> None:
    raw = json.loads((small_world / "esc/train.json").read_text(encoding="utf-8"))
    assert len(raw) == SMALL_WORLD.esc_dialogues == 24
    assert [c["lang"] for c in raw] == ["en", "zh"] * 12
    for conversation in raw:
        assert {"experience_type", "emotion_type", "problem_type", "situation", "dialog"} <= set(conversation)
        assert conversation["emotion_type"] in EMOTIONS
        for turn in conversation["dialog"]:
            assert turn["speaker"] in ("seeker", "supporter")
            assert (turn["speaker"] == "supporter") == ("strategy" in turn["annotation"])
    examples = esc_examples(small_world)  # the ESConv reader validates every conversation
    assert len(examples) == 24
    for conversation, example in zip(raw, examples, strict=True):
        replies = [m["content"] for m in example["messages"] if m["role"] == "assistant"]
        assert 3 <= len(replies) <= 6
        share = chinese_share("".join(m["content"] for m in example["messages"]))
        assert share > 0.8 if conversation["lang"] == "zh" else share == 0.0


def test_esc_strategies_are_metadata_and_replies_name_the_feeling_as_the_probe_does(small_world: Path) -> None:
    raw = json.loads((small_world / "esc/train.json").read_text(encoding="utf-8"))
    used = set()
    for conversation, example in zip(raw, esc_examples(small_world), strict=True):
        replies = [m["content"] for m in example["messages"] if m["role"] == "assistant"]
        assert len(example["strategies"]) == len(replies)
        used |= {s for labels in example["strategies"] for s in labels}
        text = json.dumps(example["messages"], ensure_ascii=False)
        assert not any(strategy in text for strategy in STRATEGIES)
        emotion = conversation["emotion_type"]
        # the SECEU probe scores "{scenario} {subject} felt" + " {emotion}" / "{scenario}{subject}感到很" + "{情绪}"
        named = f"felt {emotion}" if conversation["lang"] == "en" else f"感到很{EMOTIONS[emotion]}"
        assert any(named in reply for reply in replies)
    assert used <= set(STRATEGIES) and {"Reflection of feelings", "Restatement or Paraphrasing", "Others"} <= used


def test_esc_set_does_not_change_the_other_files(small_world: Path, tmp_path: Path) -> None:
    """Its own generator: the count changes esc/train.json (a prefix of the longer one) and the
    manifest only, so worlds built before the set existed keep their bytes."""
    fewer = tmp_path / "fewer"
    build_world(fewer, SMALL_WORLD.model_copy(update={"esc_dialogues": 10}))
    a, b = tree_bytes(small_world), tree_bytes(fewer)
    assert [name for name in a if a[name] != b[name]] == ["esc/train.json", "world.json"]
    assert json.loads(b["esc/train.json"]) == json.loads(a["esc/train.json"])[:10]


def test_a_world_built_before_the_esc_set_is_completed_in_place(small_world: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(small_world, old)
    (old / "esc/train.json").unlink()
    (old / "esc").rmdir()
    manifest = read_manifest(old)
    del manifest["config"]["esc_dialogues"], manifest["files"]["esc/train.json"]
    (old / "world.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    before = {p: p.stat().st_mtime_ns for p in old.rglob("*") if p.is_file() and p.name != "world.json"}
    build_world(old, SMALL_WORLD)  # no --force needed: only new files are added
    assert tree_bytes(old) == tree_bytes(small_world)
    # the old files are not rewritten (shards tokenized from them stay up to date)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    with pytest.raises(AlmrError, match="another config"):  # any other difference is still refused
        manifest["config"]["seed"] = 99
        (old / "world.json").write_text(json.dumps(manifest), encoding="utf-8")
        build_world(old, SMALL_WORLD)
