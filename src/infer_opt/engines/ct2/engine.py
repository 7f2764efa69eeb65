"""CTranslate2 engine: the model converted to CTranslate2, generating with its own decode loop.

Real code against ctranslate2 (tested with 4.8.5; see README). CTranslate2 has no public call
that appends one token to a sequence's KV cache: its decode loop runs inside the library. So,
like vLLM, this engine has no step API (`step_api = False`) and implements `generate`: the B
token-id prompts go to `Generator.generate_tokens` as token strings of the converted vocabulary,
greedy (`sampling_topk=1`), with `min_length = max_length = new_tokens` (no early stop at EOS,
the same work as every other row). Stamps come from its iterator: token i of the batch is
stamped when the iterator has handed over token i of every row (the meaning of the decode
loop's stamps), so the hand-over from CTranslate2's generation thread to Python is inside
them. Workloads that need the suite's decode loop (online serving, speculative decoding) are
refused on it up front.

Fidelity: `score` is `Generator.forward_batch` on the token ids (one teacher-forced forward
without a cache, in the same compute type), full logits.

Weights (`Settings.weights`, core/weights.py): compute_type float32, or int8 when the
int8-dynamic plugin asks for 8-bit weights with int8 activations (`ct2+int8-dynamic`):
CTranslate2's int8 keeps each weight row in int8 with a float32 scale and
quantizes activations at run time, int8 x int8 GEMMs; the rest (norms, attention, KV cache)
stays float32. Threads: the suite's `threads` as intra_threads, one inter-op thread.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch

from infer_opt.core.models import ModelRef
from infer_opt.core.settings import Settings
from infer_opt.core.timing import Clock
from infer_opt.core.weights import WeightSupport
from infer_opt.engines.base import BatchRun, Engine, ModelFacts
from infer_opt.engines.ct2 import export as ct2_export


class CT2Engine(Engine):
    name = "ct2"
    summary = "CTranslate2 (converted model, its own greedy loop; no step API)"
    requires_packages = ("ctranslate2",)
    environment = ".venv-ct2"
    dtypes = ("float32",)
    attn_implementations = ()  # CTranslate2's own attention
    kv_caches = ("dynamic",)
    honours = frozenset()  # its own loop: no step to wrap, no context around it
    step_api = False
    row_ops = False
    weight_quant = (WeightSupport(8, activations="int8", groups=(), symmetric=(),
                                  how="CTranslate2 compute_type int8, weights per row"),)

    @classmethod
    def defaults(cls, settings: Settings) -> None:
        settings.set("attn_implementation", "ct2", by=cls.name)
        settings.set("kv_cache", "dynamic", by=cls.name)

    def __init__(self, ref: ModelRef, settings: Settings) -> None:
        import ctranslate2

        self.settings = settings
        compute = "float32" if settings.weights is None else "int8"
        threads = torch.get_num_threads()  # the suite's `threads`
        t0 = time.perf_counter()
        path, convert_s = ct2_export.ensure_model(ref.path, compute)
        self.generator = ctranslate2.Generator(str(path), device="cpu", compute_type=compute,
                                               intra_threads=threads, inter_threads=1)
        load_s = time.perf_counter() - t0
        self.tokens: list[str] = json.loads((path / "vocabulary.json").read_text())
        weights, per_dtype = ct2_export.model_bin_weights(path / "model.bin")

        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(ref.path, trust_remote_code=False)
        heads = int(cfg.num_attention_heads)
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        self.facts = ModelFacts(
            weight_bytes=sum(w.stored_bytes for w in weights.weights),
            kv_bytes_per_token=2 * int(cfg.num_hidden_layers) * kv_heads * head_dim * 4,
            load_s=load_s, weights=weights, kv_element_bytes=4,
            query_groups=heads // kv_heads, extra={"ct2_model": str(path)})
        stored = ", ".join(f"{d} {b / 2**20:.1f} MiB" for d, b in sorted(per_dtype.items()))
        note = (f"ctranslate2 {ctranslate2.__version__} CPU, compute_type {compute}, "
                f"{threads} threads; weights stored {stored}; its own greedy loop "
                "(generate_tokens), stamps from its iterator")
        if convert_s:
            note += f"; converted in {convert_s:.1f} s (in load_s)"
        settings.notes.append(note)
        self.last_generated = 0

    def context(self) -> Any:
        from contextlib import nullcontext

        return nullcontext()  # no torch in the loop

    def generate(self, prompts: torch.Tensor, new_tokens: int, clock: Clock) -> BatchRun:
        batch = prompts.shape[0]
        start = [[self.tokens[i] for i in row] for row in prompts.tolist()]
        out: list[list[int]] = [[] for _ in range(batch)]
        ready = [0] * (new_tokens + 1)  # ready[i]: rows that have their token i
        clock.start()
        for step in self.generator.generate_tokens(
                start, max_length=new_tokens, min_length=new_tokens, sampling_topk=1):
            row = out[step.batch_id]
            if len(row) == new_tokens:
                continue
            row.append(int(step.token_id))
            i = len(row) - 1
            ready[i] += 1
            if ready[i] == batch:  # token i of every row is here
                clock.stamp()
        stamps = clock.finish()
        lengths = {len(r) for r in out}
        if lengths != {new_tokens} or len(stamps) != new_tokens:
            raise RuntimeError(f"CTranslate2 generated {sorted(lengths)} tokens per row, "
                               f"not {new_tokens}")
        return BatchRun(stamps_s=stamps, tokens=torch.tensor(out, dtype=torch.long))

    def score(self, ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits of every position (forward_batch, no cache): [B, T, V]."""
        logits = self.generator.forward_batch(ids.tolist())
        return torch.from_numpy(np.array(logits, dtype=np.float32))
