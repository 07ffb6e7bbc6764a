"""`almr vocab extend CONFIG`: extend the base tokenizer with additional-language tokens; a report."""

from pathlib import Path
from typing import Annotated

import typer

from almr.cli.common import SetOption, load, say

app = typer.Typer(help="Vocabulary extension for the additional language (docs/vocab.md).", no_args_is_help=True)


@app.command("extend")
def extend(
    config: Annotated[Path | None, typer.Argument(help="Config with data.sources, mixture and model.")] = None,
    set_: SetOption = None,
) -> None:
    """Train BPE merges on the sources tagged mixture.additional_language, add the first vocab.new_tokens
    new tokens to the base tokenizer, resize the model, and write vocab.out_dir with vocab_report.md."""
    from almr.vocab.extend import base_tokenizer_dir, extend_vocabulary  # heavy: tokenizers, torch
    from almr.vocab.report import report

    loaded = load(config, set_)
    extension = extend_vocabulary(loaded, log=say)
    say(report(loaded, extension, base_tokenizer_dir(loaded)))
