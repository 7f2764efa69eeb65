"""Export a causal LM to one ONNX decoder graph with past key/values, and cache it.

The graph (opset 18, torch.onnx dynamo exporter) takes

    input_ids      int64 [B, T]          T new tokens (the prompt, or 1 when decoding)
    attention_mask int64 [B, P + T]      all ones here: static batches have no padding
    position_ids   int64 [B, T]
    logits_index   int64 [K]             which of the T positions get logits (lm_head runs on K)
    past.{i}.key / past.{i}.value  [B, kv_heads, P, head_dim] for each layer i; P may be 0

and returns `logits` [B, K, V] and `present.{i}.key/value` [B, kv_heads, P + T, head_dim].
One graph serves prefill (P = 0, K = 1), decode (T = 1, K = 1) and teacher-forced scoring
(P = 0, K = T), so TTFT does not pay for lm_head on the whole prompt.

Exports and int8 copies are built once by core/artifacts.cached_build, in a child process (the
torch model and the exporter's peak memory never count towards the measuring process's peak
RSS), and published with an atomic rename under a file lock. The export is keyed by the model's
content (weights_digest), dtype, attention implementation and the torch/transformers/onnx
versions that made it; the int8 copies are files beside it.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any

from infer_opt.core.artifacts import (
    cache_root,
    cached_build,
    child_threads,
    key_digest,
    model_digest,
    version,
)
from infer_opt.core.roofline import Weight, WeightBytes

OPSET = 18
# Bump when the graph's inputs/outputs or the export recipe change, so old caches are not reused.
EXPORT_RECIPE_VERSION = 1
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
# Files of the int8 graph, by whether weights use 7 bits (reduce_range, see quantize_int8).
INT8_FILES = {False: ("model.int8.onnx", "model.int8.onnx.data"),
              True: ("model.int8-7bit.onnx", "model.int8-7bit.onnx.data")}
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def int8_saturates(machine: str | None = None, cpuinfo: str | None = None) -> bool:
    """True on an x86 CPU without VNNI (AVX2 or AVX-512 only).

    There, ONNX Runtime's u8 x s8 int8 GEMM uses VPMADDUBSW, which adds pairs of u8*s8 products
    into int16 with saturation: with full-range 8-bit weights the sums overflow and the results
    are wrong (measured here, AVX2 EPYC: KL 11.7 nats vs the fp32 graph, 0% top-1). ORT's
    documented remedy is reduce_range (7-bit weights), which keeps every pair sum in int16.
    VNNI (VPDPBUSD) accumulates in int32 and has no such overflow; ARM kernels neither.
    """
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # cannot tell: 7-bit weights are correct everywhere
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])
    return not any(f in flags for f in VNNI_FLAGS)


def export_dir(model_path: str, dtype: str, attn: str) -> Path:
    """Cache folder for one export: readable prefix, hash of everything that changes the graph
    (the model's content, config.json included, not its path)."""
    key = {
        "model": model_digest(model_path),
        "dtype": dtype, "attn": attn, "opset": OPSET, "recipe": EXPORT_RECIPE_VERSION,
        "torch": version("torch"), "transformers": version("transformers"),
        "onnx": version("onnx"), "onnxscript": version("onnxscript"),
    }
    torch_v = key["torch"].split("+")[0]
    name = f"{Path(model_path).name}-{dtype}-{attn}-opset{OPSET}-torch{torch_v}-{key_digest(key)}"
    return cache_root() / "onnx" / name


def _wrapper(model: Any) -> Any:
    """nn.Module taking flat tensors; builds the transformers cache inside the traced graph."""
    import inspect

    import torch
    from transformers import DynamicCache

    config = model.config
    layers = config.num_hidden_layers
    # transformers >= 5.2x names the forward argument `cache`; older 5.x and 4.x name it
    # `past_key_values` (5.24 still accepts that name with a deprecation warning).
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    position_ids: torch.Tensor, logits_index: torch.Tensor,
                    *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
            cache = DynamicCache(config=config)
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)  # [B, kv_heads, P, head_dim]
            out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids, use_cache=True,
                             logits_to_keep=logits_index, **{cache_kw: cache})
            present: list[torch.Tensor] = []
            for i in range(layers):
                present += [cache.layers[i].keys, cache.layers[i].values]  # [B, kv, P+T, hd]
            return (out.logits, *present)

    return Decoder()


def input_names(layers: int) -> list[str]:
    return ["input_ids", "attention_mask", "position_ids", "logits_index"] + [
        f"past.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def output_names(layers: int) -> list[str]:
    return ["logits"] + [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def kv_shape(config: Any) -> tuple[int, int]:
    """(kv_heads, head_dim) of the cache tensors."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return int(kv_heads), int(head_dim)


def export_model(model_path: str, dtype: str, attn: str, out_dir: Path) -> None:
    """Trace the wrapper with dynamic batch, sequence, past and logits-index sizes. Runs in
    the build child (ensure_export), with its parent's thread count."""
    import torch
    from torch.export import Dim
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(child_threads())

    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtypes[dtype],
                                                 attn_implementation=attn, use_safetensors=True,
                                                 trust_remote_code=False)
    model.eval()
    config = model.config
    layers = config.num_hidden_layers
    kv_heads, head_dim = kv_shape(config)
    # Example sizes are all different and > 1, so the exporter does not specialize any of them.
    b, t, p = 2, 3, 4
    ids = torch.randint(0, config.vocab_size, (b, t))
    mask = torch.ones(b, p + t, dtype=torch.long)
    pos = torch.arange(p, p + t).expand(b, t)
    keep = torch.tensor([t - 1])
    past = tuple(torch.randn(b, kv_heads, p, head_dim, dtype=dtypes[dtype]) for _ in range(2 * layers))
    batch, seq, total, kept = Dim("batch"), Dim("seq"), Dim("total"), Dim("keep")
    past_len = Dim("past", min=0)
    dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: total},
               "position_ids": {0: batch, 1: seq}, "logits_index": {0: kept},
               "past": tuple({0: batch, 2: past_len} for _ in range(2 * layers))}
    with torch.no_grad():
        program = torch.onnx.export(_wrapper(model), (ids, mask, pos, keep, *past),
                                    dynamic_shapes=dynamic, input_names=input_names(layers),
                                    output_names=output_names(layers), opset_version=OPSET,
                                    dynamo=True)
    program.save(str(out_dir / MODEL_FILE), external_data=True)
    # The exporter names the data file after the model file; make sure it is where we expect.
    if not (out_dir / DATA_FILE).is_file():
        raise RuntimeError(f"exporter did not write {DATA_FILE} in {out_dir}")


def quantize_int8(src_dir: Path, out_dir: Path, reduce_range: bool) -> None:
    """Dynamic int8: MatMul weights to int8 per output channel, activations quantized per call;
    `reduce_range`: weights in 7 bits, for CPUs whose int8 kernels saturate (int8_saturates)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src_dir / MODEL_FILE), str(out_dir / INT8_FILES[reduce_range][0]),
                     weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range,
                     use_external_data_format=True, op_types_to_quantize=["MatMul"])


def ensure_export(model_path: str, dtype: str, attn: str, int8: bool) -> tuple[Path, dict[str, Any]]:
    """Path of the .onnx to load (exporting/quantizing once), and what happened, for the row."""
    target = export_dir(model_path, dtype, attn)
    reduce_range = int8 and int8_saturates()
    int8_file = INT8_FILES[reduce_range][0]
    export_s = cached_build(target, functools.partial(export_model, model_path, dtype, attn),
                            done=MODEL_FILE, child=True, what="ONNX export")
    quantize_s = 0.0
    if int8:  # a file (+ its .data) beside the fp32 graph
        quantize_s = cached_build(
            target / int8_file, functools.partial(quantize_int8, target, reduce_range=reduce_range),
            child=True, what="ONNX int8 quantization")
    info: dict[str, Any] = {"export_s": export_s, "quantize_s": quantize_s, "cache_dir": str(target),
            "int8_reduce_range": reduce_range}
    return target / (int8_file if int8 else MODEL_FILE), info


def initializer_weights(onnx_path: Path) -> WeightBytes:
    """Every initializer (inline or external) with what a decode step reads of it: a table
    consumed only by Gather is an embedding read by lookup (one row per token); one consumed by
    Gather and by anything else is the tied lm_head's table, read in full (core/roofline.py)."""
    import numpy as np
    import onnx
    from onnx import helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    consumers: dict[str, set[str]] = {}
    transposed: dict[str, str] = {}  # Transpose output -> its input
    nbits: dict[str, int] = {}  # MatMulNBits packed weight -> parameters it stands for
    scales: set[str] = set()  # MatMulNBits scales and zero points
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
        if node.op_type == "Transpose":
            transposed[node.output[0]] = node.input[0]
        if node.op_type == "MatMulNBits":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            nbits[node.input[1]] = int(attrs["K"]) * int(attrs["N"])
            scales.update(node.input[2:4])
    # A table read through a Transpose (onnxruntime-genai's tied embedding) is read by its
    # Transpose's consumers.
    for out, src in transposed.items():
        consumers.setdefault(src, set()).update(consumers.get(out, set()))
        consumers[src].discard("Transpose")
    weights, tied = [], None
    for init in model.graph.initializer:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
        elements = int(np.prod(init.dims, dtype=np.int64))
        if init.name in scales:
            weights.append(Weight(init.name, 0, 0, scale_bytes=elements * itemsize))
            continue
        ops = consumers.get(init.name, set())
        lookup = ops == {"Gather"} and len(init.dims) == 2
        if "Gather" in ops and len(ops) > 1:
            tied = init.name
        weights.append(Weight(init.name, nbits.get(init.name, elements), elements * itemsize,
                              lookup_rows=int(init.dims[0]) if lookup else 0))
    return WeightBytes(tuple(weights), tied_lm_head=tied)


__all__ = ["ensure_export", "initializer_weights", "input_names", "output_names", "kv_shape"]
