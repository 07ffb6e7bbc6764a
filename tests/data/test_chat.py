"""Fine-tuning data readers and the weighted mix (almr.data.chat) on small fixtures in the real
schemas (tests/data/fixtures/chat/): LlamaFactory's dataset_info.json folder, ESConv's JSON,
messages and TRL preference JSONL."""

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import zstandard

from almr.data.chat import (
    fingerprint,
    load_preference_mix,
    load_sft_mix,
    read_conversations,
    read_preferences,
)
from almr.data.config import ChatDatasetConfig
from almr.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "chat"
LF = FIXTURES / "llamafactory"


def sys(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def conversations(path: Path | str, **kwargs: Any) -> list[list[dict[str, str]]]:
    return [e["messages"] for e in read_conversations(ChatDatasetConfig(path=str(path), **kwargs))]


def pairs(path: Path | str, **kwargs: Any) -> list[tuple[list, list, list]]:
    examples = read_preferences(ChatDatasetConfig(path=str(path), **kwargs))
    return [(e["prompt"], e["chosen"], e["rejected"]) for e in examples]


# ---------------------------------------------------------------------------- readers


MESSAGES = [
    [sys("You are kind."), user("Hello!"), bot("Hello! How are you?")],
    [user("你好"), bot("你好！"), user("再见"), bot("再见！")],
    [user("1 + 1?"), bot("2")],
]


@pytest.mark.parametrize("fmt", ["messages", "auto"])
def test_messages_jsonl(fmt: str) -> None:
    examples = read_conversations(ChatDatasetConfig(path=str(FIXTURES / "messages.jsonl"), format=fmt, language="x"))
    assert [e["messages"] for e in examples] == MESSAGES
    assert set(examples[0]) == {"messages", "language", "dataset"}  # extra keys of the file are not carried
    assert {e["language"] for e in examples} == {"x"} and {e["dataset"] for e in examples} == {
        str(FIXTURES / "messages.jsonl")
    }


def test_sharegpt_entry_with_system_column_and_system_tag() -> None:
    examples = read_conversations(ChatDatasetConfig(path=str(LF), dataset="sg_chat"))
    assert [e["messages"] for e in examples] == [
        [
            sys("You are a helpful assistant."),
            user("What is the capital of France?"),
            bot("The capital of France is Paris."),
            user("And of Italy?"),
            bot("Rome."),
        ],
        [sys("请用中文回答。"), user("一年有几个月？"), bot("一年有十二个月。")],  # the system-tag turn wins
    ]
    assert examples[0]["dataset"] == f"{LF}#sg_chat"


def test_sharegpt_entry_with_openai_tags() -> None:
    assert conversations(LF, dataset="oa_chat") == [
        [sys("Be brief."), user("Say hi."), bot("Hi.")],
        [user("2 + 2?"), bot("4")],
    ]


def test_alpaca_entry_joins_instruction_and_input_and_unrolls_history() -> None:
    assert conversations(LF, dataset="alpaca_qa") == [
        [user("Translate into English.\n你好"), bot("Hello")],  # empty system: none
        [
            sys("You translate Chinese into English."),
            user("Translate into English: 谢谢"),
            bot("Thanks"),
            user("Once more, please."),
            bot("Thank you"),
            user("And this one?"),  # empty input: no trailing newline
            bot("Thank you"),
        ],
    ]


def test_plain_sharegpt_and_alpaca_files_read_without_dataset_info() -> None:
    assert conversations(LF / "sharegpt.json", format="sharegpt") == conversations(LF, dataset="sg_chat")
    assert conversations(LF / "sharegpt.json") == conversations(LF, dataset="sg_chat")  # auto
    assert conversations(LF / "alpaca.json") == conversations(LF, dataset="alpaca_qa")
    assert conversations(LF / "openai.jsonl", format="sharegpt") == conversations(LF, dataset="oa_chat")


def test_ranking_entries_alpaca_and_sharegpt_style() -> None:
    assert pairs(LF, dataset="pairs") == [
        ([user("Which is larger?\n3 or 5")], [bot("5 is larger.")], [bot("3 is larger.")]),
        ([user("用中文问好。")], [bot("你好！")], [bot("Hello!")]),
    ]
    assert pairs(LF, dataset="sg_pairs") == [
        (
            [user("Hi!"), bot("Hello! How can I help?"), user("Tell me a color.")],
            [bot("Blue.")],
            [bot("I will not.")],
        )
    ]
    assert pairs(LF / "ranking.json") == pairs(LF, dataset="pairs")  # auto on a plain file: ranking


def test_prompt_completion() -> None:
    assert conversations(FIXTURES / "prompt_completion.jsonl") == [
        [user("The capital of Spain is"), bot(" Madrid.")],
        [sys("Answer briefly."), user("3 × 3?"), bot("9")],
    ]


def test_esconv_maps_speakers_merges_turns_and_keeps_strategies_as_metadata() -> None:
    for fmt in ("esconv", "auto"):
        examples = read_conversations(ChatDatasetConfig(path=str(FIXTURES / "esconv.json"), format=fmt))
        assert [e["messages"] for e in examples] == [
            [
                # the supporter's opening greeting and the seeker's closing "bye" are dropped
                user("Not good. My contract ends next month.\nI have no new job yet."),
                bot("So your work ends soon and nothing is lined up.\nHow are you feeling about it?"),
                user("Worried, mostly."),
                bot("It makes sense that you feel worried."),
            ],
            [user("我和女朋友分手了。"), bot("听起来你很难过。"), user("是的。"), bot("也许可以和朋友聊聊。")],
        ]
        assert [e["strategies"] for e in examples] == [
            [["Restatement or Paraphrasing", "Question"], ["Reflection of feelings"]],
            [["Reflection of feelings"], ["Providing Suggestions"]],
        ]
        text = json.dumps([e["messages"] for e in examples], ensure_ascii=False)
        assert "Reflection" not in text and "Question" not in text  # strategies never in the text


def test_preference_formats_explicit_plain_and_implicit_prompt() -> None:
    expected = [
        ([user("What color is the sky?")], [bot("Blue.")], [bot("Green.")]),
        ([user("天空是什么颜色？")], [bot("蓝色。")], [bot("Blue.")]),
        ([user("Hi")], [bot("Hello!")], [bot("Go away.")]),
    ]
    assert pairs(FIXTURES / "preference.jsonl") == expected
    assert pairs(FIXTURES / "preference.jsonl", format="preference") == expected
    example = read_preferences(ChatDatasetConfig(path=str(FIXTURES / "preference.jsonl"), language="zh"))[0]
    assert set(example) == {"prompt", "chosen", "rejected", "language", "dataset"} and example["language"] == "zh"


@pytest.mark.parametrize("compress", [gzip.compress, zstandard.ZstdCompressor().compress], ids=["gz", "zst"])
def test_compressed_files(tmp_path: Path, compress: Any) -> None:
    suffix = ".gz" if compress is gzip.compress else ".zst"
    for name in ("messages.jsonl", "esconv.json"):
        packed = tmp_path / (name + suffix)
        packed.write_bytes(compress((FIXTURES / name).read_bytes()))
        assert conversations(packed) == conversations(FIXTURES / name)


def test_max_samples_keeps_the_first_records() -> None:
    assert conversations(FIXTURES / "messages.jsonl", max_samples=2) == MESSAGES[:2]
    assert len(conversations(LF, dataset="alpaca_qa", max_samples=1)) == 1


def test_a_folder_with_one_entry_needs_no_dataset_name_and_keeps_llamafactory_defaults(tmp_path: Path) -> None:
    folder = tmp_path / "lf"
    folder.mkdir()
    shutil.copy(LF / "alpaca.json", folder / "alpaca.json")
    (folder / "dataset_info.json").write_text(json.dumps({"only": {"file_name": "alpaca.json"}}))
    # LlamaFactory's defaults: instruction/input/output; system and history only when declared
    assert conversations(folder) == [
        [user("Translate into English.\n你好"), bot("Hello")],
        [user("And this one?"), bot("Thank you")],
    ]


# ---------------------------------------------------------------------------- bad input


def write(tmp_path: Path, name: str, records: list[Any]) -> Path:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


def msgs(*turns: tuple[str, str]) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


@pytest.mark.parametrize(
    ("bad", "where", "says"),
    [
        (msgs(("user", "Hi")), ":2:", "no assistant turn"),
        (msgs(("system", "Be kind.")), ":2:", "no assistant turn"),
        (msgs(("user", "Hi"), ("user", "Hi again"), ("assistant", "Hello")), ":2: messages[1]", "roles out of order"),
        (msgs(("assistant", "Hello"), ("user", "Hi"), ("assistant", "Yes")), ":2: messages[0]", "roles out of order"),
        (msgs(("user", "Hi"), ("system", "Be kind."), ("assistant", "Hello")), ":2: messages[1]", "system turn after"),
        (msgs(("user", "Hi"), ("assistant", "Hello"), ("user", "Bye")), ":2: messages[2]", "ends with a user turn"),
        (msgs(("user", "Hi"), ("assistant", "  \n")), ":2: messages[1].content", "empty content"),
        (msgs(("user", ""), ("assistant", "Hello")), ":2: messages[0].content", "empty content"),
        (msgs(("user", "Hi"), ("bot", "Hello")), ":2: messages[1].role", "unknown role 'bot'"),
        ({"messages": [{"role": "user", "content": None}]}, ":2: messages[0].content", "not a string"),
        ({"messages": "Hi"}, ":2: messages", "expected a list"),
        ({"text": "Hi"}, ":2: no field 'messages'", "fields: text"),
    ],
)
def test_bad_conversations_name_file_line_and_field(tmp_path: Path, bad: dict, where: str, says: str) -> None:
    path = write(tmp_path, "chat.jsonl", [GOOD, bad])
    with pytest.raises(DataError) as info:
        read_conversations(ChatDatasetConfig(path=str(path), format="messages"))
    assert f"{path}{where}" in str(info.value) and says in str(info.value)


def test_bad_record_of_a_json_list_names_its_index(tmp_path: Path) -> None:
    path = write(tmp_path, "chat.json", [GOOD, GOOD, msgs(("user", "Hi"), ("assistant", " "))])
    with pytest.raises(DataError, match=r"chat\.json\[2\]: messages\[1\]\.content: empty content"):
        read_conversations(ChatDatasetConfig(path=str(path)))


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + '{"messages": [}\n')
    with pytest.raises(DataError, match=r"chat\.jsonl:2: malformed JSON"):
        read_conversations(ChatDatasetConfig(path=str(path)))


def test_bad_alpaca_sharegpt_and_esconv_records(tmp_path: Path) -> None:
    alpaca = write(tmp_path, "a.json", [{"instruction": "Hi", "input": "", "output": ""}])
    with pytest.raises(DataError, match=r"a\.json\[0\]: output: empty content"):
        read_conversations(ChatDatasetConfig(path=str(alpaca)))
    sharegpt = write(
        tmp_path, "s.jsonl", [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "bot", "value": "x"}]}]
    )
    with pytest.raises(
        DataError, match=r"s\.jsonl:1: conversations\[1\]\.from: unknown role 'bot'.*gpt \(as assistant\)"
    ):
        read_conversations(ChatDatasetConfig(path=str(sharegpt)))
    tools = write(
        tmp_path,
        "t.jsonl",
        [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "observation", "value": "{}"}]}],
    )
    with pytest.raises(DataError, match="unknown role 'observation'"):
        read_conversations(ChatDatasetConfig(path=str(tools)))
    seeker_only = {"dialog": [{"speaker": "supporter", "content": "Hi"}, {"speaker": "seeker", "content": "Bye"}]}
    esconv = write(tmp_path, "e.json", [seeker_only])
    with pytest.raises(DataError, match=r"e\.json\[0\]: dialog: no supporter turn answers the seeker"):
        read_conversations(ChatDatasetConfig(path=str(esconv), format="esconv"))
    stranger = write(tmp_path, "f.json", [{"dialog": [{"speaker": "therapist", "content": "Hi"}]}])
    with pytest.raises(DataError, match=r"f\.json\[0\]: dialog\[0\]\.speaker: unknown speaker 'therapist'"):
        read_conversations(ChatDatasetConfig(path=str(stranger)))
    empty = write(tmp_path, "g.json", [{"dialog": [{"speaker": "seeker", "content": " "}]}])
    with pytest.raises(DataError, match=r"g\.json\[0\]: dialog\[0\]\.content: empty content"):
        read_conversations(ChatDatasetConfig(path=str(empty)))


def test_bad_preference_pairs(tmp_path: Path) -> None:
    same = write(tmp_path, "p.jsonl", [{"prompt": "Hi", "chosen": "Hello", "rejected": "Bye"},
                                       {"prompt": "Hi", "chosen": "Hello", "rejected": "Hello"}])  # fmt: skip
    with pytest.raises(DataError, match=r"p\.jsonl:2: chosen equals rejected"):
        read_preferences(ChatDatasetConfig(path=str(same)))
    ends = write(tmp_path, "q.jsonl", [{"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant",
                                        "content": "Hello"}], "chosen": "A", "rejected": "B"}])  # fmt: skip
    with pytest.raises(DataError, match=r"q\.jsonl:1: prompt\[1\]: the conversation ends with an assistant turn"):
        read_preferences(ChatDatasetConfig(path=str(ends)))
    blank = write(tmp_path, "r.jsonl", [{"prompt": "Hi", "chosen": " ", "rejected": "B"}])
    with pytest.raises(DataError, match=r"r\.jsonl:1: chosen: empty content"):
        read_preferences(ChatDatasetConfig(path=str(blank)))


def test_conversations_and_pairs_are_not_interchangeable() -> None:
    with pytest.raises(DataError, match="holds preference pairs, not conversations"):
        read_conversations(ChatDatasetConfig(path=str(FIXTURES / "preference.jsonl")))
    with pytest.raises(DataError, match="holds preference pairs"):
        read_conversations(ChatDatasetConfig(path=str(LF), dataset="pairs"))
    with pytest.raises(DataError, match="holds conversations, not preference pairs"):
        read_preferences(ChatDatasetConfig(path=str(FIXTURES / "messages.jsonl")))


def test_missing_files_and_unknown_entries(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file or folder"):
        read_conversations(ChatDatasetConfig(path=str(tmp_path / "nope.jsonl")))
    with pytest.raises(DataError, match="no data set 'nope'; known: alpaca_qa, oa_chat, pairs, sg_chat, sg_pairs"):
        read_conversations(ChatDatasetConfig(path=str(LF), dataset="nope"))
    with pytest.raises(DataError, match="holds several data sets"):
        read_conversations(ChatDatasetConfig(path=str(LF)))
    folder = tmp_path / "lf"
    folder.mkdir()
    with pytest.raises(DataError, match=r"a folder without dataset_info\.json"):
        read_conversations(ChatDatasetConfig(path=str(folder)))
    (folder / "dataset_info.json").write_text(
        json.dumps({"gone": {"file_name": "gone.json"}, "hub": {"hf_hub_url": "x/y"}})
    )
    with pytest.raises(DataError, match=r"gone\.json: file of data set 'gone' does not exist"):
        read_conversations(ChatDatasetConfig(path=str(folder), dataset="gone"))
    with pytest.raises(DataError, match="names hf_hub_url, and almr reads local files only"):
        read_conversations(ChatDatasetConfig(path=str(folder), dataset="hub"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: empty file"):
        read_conversations(ChatDatasetConfig(path=str(tmp_path / "empty.jsonl")))
    odd = write(tmp_path, "odd.jsonl", [{"question": "Hi", "answer": "Hello"}])
    with pytest.raises(DataError, match=r"odd\.jsonl:1: cannot tell the format from the keys \(answer, question\)"):
        read_conversations(ChatDatasetConfig(path=str(odd)))


# ---------------------------------------------------------------------------- mixing


def numbered(tmp_path: Path, name: str, n: int) -> str:
    records = [{"messages": [{"role": "user", "content": f"{name} {i}"}, {"role": "assistant", "content": "ok"}]}
               for i in range(n)]  # fmt: skip
    return str(write(tmp_path, f"{name}.jsonl", records))


def origin(example: dict) -> str:
    return example["messages"][0]["content"]


def test_mix_counts_follow_the_weights_exactly(tmp_path: Path) -> None:
    a, b, c = numbered(tmp_path, "a", 3), numbered(tmp_path, "b", 4), numbered(tmp_path, "c", 10)
    configs = [
        ChatDatasetConfig(path=a, weight=2.0),  # 6: every example twice
        ChatDatasetConfig(path=b, weight=0.5),  # 2 distinct of 4
        ChatDatasetConfig(path=c, weight=1.5, max_samples=5),  # max_samples first: round(1.5 × 5) = 8 (half up)
    ]
    mix = load_sft_mix(configs, seed=3)
    assert mix.counts == {a: 6, b: 2, c: 8} and mix.skipped == {}
    assert len(mix.examples) == 16
    seen = Counter(origin(e) for e in mix.examples)
    assert all(seen[f"a {i}"] == 2 for i in range(3))
    assert sum(seen[f"b {i}"] for i in range(4)) == 2 and max(seen[f"b {i}"] for i in range(4)) == 1
    assert sum(seen[f"c {i}"] for i in range(5)) == 8 and {seen[f"c {i}"] for i in range(5)} == {1, 2}
    assert all(seen[f"c {i}"] == 0 for i in range(5, 10))
    assert {e["dataset"] for e in mix.examples} == {a, b, c}


def test_mix_order_depends_on_the_seed_only(tmp_path: Path) -> None:
    configs = [ChatDatasetConfig(path=numbered(tmp_path, "a", 20)), ChatDatasetConfig(path=numbered(tmp_path, "b", 20))]
    first, again, other = (load_sft_mix(configs, seed=s).examples for s in (1, 1, 2))
    assert first == again and fingerprint(first) == fingerprint(again)
    assert first != other and sorted(map(origin, first)) == sorted(map(origin, other))
    assert [origin(e) for e in first][:20] != [f"a {i}" for i in range(20)]  # shuffled across data sets


def test_exclude_languages_drops_tagged_data_sets_and_reports_them(tmp_path: Path) -> None:
    en, zh = numbered(tmp_path, "en", 4), numbered(tmp_path, "zh", 5)
    configs = [ChatDatasetConfig(path=en, language="en"), ChatDatasetConfig(path=zh, language="zh", weight=2.0)]
    mix = load_sft_mix(configs, exclude_languages=["zh"], seed=0)
    assert mix.counts == {en: 4} and mix.skipped == {zh: 5}
    assert {e["language"] for e in mix.examples} == {"en"}
    with pytest.raises(DataError, match=r"exclude_languages \['en', 'zh'\] leaves no data"):
        load_sft_mix(configs, exclude_languages=["zh", "en"])


def test_language_field_tags_each_record_and_exclusion_drops_records(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
             "lang": "zh" if i % 3 == 0 else "en"} for i in range(9)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    dataset = ChatDatasetConfig(path=str(path), language="en", language_field="lang")
    mix = load_sft_mix([dataset], exclude_languages=["zh"], seed=0)
    assert mix.counts == {str(path): 6} and mix.skipped == {str(path): 3}
    assert sorted(e["messages"][0]["content"] for e in mix.examples) == [f"q{i}" for i in (1, 2, 4, 5, 7, 8)]
    rows[4]["lang"] = ""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match=r"mixed\.jsonl:5: field 'lang' \(language_field\)"):
        load_sft_mix([dataset])


def test_mix_refusals(tmp_path: Path) -> None:
    a = numbered(tmp_path, "a", 3)
    with pytest.raises(DataError, match="no data sets"):
        load_sft_mix([])
    with pytest.raises(DataError, match="listed twice"):
        load_sft_mix([ChatDatasetConfig(path=a), ChatDatasetConfig(path=a, weight=2.0)])
    with pytest.raises(DataError, match="rounds to 0 examples"):
        load_sft_mix([ChatDatasetConfig(path=a, weight=0.1)])


def test_preference_mix(tmp_path: Path) -> None:
    configs = [
        ChatDatasetConfig(path=str(FIXTURES / "preference.jsonl"), language="en"),
        ChatDatasetConfig(path=str(LF), dataset="pairs", language="zh", weight=2.0),
    ]
    mix = load_preference_mix(configs, seed=0)
    assert mix.counts == {str(FIXTURES / "preference.jsonl"): 3, f"{LF}#pairs": 4}
    assert all(set(e) == {"prompt", "chosen", "rejected", "language", "dataset"} for e in mix.examples)
    assert load_preference_mix(configs, exclude_languages=["zh"]).skipped == {f"{LF}#pairs": 2}


def test_fingerprint_is_canonical_and_sensitive() -> None:
    examples = read_conversations(ChatDatasetConfig(path=str(FIXTURES / "messages.jsonl")))
    base = fingerprint(examples)
    assert len(base) == 64 and int(base, 16) >= 0
    reordered_keys = [dict(reversed(list(e.items()))) for e in examples]
    assert fingerprint(reordered_keys) == base
    changed = json.loads(json.dumps(examples))
    changed[1]["messages"][3]["content"] = "再见?"
    assert fingerprint(changed) != base
    assert fingerprint(examples[::-1]) != base
