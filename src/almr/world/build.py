"""`almr world build`: write the whole demo world into a directory, deterministically.

Layout of a world directory:

    world.json                  seed, resolved config, sources, sha256 of every file
    corpus/<source>/train.jsonl {"text": ...} per line; sources en, zh, math, code
    corpus/<source>/valid.jsonl held-out documents (none also in train)
    bench/*.jsonl               one benchmark per family (see almr.world.bench)
    bench/seceu_population.json SECEU mean and SD of simulated respondents
    sft/train.jsonl             {"messages": [...], "lang", "kind"}
    dpo/train.jsonl             {"prompt": [...], "chosen": [...], "rejected": [...], "lang", "kind"}
    esc/train.json              emotional-support conversations in ESConv's JSON layout (almr.world.esc)
    instruct/sft.jsonl          the Instruct baseline's English-dominant dialogues (+ "reply_lang")
    instruct/dpo.jsonl          the Instruct baseline's English-dominant preference pairs (+ "reply_lang")
    tokenizer/                  Hugging Face tokenizer (byte-level BPE, Llama-3 specials)
    model/                      the tiny base Llama's config.json + generation_config.json, and the tokenizer

Every random choice comes from a generator seeded by (seed, purpose), so the same seed gives
byte-identical files and no part's randomness depends on the size of another part. The
world is written to a temporary sibling directory and renamed into place at the end: a
directory with a world.json is always a complete world.
"""

import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.progress import Progress

from almr.data.config import DataConfig, SourceConfig
from almr.data.sources import iter_texts
from almr.durable import atomic_write_text
from almr.errors import AlmrError
from almr.world import bench, esc
from almr.world.chat import ChatWriter
from almr.world.config import WorldConfig
from almr.world.corpus import SOURCES, CorpusWriter
from almr.world.facts import Country, load_countries
from almr.world.model import save_model_config
from almr.world.tokenizer import save_tokenizer, train_tokenizer

MANIFEST = "world.json"
FORMAT_VERSION = 1


def rng_for(seed: int, purpose: str) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, independent of PYTHONHASHSEED.
    return random.Random(f"almr-world:{seed}:{purpose}")


def build_world(out_dir: Path, config: WorldConfig, force: bool = False) -> dict[str, Any]:
    """Write the world for `config` into `out_dir` and return its manifest. An existing world
    built from the same config is kept as it is, one built before a part was added is completed
    in place; anything else there is refused unless `force`."""
    out_dir = Path(out_dir)
    existing = read_manifest(out_dir) if (out_dir / MANIFEST).is_file() else None
    wanted = config.model_dump(mode="json")  # the world section is what its files depend on
    if existing is not None and existing["config"] == wanted and not force:
        return existing
    if existing is not None and _older_version_of(existing["config"], wanted) and not force:
        return _complete(out_dir, config, existing["config"])
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        what = "a world built from another config" if existing else "files that are not a world"
        raise AlmrError(f"{out_dir} holds {what}; choose an empty directory or pass --force to replace it")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the world is an ordinary directory
    try:
        manifest = _write_world(tmp, config)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def read_manifest(world_dir: Path) -> dict[str, Any]:
    path = Path(world_dir) / MANIFEST
    if not path.is_file():
        raise AlmrError(f"{world_dir} is not a world directory (no {MANIFEST}); build one with `almr world build DIR`")
    return json.loads(path.read_text(encoding="utf-8"))


def world_data(world_dir: Path, shard_dir: Path) -> DataConfig:
    """The world's four corpora as data sources, tagged with their language and domain."""
    world_dir = Path(world_dir)
    manifest = read_manifest(world_dir)
    sources = [
        SourceConfig(
            name=name,
            language=info["language"],
            domain=info["domain"],
            train=[str(world_dir / info["train"])],
            valid=[str(world_dir / info["valid"])],
        )
        for name, info in manifest["sources"].items()
    ]
    return DataConfig(tokenizer=str(world_dir / "tokenizer"), shard_dir=str(shard_dir), sources=sources)


def _write_world(root: Path, config: WorldConfig) -> dict[str, Any]:
    seed = config.seed
    countries = load_countries(config.countries, config.zh_country_share, rng_for(seed, "countries"))
    counts = {"en": config.en_docs, "zh": config.zh_docs, "math": config.math_docs, "code": config.code_docs}
    with Progress(transient=True) as progress:
        task = progress.add_task("building the world", total=len(counts) + 4)
        corpus = CorpusWriter(countries)
        for source, count in counts.items():
            _write_corpus(root, source, corpus, count, config.valid_fraction, seed)
            progress.advance(task)
        _write_benchmarks(root, countries, config.bench_items, seed)
        progress.advance(task)
        _write_chat(root, ChatWriter(countries), config.sft_dialogues, config.dpo_pairs, seed)
        _write_esc(root, config.esc_dialogues, seed)
        _write_instruct(root, ChatWriter(countries), config)
        progress.advance(task)
        train_files = [str(_corpus_file(root, source, "train")) for source in counts]
        tokenizer = train_tokenizer(iter_texts(train_files), config.vocab_size)
        save_tokenizer(tokenizer, root / "tokenizer")
        save_tokenizer(tokenizer, root / "model")  # a model directory carries its tokenizer
        progress.advance(task)
        save_model_config(root / "model", config.model, tokenizer)
        progress.advance(task)
    manifest = _world_manifest(root, config, countries)
    _write_json(root / MANIFEST, manifest)
    return manifest


def _corpus_file(root: Path, source: str, split: str) -> Path:
    return root / "corpus" / source / f"{split}.jsonl"


def _write_corpus(root: Path, source: str, corpus: CorpusWriter, count: int, valid_fraction: float, seed: int) -> None:
    """`count` training documents and about `valid_fraction` as many held-out ones, none also in train."""
    rng = rng_for(seed, f"{source}:train")
    train = [corpus.document(source, rng) for _ in range(count)]
    seen = set(train)
    rng = rng_for(seed, f"{source}:valid")
    valid = []
    want = max(1, round(valid_fraction * count))
    for _ in range(want * 50):
        doc = corpus.document(source, rng)
        if doc not in seen:
            seen.add(doc)
            valid.append(doc)
            if len(valid) == want:
                break
    _write_jsonl(_corpus_file(root, source, "train"), ({"text": t} for t in train))
    _write_jsonl(_corpus_file(root, source, "valid"), ({"text": t} for t in valid))


def _write_benchmarks(root: Path, countries: list[Country], n: int, seed: int) -> None:
    benches = {
        "mmlu": bench.knowledge_en(rng_for(seed, "bench:mmlu"), countries, n),
        "ceval": bench.knowledge_zh(rng_for(seed, "bench:ceval"), countries, n),
        "cmrc": bench.reading(rng_for(seed, "bench:cmrc"), countries, n),
        "gsm8k": bench.arithmetic(rng_for(seed, "bench:gsm8k"), n),
        "humaneval": bench.programs(rng_for(seed, "bench:humaneval"), n),
        "wmt_en-zh": bench.translation(rng_for(seed, "bench:wmt_en-zh"), countries, n),
        "wmt_zh-en": bench.translation(rng_for(seed, "bench:wmt_zh-en"), countries, n),
        "lcsts": bench.summaries(rng_for(seed, "bench:lcsts"), countries, n),
        "eprstmt": bench.sentiment(rng_for(seed, "bench:eprstmt"), n),
    }
    benches["seceu"], population = bench.emotions(rng_for(seed, "bench:seceu"), n)
    for name, records in benches.items():
        _write_jsonl(root / "bench" / f"{name}.jsonl", records)
    _write_json(root / "bench" / "seceu_population.json", population)


def _write_chat(root: Path, chat: ChatWriter, sft_dialogues: int, dpo_pairs: int, seed: int) -> None:
    """SFT dialogues and DPO pairs, alternating English and Chinese."""
    rng = rng_for(seed, "sft")
    sft = [chat.dialogue(rng, "en" if i % 2 == 0 else "zh") for i in range(sft_dialogues)]
    rng = rng_for(seed, "dpo")
    dpo = [chat.preference(rng, "en" if i % 2 == 0 else "zh") for i in range(dpo_pairs)]
    _write_jsonl(root / "sft" / "train.jsonl", sft)
    _write_jsonl(root / "dpo" / "train.jsonl", dpo)


def _write_esc(root: Path, dialogues: int, seed: int) -> None:
    """Emotional-support conversations, alternating English and Chinese, as one JSON list like
    ESConv.json. Its own generator: the other files do not depend on how many there are."""
    rng = rng_for(seed, "esc")
    conversations = [esc.conversation(rng, "en" if i % 2 == 0 else "zh") for i in range(dialogues)]
    path = root / "esc" / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(conversations, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def instruct_languages(
    count: int, zh_share: float, english_replies: float, rng: random.Random
) -> list[tuple[str, str]]:
    """(user language, reply language) of each of `count` instruct records: exactly
    round(count × zh_share) Chinese users, round(that × english_replies) of them answered in
    English, the rest English to English, in an order drawn from `rng`."""
    chinese = round(count * zh_share)
    crossed = round(chinese * english_replies)
    languages = [("zh", "en")] * crossed + [("zh", "zh")] * (chinese - crossed) + [("en", "en")] * (count - chinese)
    rng.shuffle(languages)
    return languages


def _write_instruct(root: Path, chat: ChatWriter, config: WorldConfig) -> None:
    """The Instruct baseline's SFT and DPO sets, each from its own generators, so the other files
    do not depend on them."""
    for name, count, make in (
        ("sft", config.instruct_sft_dialogues, chat.instruct_dialogue),
        ("dpo", config.instruct_dpo_pairs, chat.instruct_preference),
    ):
        order = instruct_languages(
            count, config.instruct_zh_share, config.instruct_zh_english_replies,
            rng_for(config.seed, f"instruct:{name}:languages"),
        )  # fmt: skip
        rng = rng_for(config.seed, f"instruct:{name}")
        _write_jsonl(root / "instruct" / f"{name}.jsonl", (make(rng, user, reply) for user, reply in order))


# The parts added to the world after its first release, with the config keys they depend on: a
# world built before a part existed lacks its keys, and `_complete` writes only that part.
_ADDED_PARTS = {
    "esc": ("esc_dialogues",),
    "instruct": ("instruct_sft_dialogues", "instruct_dpo_pairs", "instruct_zh_share", "instruct_zh_english_replies"),
}


def _older_version_of(built: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """True when `built` is `wanted` less some keys added to the world section since (a world
    built before its ESC set existed): every key it has agrees, so only new files are missing."""
    return set(built) < set(wanted) and all(wanted[key] == value for key, value in built.items())


def _complete(out_dir: Path, config: WorldConfig, built: dict[str, Any]) -> dict[str, Any]:
    """Add the parts a world built before them lacks (the ESC set, the Instruct baseline's sets:
    those whose keys its `built` config lacks) and its new manifest. The other files are left
    untouched, mtimes included, so shards tokenized from them stay valid; world.json is replaced
    last, so an interrupted completion is redone by the next build."""
    countries = load_countries(config.countries, config.zh_country_share, rng_for(config.seed, "countries"))
    missing = {part for part, keys in _ADDED_PARTS.items() if not set(keys) <= set(built)}
    if "esc" in missing:
        _write_esc(out_dir, config.esc_dialogues, config.seed)
    if "instruct" in missing:
        _write_instruct(out_dir, ChatWriter(countries), config)
    manifest = _world_manifest(out_dir, config, countries)
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    return manifest


def _world_manifest(root: Path, config: WorldConfig, countries: list[Country]) -> dict[str, Any]:
    """world.json: seed, config, sources with their tags, countries, and the sha256 of every file under `root`."""
    return {
        "format": FORMAT_VERSION,
        "seed": config.seed,
        "config": config.model_dump(mode="json"),
        "sources": {
            name: {
                "language": lang,
                "domain": domain,
                "train": f"corpus/{name}/train.jsonl",
                "valid": f"corpus/{name}/valid.jsonl",
            }
            for name, (lang, domain) in SOURCES.items()
        },
        "countries": [
            {"code": c.code, "en": c.name["en"], "zh": c.name["zh"], "in_zh_corpus": c.in_zh_corpus} for c in countries
        ],
        "files": {
            str(path.relative_to(root)): _sha256(path)
            for path in sorted(root.rglob("*"))
            if path.is_file() and path != root / MANIFEST  # present when an older world is completed
        },
    }


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
