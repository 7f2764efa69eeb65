"""torch.compile of the decode step with a static KV cache (gpt-fast style).

Only single-token decode steps go through the compiled function: with a static cache every
decode step has the same shapes ([B, 1] ids, [B, H, max_len, D] cache), so one graph serves the
whole answer. Prefill (a different length per workload), speculative verify steps and padded
serving rows stay eager, as in gpt-fast. Each new decode shape (batch size, cache length) is
compiled on its first call, which the full-length warm-up of each workload makes; its time goes
to `compile_s` of that workload's row. (The fidelity pass scores whole sequences,
prefill-shaped, so it always runs eagerly.)

We own the compile call (transformers only auto-compiles its own `generate`, and on CUDA only).
Compilation happens on the first call of each new shape, i.e. during the untimed warm-up (the
plugin asks for warm-up runs of full length, so the timed runs meet no new shape); the wall
time of those first calls is reported in `compile_s`, outside TPOT.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from infer_opt.core.params import Param
from infer_opt.core.plugin import Metric, Plugin
from infer_opt.core.settings import Settings

if TYPE_CHECKING:
    from infer_opt.engines.base import Step


def compile_decode_step(mode: str | None, by: str, options: dict[str, Any] | None = None
                        ) -> Callable[[Step, Settings], Step]:
    """`options`: inductor settings (torch.compile takes either a mode or options)."""

    def wrap(step: Step, settings: Settings) -> Step:
        import torch

        from infer_opt.engines.base import StepInput

        # Dynamo sees tensors and the cache object, not the StepInput dataclass.
        def decode_one(ids: torch.Tensor, pos: torch.Tensor, cache: Any) -> torch.Tensor:
            return step(StepInput(ids, pos, None, cache, 1))

        if options:
            compiled = torch.compile(decode_one, options=options, fullgraph=False,
                                     dynamic=False)
        else:
            compiled = torch.compile(decode_one, mode=mode, fullgraph=False, dynamic=False)
        seen: set[tuple[int, int]] = set()  # compiled shapes: (batch, cache length)

        def run(inp: StepInput) -> torch.Tensor:
            single = inp.input_ids.shape[1] == 1 and inp.logits_to_keep == 1
            if not single or inp.cache is None or inp.attention_mask is not None:
                return step(inp)  # prefill, verification, padded rows: eager
            shape = (inp.input_ids.shape[0], int(getattr(inp.cache, "max_cache_len", 0) or 0))
            if shape in seen:
                return compiled(inp.input_ids, inp.position_ids, inp.cache)
            # First call at this shape: dynamo traces, inductor compiles, then it runs once.
            # Warm-ups run at full length, so this happens there and never in a timed run.
            t0 = time.perf_counter()
            out = compiled(inp.input_ids, inp.position_ids, inp.cache)
            if out.is_cuda:
                torch.cuda.synchronize()
            settings.metrics["compile_s"] = (settings.metrics.get("compile_s", 0.0)
                                             + time.perf_counter() - t0)
            seen.add(shape)
            return out

        return run

    return wrap


class Compile(Plugin):
    name = "compile"
    summary = "torch.compile (inductor) of the decode step over a static KV cache"
    metrics = (Metric("compile_s", None, "wall time of the first call of the compiled decode "
                                         "shape (compilation + one step), paid in the warm-up"),)
    params: ClassVar[tuple[Param, ...]] = (
        Param("freezing", bool, False, "inductor freezing: weights become constants, folded "
              "and prepacked into the graph"),
        Param("max_autotune", bool, False, "inductor max-autotune: benchmark kernel choices "
              "while compiling (much longer compile)"),
    )
    mode: ClassVar[str | None] = None

    def apply(self, settings: Settings) -> None:
        settings.exclusive("decode step compilation", by=self.name)
        settings.set("kv_cache", "static", by=self.name)
        # Warm-up must meet the timed runs' shapes, or the timed runs would compile.
        settings.set("warmup_full_length", True, by=self.name)
        options = {k: True for k in ("freezing", "max_autotune") if self.values.get(k)}
        if options:
            settings.notes.append("inductor " + ", ".join(sorted(options)))
        settings.step_wrappers.append(compile_decode_step(self.mode, self.name, options))


class CudaGraphs(Compile):
    name = "cuda-graphs"
    summary = "torch.compile mode='reduce-overhead': decode step replayed as a CUDA graph"
    requires_cuda = True
    params: ClassVar[tuple[Param, ...]] = ()
    mode = "reduce-overhead"
