"""A tiny llama GGUF written with gguf-py (Q4_1 projections, Q8_0 tied embedding), and the fp32
safetensors model transformers makes of it, exactly as `smollm2-135m` is made of its GGUF."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, VOCAB = 64, 128, 2, 4, 2, 512


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's q/k row permutation (transformers undoes it when loading)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def write_gguf(path: Path, seed: int = 0) -> None:
    from gguf import GGMLQuantizationType as T
    from gguf import GGUFWriter
    from gguf.quants import quantize

    rng = np.random.default_rng(seed)
    head_dim = HIDDEN // HEADS
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(LAYERS)
    w.add_context_length(512)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTER)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(VOCAB)
    w.add_rope_dimension_count(head_dim)

    def add(name: str, value: np.ndarray, kind: T) -> None:
        w.add_tensor(name, quantize(value.astype(np.float32), kind), raw_dtype=kind)

    def normal(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.1, shape)

    add("token_embd.weight", normal(VOCAB, HIDDEN), T.Q8_0)
    for i in range(LAYERS):
        add(f"blk.{i}.attn_q.weight", llama_cpp_permute(normal(HIDDEN, HIDDEN), HEADS), T.Q4_1)
        add(f"blk.{i}.attn_k.weight", llama_cpp_permute(normal(KV_HEADS * head_dim, HIDDEN),
                                                        KV_HEADS), T.Q4_1)
        add(f"blk.{i}.attn_v.weight", normal(KV_HEADS * head_dim, HIDDEN), T.Q4_1)
        add(f"blk.{i}.attn_output.weight", normal(HIDDEN, HIDDEN), T.Q4_1)
        add(f"blk.{i}.ffn_gate.weight", normal(INTER, HIDDEN), T.Q4_1)
        add(f"blk.{i}.ffn_up.weight", normal(INTER, HIDDEN), T.Q4_1)
        add(f"blk.{i}.ffn_down.weight", normal(HIDDEN, INTER), T.Q4_1)
        for norm in ("attn_norm", "ffn_norm"):
            w.add_tensor(f"blk.{i}.{norm}.weight", (1 + normal(HIDDEN)).astype(np.float32))
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def make_model_dir(out: Path, seed: int = 0) -> Path:
    """`out`: config.json + model.safetensors (fp32, dequantized by transformers) + the GGUF."""
    from infer_opt.core.models import gguf_to_safetensors

    src = out.parent / f"{out.name}-gguf"
    src.mkdir(parents=True, exist_ok=True)
    write_gguf(src / "tiny.Q4_1.gguf", seed)
    gguf_to_safetensors(src, "tiny.Q4_1.gguf", out, tokenizer=False)
    shutil.copy(src / "tiny.Q4_1.gguf", out / "tiny.Q4_1.gguf")
    return out
