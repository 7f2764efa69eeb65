"""The ONNX Runtime engine: the exported decoder graph, driven by the suite's decode loop.

The model is exported once (see engines/onnx/export.py) and cached; each cell opens an
InferenceSession on it and the one decode loop (engines/decode.py) drives its step, so
TTFT/TPOT/ITL are stamped exactly where the torch engine stamps them, and plugins' step
wrappers and contexts apply here too. The KV cache is part of the graph (past in, present out),
so every ORT row has kv_cache = dynamic; the graph's attention_mask input lets padded rows
(online serving) run on it as well.

Settings read here: device, dtype (float32 or float16), attn_implementation (used at export),
weights (core/weights.py: int8 weights with int8 activations are quantize_dynamic's quantized
copy of the export, set by int8-dynamic; 4- or 8-bit weight-only a MatMulNBits copy cached
beside it, engines/onnx/nbits.py, set by int4-wo and int8-wo) and the engine option `providers`
(explicit provider list; default: TensorRT then CUDA on a CUDA device when present, else CPU). The provider that ORT actually put first goes into the row's notes.

Inputs and outputs go through IO binding: present key/values stay where ORT put them (host or
GPU memory) and are bound as the next step's past, so a decode step copies only the new token
in and the [B, V] logits out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from infer_opt.core.errors import UserError
from infer_opt.core.models import ModelRef
from infer_opt.core.params import Param
from infer_opt.core.settings import Settings
from infer_opt.core.weights import WeightSupport
from infer_opt.engines.base import Engine, ModelFacts, StepInput
from infer_opt.engines.onnx import export as onnx_export
from infer_opt.engines.onnx.nbits import MATMUL_NBITS, ensure_variant, weight_spec

NP_DTYPES = {"float32": np.float32, "float16": np.float16}


def choose_providers(device: str, available: list[str], requested: list[str] | None) -> list[str]:
    """Provider list for InferenceSession, most preferred first."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise UserError("engine option providers",
                            f"{missing[0]} is not available; available: {', '.join(available)}")
        return list(requested)
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise UserError("device", "onnxruntime here has no CUDAExecutionProvider "
                            "(install onnxruntime-gpu instead of onnxruntime)")
        preferred = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
        return [p for p in preferred if p in available] + ["CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _provider_options(providers: list[str], cache_dir: str) -> list[dict[str, Any]]:
    opts: list[dict[str, Any]] = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            # TensorRT builds engines per input-shape profile; keep them next to the export.
            opts.append({"trt_engine_cache_enable": True, "trt_engine_cache_path": cache_dir})
        else:
            opts.append({})
    return opts


@dataclass
class OrtCache:
    """The graph's past key/values for B rows: 2 * layers OrtValues [B, kv_heads, L, head_dim]
    where ORT put them (host or GPU memory); each step binds them as past and keeps the
    present outputs, without copies."""

    past: list[Any]


class OnnxRuntimeEngine(Engine):
    name = "ort"
    summary = "ONNX Runtime: the model exported to one ONNX graph with past key/values"
    requires_packages = ("onnxruntime", "onnx", "onnxscript")
    dtypes = tuple(NP_DTYPES)
    kv_caches = ("dynamic",)
    weight_quant = (
        *MATMUL_NBITS,
        WeightSupport(8, activations="int8", groups=(), symmetric=(),
                      how="quantize_dynamic, int8 weights per channel"),
    )
    options = (
        Param("providers", list, None, "execution providers, most preferred first "
              "(default: TensorRT, CUDA on a CUDA device, else CPU)"),
    )

    @classmethod
    def defaults(cls, settings: Settings) -> None:
        # The exported graph takes past and returns present key/values: a KV cache is built in.
        settings.set("kv_cache", "dynamic", by=cls.name)

    @classmethod
    def unavailable_reason(cls, settings: Settings) -> str | None:
        reason = super().unavailable_reason(settings)
        if reason is None and settings.device.startswith("cuda"):
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                return "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)"
        return reason

    def __init__(self, ref: ModelRef, settings: Settings) -> None:
        import onnxruntime as ort

        self.settings = settings
        self.device = settings.device
        self._ort = ort
        int8 = settings.weights is not None and settings.weights.activations == "int8"
        spec = weight_spec(settings, ref.name)
        t0 = time.perf_counter()
        path, info = onnx_export.ensure_export(ref.path, settings.dtype,
                                               settings.attn_implementation, int8)
        path, rewrite_s = ensure_variant(path, spec, torch.get_num_threads())
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(ref.path, trust_remote_code=False)
        self.layers = int(config.num_hidden_layers)
        self.kv_heads, self.head_dim = onnx_export.kv_shape(config)
        self.np_dtype = NP_DTYPES[settings.dtype]

        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()  # the suite's `threads`
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = choose_providers(self.device, ort.get_available_providers(),
                                     settings.options.get("providers"))
        self.session = ort.InferenceSession(str(path), so, providers=providers,
                                            provider_options=_provider_options(providers, info["cache_dir"]))
        load_s = time.perf_counter() - t0
        used = self.session.get_providers()
        self.provider = used[0]
        # Where bound outputs live: GPU memory for CUDA/TensorRT, host memory otherwise.
        self._ort_device = "cuda" if self.provider != "CPUExecutionProvider" else "cpu"
        self.output_names = onnx_export.output_names(self.layers)

        elem = np.dtype(self.np_dtype).itemsize
        kv_per_token = 2 * self.layers * self.kv_heads * self.head_dim * elem
        weights = onnx_export.initializer_weights(path)
        self.facts = ModelFacts(weight_bytes=sum(w.stored_bytes for w in weights.weights),
                                kv_bytes_per_token=kv_per_token, load_s=load_s, weights=weights,
                                kv_element_bytes=elem,
                                query_groups=config.num_attention_heads // self.kv_heads,
                                extra={"provider": self.provider, "onnx_path": str(path), **info})
        note = f"onnxruntime {ort.__version__} {self.provider}, {so.intra_op_num_threads} threads"
        if info["export_s"]:
            note += f", exported in {info['export_s']:.1f} s (in load_s)"
        if info["quantize_s"]:
            note += f", int8 quantized in {info['quantize_s']:.1f} s (in load_s)"
        if info["int8_reduce_range"]:
            note += (", int8 weights in 7 bits (reduce_range: this CPU has no VNNI, and ORT's "
                     "AVX2/AVX-512 int8 kernels saturate on full-range weights)")
        if spec.tag() is not None:
            note += f"; {spec.describe()}"
            if rewrite_s:
                note += f", rewritten in {rewrite_s:.1f} s (in load_s)"
        settings.notes.append(note)
        self.step = self.wrap_step(self._forward)  # type: ignore[method-assign]

    # --- helpers -------------------------------------------------------------------------
    def _value(self, array: np.ndarray) -> Any:
        return self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self._ort_device, 0)

    def _forward(self, inp: StepInput) -> torch.Tensor:
        """The raw step: T new tokens on top of the cache's past -> logits [B, K, V]."""
        assert inp.cache is not None, "the ONNX graph always runs with its KV cache"
        ids = inp.input_ids.cpu().numpy()
        batch, length = ids.shape
        past_len = int(inp.cache.past[0].shape()[2])
        if inp.attention_mask is None:
            mask = np.ones((batch, past_len + length), np.int64)
        else:
            mask = inp.attention_mask.cpu().numpy().astype(np.int64)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input("input_ids", self._value(ids.astype(np.int64)))
        binding.bind_ortvalue_input("attention_mask", self._value(mask))
        binding.bind_ortvalue_input("position_ids",
                                    self._value(inp.position_ids.cpu().numpy().astype(np.int64)))
        keep = np.arange(length - inp.logits_to_keep, length, dtype=np.int64)
        binding.bind_ortvalue_input("logits_index", self._value(keep))
        for i in range(self.layers):
            binding.bind_ortvalue_input(f"past.{i}.key", inp.cache.past[2 * i])
            binding.bind_ortvalue_input(f"past.{i}.value", inp.cache.past[2 * i + 1])
        for name in self.output_names:
            binding.bind_output(name, self._ort_device)
        self.session.run_with_iobinding(binding)
        outs = binding.get_outputs()
        inp.cache.past = list(outs[1:])  # present.* -> next step's past.*, no copy
        return torch.from_numpy(outs[0].numpy())  # [B, K, V] on the host (a sync on GPU)

    # --- step API ------------------------------------------------------------------------
    def new_cache(self, batch_size: int, max_len: int) -> OrtCache:
        empty = np.zeros((batch_size, self.kv_heads, 0, self.head_dim), self.np_dtype)
        return OrtCache([self._value(empty) for _ in range(2 * self.layers)])

    def kv(self, cache: OrtCache, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        arrays = [torch.from_numpy(v.numpy()[:, :, :length]) for v in cache.past]
        return list(zip(arrays[0::2], arrays[1::2]))

    def cache_from_kv(self, kv: list[tuple[torch.Tensor, torch.Tensor]], max_len: int) -> OrtCache:
        past = []
        for k, v in kv:
            past += [self._value(k.cpu().numpy().astype(self.np_dtype)),
                     self._value(v.cpu().numpy().astype(self.np_dtype))]
        return OrtCache(past)

    # --- fidelity ------------------------------------------------------------------------
    def score(self, ids: torch.Tensor) -> torch.Tensor:
        batch, length = ids.shape
        positions = torch.arange(length).expand(batch, length)
        with self.context():
            logits = self._forward(StepInput(ids, positions, None, self.new_cache(batch, length),
                                             length))
        return logits.float()  # [B, T, V]
