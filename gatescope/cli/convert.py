"""`gatescope convert IN -o OUT.safetensors`: any checkpoint gatescope reads, as a torch-named safetensors file.

The input is any format gatescope.checkpoints.formats reads (torch state dicts, fastai's AWD-LSTM, TorchScript
archives, Keras, ONNX, madmom) or a safetensors file; the output holds the tensors under torch.nn's names and the gatescope
metadata (docs/architecture.md "Checkpoint metadata"), merged from the input's own, the reader's
(roles, reset_before) and the options (--vocab, --tokenizer, --unk, --eos, --roles). The result is
loaded before it is renamed into place, so a file that would not load is never written.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import click

from gatescope.cli import with_formats
from gatescope.errors import GatescopeError
from gatescope.files import atomic_write, check_writable, text_lines
from gatescope.validation.limits import MAX_JSON_BYTES, MAX_VOCAB
from gatescope.validation.text import read_json

ROLES = ("embedding", "recurrent", "decoder", "outside")
LISTS = ("recurrent", "outside")  # roles that name several modules or tensors


def read_vocab(path: Path) -> list[str]:
    """A vocabulary file: JSON (``.json``), a list of token strings or a ``{token: id}`` object (ids 0..n-1,
    each once: the layout of torchtext's, gensim's and most tokenizers' ``vocab.json``), else one token a line
    (id = line number); read through the doors of gatescope.files and gatescope.validation.text (regular
    files, bounded)."""
    if path.suffix.lower() == ".json":
        tokens = read_json(path, "vocabulary file", MAX_JSON_BYTES, "a JSON list of token strings or a {token: id} object")
        if isinstance(tokens, dict):
            return _by_id(path, tokens)
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise GatescopeError(f"{path} must hold a JSON list of token strings or a {{token: id}} object")
        return tokens
    tokens = []
    for number, line in text_lines(path, "vocabulary file"):
        if not line:
            raise GatescopeError(f"{path}: line {number} is empty (one token a line; "
                                 "a vocabulary with a newline or empty token goes in a .json list)")
        if len(tokens) == MAX_VOCAB:
            raise GatescopeError(f"{path} holds more than {MAX_VOCAB} tokens")
        tokens.append(line)
    return tokens


def _by_id(path: Path, ids: dict[str, Any]) -> list[str]:
    """The tokens of a ``{token: id}`` object in id order; GatescopeError unless the ids are 0..n-1, each once."""
    for token, i in ids.items():
        if not isinstance(i, int) or isinstance(i, bool):
            raise GatescopeError(f"{path}: the id of {token!r} is {json.dumps(i)}, not an integer "
                                 "(a {token: id} vocabulary maps each token to its row 0..n-1)")
    tokens: list[str | None] = [None] * len(ids)
    for token, i in sorted(ids.items(), key=lambda item: item[1]):
        if not 0 <= i < len(ids):
            missing = tokens.index(None)
            raise GatescopeError(f"{path}: {token!r} has id {i}, but {len(ids)} tokens take ids 0..{len(ids) - 1} "
                                 f"(no token has id {missing})")
        if tokens[i] is not None:
            raise GatescopeError(f"{path}: {tokens[i]!r} and {token!r} both have id {i} (ids are 0..n-1, each once)")
        tokens[i] = token
    return tokens  # type: ignore[return-value]  # every slot filled: n distinct ids in 0..n-1


def parse_roles(values: tuple[str, ...]) -> dict[str, Any]:
    """``("recurrent=rnns.0,rnns.1", "decoder=none", "outside=aux")`` -> ``{"recurrent": [...], "decoder": None,
    "outside": ["aux"]}``."""
    roles: dict[str, Any] = {}
    for value in values:
        role, sep, names = value.partition("=")
        role = role.strip()
        if not sep or role not in ROLES or not names.strip():
            raise GatescopeError(f"--roles {value!r}: expected ROLE=NAME with ROLE one of {', '.join(ROLES)}")
        items = [n.strip() for n in names.split(",") if n.strip()]
        if role in LISTS:
            roles[role] = items
        elif len(items) != 1:
            raise GatescopeError(f"--roles {value!r}: {role} names one tensor or module")
        else:
            roles[role] = None if items[0].lower() == "none" else items[0]
    return roles


def read_source(path: Path) -> tuple[dict[str, Any], dict[str, Any], str, list[str]]:
    """(tensors, gatescope metadata, format read, notes) of any checkpoint gatescope reads; a safetensors
    file passes the same door as every command's (gatescope.checkpoints.loader.read_header, which
    checks the metadata with gatescope.validation.checkpoint) before a tensor is read."""
    from gatescope.checkpoints import formats
    from gatescope.checkpoints.loader import read_header

    if not path.exists():
        raise GatescopeError(f"no such file: {path}")
    if (error := formats.not_a_checkpoint(path)) is not None:
        raise error
    _, metadata = read_header(path)
    converted = formats.read(path)
    if converted is not None:
        return dict(converted.tensors), dict(converted.metadata), converted.source, list(converted.notes)
    with formats.open_checkpoint(path) as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, metadata, "safetensors", []


def converted_metadata(
    metadata: dict[str, Any],
    vocab: list[str] | None,
    tokenizer: str | None,
    unk: str | None,
    eos: str | None,
    roles: dict[str, Any],
) -> dict[str, Any]:
    """The output's metadata: the input's, then the options (a given option replaces the input's value)."""
    from gatescope.checkpoints.loader import MODEL_FORMAT, MODEL_FORMAT_VERSION

    meta = {**metadata, "format": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION}
    if vocab is not None:
        meta["vocab"] = vocab
        meta["unk"] = unk if unk is not None else ("<unk>" if "<unk>" in vocab else None)
        meta["eos"] = eos if eos is not None else ("<eos>" if "<eos>" in vocab else None)
    elif unk is not None or eos is not None:
        if meta.get("vocab") is None:
            raise GatescopeError("--unk and --eos name tokens of a vocabulary: give --vocab FILE")
        meta.update({k: v for k, v in (("unk", unk), ("eos", eos)) if v is not None})
    if tokenizer is not None:
        if meta.get("vocab") is None:
            raise GatescopeError("--tokenizer says how text becomes tokens of a vocabulary: give --vocab FILE")
        meta["tokenizer"] = tokenizer
    elif vocab is not None:
        meta.setdefault("tokenizer", "word")
    if roles:
        meta["roles"] = {**(meta.get("roles") or {}), **roles}
    return meta


@with_formats
@click.command("convert")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), metavar="OUT.safetensors",
              help="The torch-named safetensors file to write.")
@click.option("--vocab", "vocab_path", type=click.Path(path_type=Path), metavar="FILE",
              help="The vocabulary: one token a line (id = line number), or .json: a list of strings or a "
                   "{token: id} object (ids 0..n-1).")
@click.option("--tokenizer", type=click.Choice(["word", "char"]),
              help="How text becomes tokens: split on whitespace (word, the default) or every character (char).")
@click.option("--unk", metavar="TOKEN", help="The unknown-word token (default: <unk> when the vocabulary has it).")
@click.option("--eos", metavar="TOKEN", help="The end-of-sequence token (default: <eos> when the vocabulary has it).")
@click.option("--roles", "role_values", multiple=True, metavar="ROLE=NAME[,NAME]",
              help="Name the embedding, the recurrent chain (in order) or the decoder, or declare tensors or "
                   "modules outside the chain (its outputs do not go through them), e.g. --roles "
                   "recurrent=rnns.0,rnns.1 --roles decoder=none --roles outside=aux_head (repeatable).")
def convert(source: Path, output: Path, vocab_path: Path | None, tokenizer: str | None, unk: str | None,
            eos: str | None, role_values: tuple[str, ...]) -> None:
    """Convert SOURCE ({formats}) to a torch-named safetensors checkpoint with gatescope's metadata, which
    every command then reads."""
    from safetensors.torch import save_file

    from gatescope.checkpoints.formats import META_KEY
    from gatescope.checkpoints.loader import load

    if output.suffix != ".safetensors":
        raise GatescopeError(f"the output {output} must be a .safetensors file")
    check_writable(output, [("input", source), ("--vocab", vocab_path)])
    roles = parse_roles(role_values)
    vocab = read_vocab(vocab_path) if vocab_path is not None else None
    tensors, metadata, read_as, notes = read_source(source)
    metadata = converted_metadata(metadata, vocab, tokenizer, unk, eos, roles)

    def write(tmp: str) -> None:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={META_KEY: json.dumps(metadata)})
        with warnings.catch_warnings(record=True) as caught:  # they name the temporary file: name the output
            warnings.simplefilter("always")
            try:
                model = load(tmp)
            except GatescopeError as exc:
                raise GatescopeError(f"{source} converted, but the result would not load: "
                                     f"{str(exc).replace(tmp, str(output))}") from None
        for warning in caught:
            message = str(warning.message).replace(tmp, str(output)).replace(Path(tmp).name, output.name)
            warnings.warn(message, warning.category, stacklevel=2)
        summary.append(model)

    summary: list = []
    atomic_write(output, write)
    model = summary[0]
    modules = ", ".join(f"{i['name']} ({i['cell']}{'' if i.get('reset_after', True) else ', reset before'})"
                        for i in model.modules_info)
    click.echo(f"wrote {output}: {len(tensors)} tensors read as {read_as}; recurrent modules {modules}", err=True)
    for note in notes:
        click.echo(f"  note: {note}", err=True)
