"""What a model or tokenizer path must be, with messages that point the right way.

placerl reads models from local directories only (``HF_HUB_OFFLINE``): a Hub id such as
``Qwen/Qwen2-0.5B-Instruct`` is not downloaded, so it is named as such with the command that
fetches it. A directory that holds no tokenizer files (an empty one, a data folder) is said to
be the wrong directory, before transformers tries every tokenizer backend and ends in advice to
install sentencepiece or tiktoken.
"""

from __future__ import annotations

import re
from pathlib import Path

from placerl.errors import UserError

# the files a tokenizer is saved as (fast, slow sentencepiece/BPE/WordPiece, tiktoken)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.tiktoken",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def looks_like_hub_id(path: str | Path) -> bool:
    """``org/name`` that is not a path here: what one copies from a model's Hub page."""
    text = str(path)
    return bool(_HUB_ID.match(text)) and not Path(text).exists()


def require_dir(path: str | Path, what: str) -> Path:
    """``path`` as an existing local directory, else one message that says what to do."""
    path = Path(path)
    if looks_like_hub_id(path):
        name = str(path).split("/")[-1]
        raise UserError(
            f"no such local directory. If this is a Hugging Face Hub id: placerl downloads "
            f"nothing, it reads models from disk only; get it first, e.g. "
            f"`hf download {path} --local-dir models/{name}`, then use models/{name}",
            where=str(path),
        )
    if not path.exists():
        raise UserError(f"{what} directory does not exist", where=str(path))
    if not path.is_dir():
        raise UserError(f"{what} path is a file, not a model directory", where=str(path))
    return path


def require_model_files(path: Path, what: str) -> None:
    """A saved model directory has a ``config.json``."""
    if not (path / "config.json").exists():
        raise UserError(
            f"{what} directory has no config.json (not a saved model; {_holds(path)})",
            where=str(path),
        )


def require_tokenizer_files(path: Path) -> None:
    """A tokenizer directory holds at least one of ``TOKENIZER_FILES``."""
    if not any((path / name).exists() for name in TOKENIZER_FILES):
        raise UserError(
            "not a model or tokenizer directory: no tokenizer.json or tokenizer_config.json "
            f"({_holds(path)}); model.path (or model.tokenizer) takes a local Hugging Face "
            "model directory, e.g. one made by `placerl make-model DIR` or `hf download`",
            where=str(path),
        )


def _holds(path: Path, shown: int = 4) -> str:
    names = sorted(p.name for p in path.iterdir())
    if not names:
        return "it is empty"
    more = f", … ({len(names)} entries)" if len(names) > shown else ""
    return "it holds " + ", ".join(names[:shown]) + more
