"""torch.compile of the decode step with a static KV cache (gpt-fast style).

Only single-token decode steps go through the compiled function: with a static cache every
decode step has the same shapes ([B, 1] ids, [B, H, max_len, D] cache), so one graph serves the
whole answer. Prefill (a different length per workload) stays eager, as in gpt-fast.
Only the first decode shape (the workload's) is compiled: a later decode shape runs the same
step eagerly instead of paying a second compilation (tens of seconds on a CPU); the row notes
it. (The fidelity pass scores whole sequences, prefill-shaped, so it always runs eagerly.)

We own the compile call (transformers only auto-compiles its own `generate`, and on CUDA only).
Compilation happens on the first call of each new shape, i.e. during the untimed warm-up (the
plugin asks for warm-up runs of full length, so the timed runs meet no new shape); the wall
time of those first calls is reported in `compile_s`, outside TPOT.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from infer_opt.core.errors import UserError
from infer_opt.core.plugin import Plugin, Settings


def compile_decode_step(mode: str | None, by: str) -> Callable[[Callable[..., Any], Settings], Callable[..., Any]]:
    def wrap(step: Callable[..., Any], settings: Settings) -> Callable[..., Any]:
        import torch

        compiled = torch.compile(step, mode=mode, fullgraph=False, dynamic=False)
        seen: list[tuple[int, int]] = []  # the one compiled shape: (batch, cache length)
        settings.metrics.setdefault("compile_s", 0.0)

        def run(input_ids: torch.Tensor, position_ids: torch.Tensor, cache: Any) -> torch.Tensor:
            if input_ids.shape[1] != 1 or cache is None:
                return step(input_ids, position_ids, cache)  # prefill: eager
            shape = (input_ids.shape[0], int(getattr(cache, "max_cache_len", 0) or 0))
            if shape in seen:
                return compiled(input_ids, position_ids, cache)
            if seen:  # another shape after the workload's: eager, no second compilation
                note = f"{by}: decode shapes other than the workload's run eagerly (fidelity pass)"
                if note not in settings.notes:
                    settings.notes.append(note)
                return step(input_ids, position_ids, cache)
            # First call at this shape: dynamo traces, inductor compiles, then it runs once.
            t0 = time.perf_counter()
            out = compiled(input_ids, position_ids, cache)
            if out.is_cuda:
                torch.cuda.synchronize()
            settings.metrics["compile_s"] += time.perf_counter() - t0
            seen.append(shape)
            return out

        return run

    return wrap


class Compile(Plugin):
    name = "compile"
    summary = "torch.compile (inductor) of the decode step over a static KV cache"
    mode: ClassVar[str | None] = None

    def apply(self, settings: Settings) -> None:
        if "compile_mode" in settings.options:
            raise UserError("variant", f"'{self.name}' and another compile plugin both compile "
                                       "the decode step; keep one")
        settings.options["compile_mode"] = self.mode or "default"
        settings.set("kv_cache", "static", by=self.name)
        # Warm-up must meet the timed runs' shapes, or the timed runs would compile.
        settings.options["warmup_full_length"] = True
        settings.step_wrappers.append(compile_decode_step(self.mode, self.name))


class CudaGraphs(Compile):
    name = "cuda-graphs"
    summary = "torch.compile mode='reduce-overhead': decode step replayed as a CUDA graph"
    requires_cuda = True
    mode = "reduce-overhead"
