"""Fidelity at depth: where a quantized KV cache's error accumulates.

The row-level fidelity columns (run/fidelity.py) score 32-token prompts, where a KV cache holds
almost nothing. A depth row also gets kl_at_depth_mean / kl_at_depth_max / top1_at_depth_pct:
KL(reference || variant) of the next-token distributions along the reference's greedy
continuation of the row's own context and prompt, the variant reading its own KV cache at that
depth (restored from the context prefilled before the timed runs).

Reference: fp32, eager attention, a dynamic KV cache (`kv-cache`): the pinned baseline's math
(the cache changes only the reduction order, not what is computed) at a cost a depth of 8192
allows; the cache-less baseline would recompute the whole context per token. It is computed
once per model, device, threads, library versions and inputs, in a child process (so its model
never counts in the worker's memory figures), and kept on disk beside the fidelity reference.
Everything here runs after the timed runs and the memory readings.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from infer_opt.core.models import ModelRef, cache_root, locked
from infer_opt.engines.base import StepInput

RECIPE_VERSION = 1
REFERENCE_VARIANT = "kv-cache"
COLUMNS = ("kl_at_depth_mean", "kl_at_depth_max", "top1_at_depth_pct")


def logits_along(engine: Any, rows: Any, prompts: torch.Tensor,
                 tokens: torch.Tensor | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From rows holding a context: the prompt chunk [B, P], then n - 1 single steps feeding
    `tokens` [B, N] (teacher-forced) or, when None, the greedy choice. Returns (the tokens fed
    or chosen [B, N], the logits predicting each of them, float32 CPU [B, N, V])."""
    device = rows.last.device
    batch, chunk = prompts.shape
    pos = torch.arange(chunk, device=device).expand(batch, chunk) + rows.next_pos[:, None]
    out = [engine.step(StepInput(prompts.to(device), pos, None, rows.cache, 1)).float().cpu()]
    chosen = [out[-1][:, -1].argmax(dim=-1)]
    nxt = pos[:, -1:] + 1
    for i in range(n - 1):
        feed = (tokens[:, i] if tokens is not None else chosen[-1]).to(device)[:, None]
        out.append(engine.step(StepInput(feed, nxt, None, rows.cache, 1)).float().cpu())
        chosen.append(out[-1][:, -1].argmax(dim=-1))
        nxt = nxt + 1
    fed = tokens if tokens is not None else torch.stack(chosen, dim=1)
    return fed, torch.cat(out, dim=1)  # [B, N], [B, N, V]


def _cache_path(ref: ModelRef, device: str, threads: int, context: torch.Tensor,
                prompts: torch.Tensor, n: int) -> Path:
    import transformers

    from infer_opt.core.artifacts import weights_digest

    model = weights_digest(Path(ref.path)) if ref.local else ref.path
    text = torch.cat([context, prompts], dim=1)
    key = json.dumps({
        "recipe": RECIPE_VERSION, "model": model, "device": device, "threads": threads,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "depth": context.shape[1], "text": hashlib.sha256(text.numpy().tobytes()).hexdigest(),
        "shape": list(text.shape), "new_tokens": n}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "fidelity" / "depth" / f"{Path(ref.path).name}-{digest}.safetensors"


def compute_reference(model: dict[str, Any], device: str, threads: int, inputs: Path,
                      out: Path) -> None:
    """In the child process: the reference's greedy tokens and logits at depth, saved to out."""
    from safetensors.torch import load_file, save_file

    from infer_opt.core.stack import build_stack
    from infer_opt.engines.decode import prefill_context

    torch.set_num_threads(threads)
    t = load_file(str(inputs))
    ref = ModelRef(**model)
    stack = build_stack(REFERENCE_VARIANT, device, ref.name)
    engine = stack.engine(ref, stack.settings)
    n = int(t["new_tokens"][0])
    with engine.context():
        rows = prefill_context(engine, t["context"], t["context"].shape[1] + t["prompts"].shape[1]
                               + n)
        tokens, logits = logits_along(engine, rows, t["prompts"], None, n)
    tmp = out.with_suffix(".tmp")
    save_file({"tokens": tokens.contiguous(), "logits": logits.contiguous()}, str(tmp))
    tmp.replace(out)  # readers never see a half-written file


def load_reference(ref: ModelRef, device: str, threads: int, context: torch.Tensor,
                   prompts: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(greedy tokens [B, N], logits [B, N, V]) of the reference at this depth, from the disk
    cache or computed once (locked) in a child process of this interpreter."""
    from dataclasses import asdict

    from safetensors.torch import load_file, save_file

    path = _cache_path(ref, device, threads, context, prompts, n)
    if not path.is_file():
        with locked(path):
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                inputs = path.with_suffix(".inputs")
                save_file({"context": context.contiguous(), "prompts": prompts.contiguous(),
                           "new_tokens": torch.tensor([n])}, str(inputs))
                args = json.dumps([asdict(ref), device, threads, str(inputs), str(path)])
                proc = subprocess.run([sys.executable, "-m", "infer_opt.workloads.depth_fidelity", args],
                                      capture_output=True, text=True, timeout=3600)
                inputs.unlink(missing_ok=True)
                if proc.returncode != 0 or not path.is_file():
                    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                    raise RuntimeError(f"reference at depth failed: {last}")
    t = load_file(str(path))
    return t["tokens"], t["logits"]


def measure(session: Any, row: dict[str, Any]) -> None:
    """The at-depth columns of a depth row (a StaticSession after its timed runs)."""
    from infer_opt.core.divergence import compare_logits
    from infer_opt.core.divergence import g4 as _g

    ctx, w = session.ctx, session.w
    tokens, ref_logits = load_reference(ctx.ref, ctx.cell.device, ctx.cell.threads,
                                        session.context, session.prompts, w.new_tokens)
    engine = ctx.engine
    rows, restore = session._at_depth
    with engine.context():
        _, logits = logits_along(engine, replace(rows, cache=restore()), session.prompts,
                                 tokens, w.new_tokens)
    result = compare_logits(ref_logits, logits)
    row.update(kl_at_depth_mean=_g(result["kl_mean"]), kl_at_depth_max=_g(result["kl_max"]),
               top1_at_depth_pct=round(result["top1_agreement_pct"], 2))


if __name__ == "__main__":
    model, device, threads, inputs, out = json.loads(sys.argv[1])
    compute_reference(model, device, threads, Path(inputs), Path(out))
