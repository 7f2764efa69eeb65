"""GGUF files for the llama.cpp engine: what a file stores, and a Llama checkpoint written as one.

Pure Python over the `gguf` package (a dependency of infer-opt itself), so these parts run and
are tested in any environment, with or without llama.cpp.

- `read_facts(path)`: the architecture numbers and every tensor as stored, in bytes: a
  quantized tensor counts its packed blocks, scales and minimums included (a Q4_1 block of 32
  weights is 20 bytes: 16 of nibbles, an f16 scale and an f16 minimum).
- `write_llama_gguf(model_dir, out)`: a Llama-architecture safetensors checkpoint as an F32
  GGUF, for models that do not ship one (the tiny test model). Layout as llama.cpp's own
  convert_hf_to_gguf.py writes it: tensor names `token_embd`, `blk.N.attn_q`, ...; q and k rows
  permuted from Hugging Face's rotate-half order to llama.cpp's interleaved RoPE pairs; a tied
  lm_head is no tensor at all (llama.cpp then reads `token_embd` as the output matrix).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infer_opt.core.roofline import Weight, WeightBytes

# Bump when write_llama_gguf's output changes, so cached conversions are not reused.
RECIPE_VERSION = 1
EMBEDDING = "token_embd.weight"
OUTPUT = "output.weight"
# What a quantized matmul turns its activations into (ggml's vec_dot_type of the weight type):
# llama.cpp multiplies quantized weights by quantized activations, not by floats.
ACTIVATION_TYPE = {"Q4_0": "Q8_0", "Q4_1": "Q8_1", "Q5_0": "Q8_0", "Q5_1": "Q8_1",
                   "Q8_0": "Q8_0", "Q2_K": "Q8_K", "Q3_K": "Q8_K", "Q4_K": "Q8_K",
                   "Q5_K": "Q8_K", "Q6_K": "Q8_K", "IQ4_NL": "Q8_0", "IQ4_XS": "Q8_K"}


@dataclass(frozen=True)
class GGUFFacts:
    """What a GGUF holds, read from its header (no tensor data is touched)."""

    architecture: str
    file_type: str  # llama.cpp's name for the file, e.g. "MOSTLY_Q4_1", "ALL_F32"
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    weights: WeightBytes  # every tensor as stored
    tensor_types: dict[str, int]  # ggml type name -> number of tensors

    @property
    def kv_values_per_token(self) -> int:
        """K and V values cached per token, all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim

    @property
    def activation_types(self) -> list[str]:
        """The types quantized matmuls convert activations to (empty for float weights)."""
        return sorted({ACTIVATION_TYPE[t] for t in self.tensor_types if t in ACTIVATION_TYPE})

    def describe_types(self) -> str:
        """e.g. '210 Q4_1, 61 F32, 1 Q8_0', most frequent first."""
        return ", ".join(f"{n} {t}" for t, n in Counter(self.tensor_types).most_common())


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return default
    value = field.contents()
    return value


def read_facts(path: Path) -> GGUFFacts:
    """The header of a GGUF file: architecture numbers and tensor sizes as stored.

    The input embedding table is read by lookup (one row per token) unless the file has no
    separate `output.weight`: then llama.cpp uses the table as the lm_head too, and a decode
    step reads all of it (core/roofline.py).
    """
    import gguf

    reader = gguf.GGUFReader(str(path))
    arch = str(_field(reader, "general.architecture", ""))
    heads = int(_field(reader, f"{arch}.attention.head_count", 0))
    kv_heads = int(_field(reader, f"{arch}.attention.head_count_kv", heads) or heads)
    embedding = int(_field(reader, f"{arch}.embedding_length", 0))
    head_dim = int(_field(reader, f"{arch}.attention.key_length", 0)
                   or (embedding // heads if heads else 0))
    names = {t.name for t in reader.tensors}
    tied = EMBEDDING in names and OUTPUT not in names
    weights: list[Weight] = []
    types: Counter[str] = Counter()
    vocab = int(_field(reader, f"{arch}.vocab_size", 0) or 0)
    for t in reader.tensors:
        # GGUF shapes are in ggml order (fastest dimension first): [576, 49152] is 49152 rows.
        rows = int(t.shape[-1])
        if t.name == EMBEDDING:
            vocab = vocab or rows
        weights.append(Weight(t.name, int(t.n_elements), int(t.n_bytes),
                              lookup_rows=rows if t.name == EMBEDDING and not tied else 0))
        types[t.tensor_type.name] += 1
    raw_type = _field(reader, "general.file_type")
    try:
        file_type = gguf.LlamaFileType(int(raw_type)).name if raw_type is not None else "?"
    except ValueError:
        file_type = f"type {raw_type}"
    return GGUFFacts(
        architecture=arch, file_type=file_type,
        layers=int(_field(reader, f"{arch}.block_count", 0)), heads=heads, kv_heads=kv_heads,
        head_dim=head_dim, vocab=vocab,
        weights=WeightBytes(tuple(weights), tied_lm_head=EMBEDDING if tied else None),
        tensor_types=dict(types))


def permute_rope(w: np.ndarray, heads: int) -> np.ndarray:
    """q/k projection rows from Hugging Face's rotate-half order (first half of each head's
    dims paired with the second half) to llama.cpp's interleaved pairs (2i, 2i + 1), as
    convert_hf_to_gguf.py does. w: [heads * head_dim, hidden]."""
    return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


# Hugging Face Llama parameter name (per layer) -> GGUF tensor name.
_LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def write_llama_gguf(model_dir: Path, out: Path) -> None:
    """A Llama safetensors checkpoint (config.json + *.safetensors) as an F32 GGUF at `out`.

    The vocabulary is placeholder text (`<t0>`, `<t1>`, ...): infer-opt feeds token ids, never
    text, and llama.cpp needs a vocabulary only to know its size and special ids.
    """
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    archs = config.get("architectures") or [config.get("model_type", "?")]
    if config.get("model_type") != "llama":
        raise ValueError(f"can only write Llama-architecture checkpoints as GGUF, not "
                         f"{archs[0]}; give the model directory a .gguf file instead")
    tensors: dict[str, np.ndarray] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    layers = int(config["num_hidden_layers"])
    vocab = int(config["vocab_size"])

    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(model_dir.name)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.get("rope_theta")
                                    or (config.get("rope_parameters") or {}).get("rope_theta")
                                    or 10000.0))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    special = {int(config.get(k)) for k in ("bos_token_id", "eos_token_id", "pad_token_id")
               if config.get(k) is not None}
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"<t{i}>" for i in range(vocab)])
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([int(gguf.TokenType.CONTROL) if i in special
                            else int(gguf.TokenType.NORMAL) for i in range(vocab)])
    for key, add in (("bos_token_id", writer.add_bos_token_id),
                     ("eos_token_id", writer.add_eos_token_id),
                     ("pad_token_id", writer.add_pad_token_id)):
        if config.get(key) is not None:
            add(int(config[key]))
    writer.add_add_bos_token(False)

    def f32(name: str) -> np.ndarray:
        return np.ascontiguousarray(tensors[name].astype(np.float32))

    writer.add_tensor(EMBEDDING, f32("model.embed_tokens.weight"))
    for i in range(layers):
        for hf, gg in _LAYER_TENSORS.items():
            w = f32(f"model.layers.{i}.{hf}")
            if hf == "self_attn.q_proj.weight":
                w = permute_rope(w, heads)
            elif hf == "self_attn.k_proj.weight":
                w = permute_rope(w, kv_heads)
            writer.add_tensor(f"blk.{i}.{gg}", np.ascontiguousarray(w))
    writer.add_tensor("output_norm.weight", f32("model.norm.weight"))
    if not config.get("tie_word_embeddings", False) and "lm_head.weight" in tensors:
        writer.add_tensor(OUTPUT, f32("lm_head.weight"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
