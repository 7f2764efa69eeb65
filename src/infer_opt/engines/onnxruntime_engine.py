"""ONNX Runtime backend: the exported decoder graph, driven by the suite's own decode loop.

The model is exported once (see onnx_export.py) and cached; each cell opens an
InferenceSession on it and reuses `stepwise_generate`, so TTFT/TPOT/ITL are stamped exactly
where the torch backend stamps them. The KV cache is part of the graph (past in, present out),
so every ORT row has kv_cache = dynamic.

Settings read here: device, dtype (float32 or float16), attn_implementation (used at export),
options["ort_int8"] (dynamic int8 model), options["ort_providers"] (explicit provider list;
default: TensorRT then CUDA on a CUDA device when present, else CPU). The provider that ORT
actually put first goes into the row's notes.

Inputs and outputs go through IO binding: present key/values stay where ORT put them (host or
GPU memory) and are bound as the next step's past, so a decode step copies only the new token
in and the [B, V] logits out.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch

from infer_opt.core.errors import UserError
from infer_opt.core.models import ModelRef
from infer_opt.core.plugin import Settings
from infer_opt.core.timing import Clock
from infer_opt.engines import onnx_export
from infer_opt.engines.base import BatchRun, ModelFacts, stepwise_generate

NP_DTYPES = {"float32": np.float32, "float16": np.float16}


def choose_providers(device: str, available: list[str], requested: list[str] | None) -> list[str]:
    """Provider list for InferenceSession, most preferred first."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise UserError("options.ort_providers",
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


class OnnxRuntimeBackend:
    def __init__(self, ref: ModelRef, settings: Settings) -> None:
        import onnxruntime as ort

        if settings.dtype not in NP_DTYPES:
            raise UserError("dtype", f"the onnxruntime backend runs float32 or float16, "
                            f"not {settings.dtype}")
        self.settings = settings
        self.device = settings.device
        self._ort = ort
        int8 = bool(settings.options.get("ort_int8", False))
        t0 = time.perf_counter()
        path, info = onnx_export.ensure_export(ref.path, settings.dtype,
                                               settings.attn_implementation, int8)
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(ref.path)
        self.layers = int(config.num_hidden_layers)
        self.kv_heads, self.head_dim = onnx_export.kv_shape(config)
        self.np_dtype = NP_DTYPES[settings.dtype]

        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()  # the suite's `threads`
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = choose_providers(self.device, ort.get_available_providers(),
                                     settings.options.get("ort_providers"))
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
        self.facts = ModelFacts(weight_bytes=onnx_export.initializer_bytes(path),
                                kv_bytes_per_token=kv_per_token, load_s=load_s,
                                extra={"provider": self.provider, "onnx_path": str(path), **info})
        note = f"onnxruntime {ort.__version__} {self.provider}, {so.intra_op_num_threads} threads"
        if info["export_s"]:
            note += f", exported in {info['export_s']:.1f} s (in load_s)"
        if info["quantize_s"]:
            note += f", int8 quantized in {info['quantize_s']:.1f} s (in load_s)"
        if info["int8_reduce_range"]:
            note += (", int8 weights in 7 bits (reduce_range: this CPU has no VNNI, and ORT's "
                     "AVX2/AVX-512 int8 kernels saturate on full-range weights)")
        settings.notes.append(note)
        self._past: list[Any] = []
        self._pos = 0
        self._batch = 0

    # --- helpers -------------------------------------------------------------------------
    def _value(self, array: np.ndarray) -> Any:
        return self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self._ort_device, 0)

    def _run(self, ids: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """ids [B, T] at positions pos..pos+T-1 on top of self._past -> logits [B, K, V]."""
        batch, length = ids.shape
        binding = self.session.io_binding()
        total = self._pos + length
        binding.bind_ortvalue_input("input_ids", self._value(ids.astype(np.int64)))
        binding.bind_ortvalue_input("attention_mask", self._value(np.ones((batch, total), np.int64)))
        positions = np.broadcast_to(np.arange(self._pos, total, dtype=np.int64), (batch, length))
        binding.bind_ortvalue_input("position_ids", self._value(positions))
        binding.bind_ortvalue_input("logits_index", self._value(keep.astype(np.int64)))
        for i in range(self.layers):
            binding.bind_ortvalue_input(f"past.{i}.key", self._past[2 * i])
            binding.bind_ortvalue_input(f"past.{i}.value", self._past[2 * i + 1])
        for name in self.output_names:
            binding.bind_output(name, self._ort_device)
        self.session.run_with_iobinding(binding)
        outs = binding.get_outputs()
        self._past = list(outs[1:])  # present.* -> next step's past.*, no copy
        self._pos = total
        return outs[0].numpy()  # [B, K, V] on the host (a sync on GPU)

    def _empty_past(self, batch: int) -> list[Any]:
        empty = np.zeros((batch, self.kv_heads, 0, self.head_dim), self.np_dtype)
        return [self._value(empty) for _ in range(2 * self.layers)]

    # --- StepSession ---------------------------------------------------------------------
    def begin(self, batch_size: int, max_len: int) -> None:
        self._batch = batch_size
        self._pos = 0
        self._past = self._empty_past(batch_size)

    def prefill(self, prompts: torch.Tensor) -> torch.Tensor:
        ids = prompts.cpu().numpy()  # [B, P]
        logits = self._run(ids, np.array([ids.shape[1] - 1]))  # [B, 1, V]
        return torch.from_numpy(logits[:, 0, :])

    def decode(self, next_ids: torch.Tensor) -> torch.Tensor:
        logits = self._run(next_ids.cpu().numpy(), np.array([0]))  # [B, 1, V]
        return torch.from_numpy(logits[:, 0, :])

    # --- Backend -------------------------------------------------------------------------
    def context(self) -> AbstractContextManager[Any]:
        return torch.inference_mode()

    def score(self, ids: torch.Tensor) -> torch.Tensor:
        batch, length = ids.shape
        self.begin(batch, length)
        logits = self._run(ids.cpu().numpy(), np.arange(length))  # [B, T, V]
        self._past = []
        return torch.from_numpy(logits.astype(np.float32))

    def run_batch(self, prompts: torch.Tensor, new_tokens: int, clock: Clock) -> BatchRun:
        return stepwise_generate(self, prompts, new_tokens, clock)
