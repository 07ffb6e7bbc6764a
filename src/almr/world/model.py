"""The world's base model: a Llama-3-style decoder of about 1M parameters, as a Hugging Face
config. The world ships the shape only; the CPT trainer pretrains the weights from random
initialization on a mostly-English mixture, so that it plays Llama-3's part."""

from pathlib import Path

from transformers import GenerationConfig, LlamaConfig, PreTrainedTokenizerFast

from almr.world.config import TinyLlamaConfig
from almr.world.tokenizer import EOS, EOT


def tiny_llama_config(shape: TinyLlamaConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        rope_theta=shape.rope_theta,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS),
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )


def save_model_config(directory: Path, shape: TinyLlamaConfig, tokenizer: PreTrainedTokenizerFast) -> None:
    """config.json and generation_config.json; generation stops at the end of a document or
    of a chat turn, as Llama-3-Instruct's does."""
    config = tiny_llama_config(shape, tokenizer)
    config.save_pretrained(directory)
    GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[config.eos_token_id, tokenizer.convert_tokens_to_ids(EOT)],
        pad_token_id=config.pad_token_id,
        do_sample=False,
    ).save_pretrained(directory)
