"""The model converted to CTranslate2, once per weight type, and what the converted file stores
(engine `ct2`).

Conversion: ctranslate2's `TransformersConverter(model_dir).convert(out, quantization=...)`,
in a child process (core/artifacts.cached_build), cached under
<cache>/ct2/<model>-<quantization>-<hash> keyed by the model's content and the ctranslate2,
transformers and torch versions (core/artifacts.py). One conversion per compute type
(`float32`, `int8`): the engine loads each with the compute type it was stored in, so the file
holds exactly the weights in memory and `model_bin_weights` can count them. int8 is
CTranslate2's own: each weight row scaled to [-127, 127] (one float32 scale per output row).

A model without a tokenizer (the tiny test model) gets placeholder token strings `<t0>`,
`<t1>`, ...: CTranslate2's generate calls take token strings, the engine maps ids to them
through the converted vocabulary, so only the count and the ids matter.
"""

from __future__ import annotations

import functools
import json
import os
import struct
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

from infer_opt.core.artifacts import build_dir, cached_build, child_threads, version
from infer_opt.core.roofline import Weight, WeightBytes

# Bump when the conversion recipe changes, so cached models are not reused.
RECIPE_VERSION = 1
QUANTIZATIONS = ("float32", "int8")
# model.bin element types, by id (ctranslate2 specs/model_spec._dtype_to_type_id).
DTYPES = (("float32", 4), ("int8", 1), ("int16", 2), ("int32", 4), ("float16", 2),
          ("bfloat16", 2))


def model_dir(model_path: str, quantization: str) -> Path:
    key = {"recipe": RECIPE_VERSION, "quantization": quantization,
           **{pkg: version(pkg) for pkg in ("ctranslate2", "transformers", "torch")}}
    return build_dir("ct2", model_path, key, quantization)


def ensure_model(model_path: str, quantization: str) -> tuple[Path, float]:
    """(the converted model's folder, seconds spent converting: 0.0 when cached)."""
    target = model_dir(model_path, quantization)
    seconds = cached_build(target, functools.partial(convert, model_path,
                                                     quantization=quantization),
                           done="model.bin", child=True,
                           what=f"CTranslate2 conversion ({quantization})")
    return target, seconds


# --- model.bin -------------------------------------------------------------------------------
def _u(fh: BinaryIO, fmt: str) -> int:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise ValueError("model.bin ends early")
    return int(struct.unpack(fmt, data)[0])


def _string(fh: BinaryIO) -> str:
    n = _u(fh, "<H")  # length including the terminating NUL
    return fh.read(n)[:-1].decode("utf-8")


def read_model_bin(path: Path) -> tuple[list[tuple[str, list[int], str, int]], dict[str, str]]:
    """Variables (name, shape, dtype, bytes) and aliases (alias -> variable) of a CTranslate2
    model.bin (binary version 6: the layout ctranslate2's ModelSpec._serialize writes), read
    from the headers only: the data is skipped."""
    variables: list[tuple[str, list[int], str, int]] = []
    with open(path, "rb") as fh:
        binary_version = _u(fh, "<I")
        if binary_version < 5:
            raise ValueError(f"model.bin binary version {binary_version} is not supported")
        _string(fh)  # spec name
        _u(fh, "<I")  # spec revision
        for _ in range(_u(fh, "<I")):
            name = _string(fh)
            shape = [_u(fh, "<I") for _ in range(_u(fh, "<B"))]
            dtype = DTYPES[_u(fh, "<B")][0]
            nbytes = _u(fh, "<I")
            fh.seek(nbytes, os.SEEK_CUR)
            variables.append((name, shape, dtype, nbytes))
        aliases = {}
        for _ in range(_u(fh, "<I")):
            alias = _string(fh)
            aliases[alias] = _string(fh)
    return variables, aliases


def model_bin_weights(path: Path) -> tuple[WeightBytes, dict[str, int]]:
    """Every stored tensor once (an alias shares its target: a tied lm_head, layer norms with
    equal values), as stored, and the bytes per dtype; scalars (settings such as num_heads) are
    not weights. The embedding table and its per-row int8 scale are read by lookup, one row per
    token, unless the output projection is an alias of the table (a tied lm_head reads it all).
    Names use '/' as ctranslate2 writes them (decoder/embeddings/weight)."""
    variables, aliases = read_model_bin(path)
    tensors = [(n, shape, d, b) for n, shape, d, b in variables if shape]
    table = next((n for n, shape, _, _ in tensors
                  if n.endswith("embeddings/weight") and len(shape) == 2), None)
    tied = table is not None and aliases.get(table.replace("embeddings", "projection")) == table
    prefix = table.removesuffix("weight") if table is not None else None
    rows = next((shape[0] for n, shape, _, _ in tensors if n == table), 0)
    weights: list[Weight] = []
    per_dtype: Counter[str] = Counter()
    for name, shape, dtype, nbytes in tensors:
        elements = 1
        for d in shape:
            elements *= d
        # The table and its per-row scale (int8): one row each per token, unless tied.
        lookup = prefix is not None and not tied and name.startswith(prefix) and shape[0] == rows
        weights.append(Weight(name, elements, nbytes, lookup_rows=rows if lookup else 0))
        per_dtype[dtype] += nbytes
    return WeightBytes(tuple(weights), tied_lm_head=table if tied else None), dict(per_dtype)


# --- conversion (in the child) ---------------------------------------------------------------
class _PlaceholderTokenizer:
    """What the converter reads of a tokenizer, for a model that has none."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.vocab = {f"<t{i}>": i for i in range(int(config["vocab_size"]))}

        def token(key: str) -> str | None:
            i = config.get(key)
            return None if i is None else f"<t{int(i)}>"

        self.bos_token, self.eos_token = token("bos_token_id"), token("eos_token_id")
        self.unk_token, self.pad_token = None, token("pad_token_id")
        self.special_tokens_map: dict[str, Any] = {}

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)


def convert(model_path: str, out: Path, quantization: str) -> None:
    """In the build child: the conversion into `out`."""
    import torch

    torch.set_num_threads(child_threads())
    from ctranslate2.converters import TransformersConverter

    path = Path(model_path)
    has_tokenizer = (path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file()

    class Converter(TransformersConverter):
        def load_tokenizer(self, tokenizer_class: Any, name: str, **kwargs: Any) -> Any:
            if has_tokenizer:
                return super().load_tokenizer(tokenizer_class, name, **kwargs)
            return _PlaceholderTokenizer(json.loads((path / "config.json").read_text()))

    Converter(model_path, low_cpu_mem_usage=True).convert(str(out), quantization=quantization,
                                                          force=True)
