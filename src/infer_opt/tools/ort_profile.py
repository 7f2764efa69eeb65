"""Where a decode step's time goes in an ONNX Runtime variant: per-node profile of decode steps.

    python -m infer_opt.tools.ort_profile "ort-genai+gguf-q4" --prompt 128 --tokens 128

Loads the variant's engine exactly as a cell does (ort or ort-genai), swaps its session for one
with onnxruntime's profiler on (same graph, same session options), generates `--tokens` greedy
tokens after a `--prompt`-token prompt through the suite's decode loop, and reads the profile:
per op type (and the top nodes), microseconds per decode step summed over the step's nodes,
against the wall time per step. The gap between the two is what runs outside the kernels
(session.run overhead, IO binding, the Python loop). The prefill step is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any


def node_kind(name: str, op: str) -> str:
    """An op type, split where one type does different jobs (GGUF min terms, lm_head)."""
    if "lm_head" in name:
        return f"{op} (lm_head)"
    if name.endswith(("_min", "_addmin", "_sums")) or "BlockSum" in name or "BlockReshape" in name:
        return f"{op} (GGUF min term)"
    return op


def profile(variant: str, prompt_len: int, tokens: int, threads: int,
            model: str = "smollm2-135m") -> dict[str, Any]:
    import torch

    from infer_opt.core.models import resolve
    from infer_opt.core.stack import build_stack
    from infer_opt.core.timing import HostClock
    from infer_opt.engines.decode import generate

    torch.set_num_threads(threads)
    stack = build_stack(variant, "cpu", model)
    if stack.unavailable:
        raise SystemExit(f"{variant}: {stack.unavailable}")
    ref = resolve(model)
    engine = stack.engine(ref, stack.settings)
    if not hasattr(engine, "session"):
        raise SystemExit(f"{variant}: engine {stack.engine.name} has no onnxruntime session")
    import onnxruntime as ort

    prompts = torch.randint(3, ref.vocab_size, (1, prompt_len),
                            generator=torch.Generator().manual_seed(0))
    with engine.context():
        generate(engine, prompts, tokens, HostClock())  # warm-up, unprofiled
        run = generate(engine, prompts, tokens, HostClock())
    wall_step_us = (run.e2e_s - run.ttft_s) / (tokens - 1) * 1e6
    path = engine.facts.extra["onnx_path"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="infer-opt-prof-"), "p")
    engine.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    with engine.context():
        generate(engine, prompts, tokens, HostClock())
    trace = json.loads(Path(engine.session.end_profiling()).read_text())
    return summarize(trace, tokens, wall_step_us)


def summarize(trace: list[dict[str, Any]], tokens: int, wall_step_us: float) -> dict[str, Any]:
    """Per op kind and per node: microseconds per decode step (runs after the first)."""
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    runs.sort(key=lambda e: e["ts"])
    decode = runs[1:]  # the first run is the prefill
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in decode]
    by_kind: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    j = 0
    nodes = sorted((e for e in trace if e.get("cat") == "Node"
                    and e.get("name", "").endswith("_kernel_time")), key=lambda e: e["ts"])
    for e in nodes:
        while j < len(spans) and e["ts"] > spans[j][1]:
            j += 1
        if j == len(spans) or e["ts"] < spans[j][0]:
            continue
        name = re.sub(r"_kernel_time$", "", e["name"])
        op = e.get("args", {}).get("op_name", "?")
        kind = node_kind(name, op)
        by_kind[kind] += e["dur"]
        by_node[name] += e["dur"]
        count[kind] += 1
    steps = max(len(decode), 1)
    run_us = sum(e["dur"] for e in decode) / steps
    kernels_us = sum(by_kind.values()) / steps
    return {
        "decode_steps": len(decode), "wall_us_per_step": wall_step_us,
        "session_run_us_per_step": run_us, "kernels_us_per_step": kernels_us,
        "nodes_per_step": sum(count.values()) / steps,
        "by_kind_us_per_step": {k: (v / steps, count[k] / steps) for k, v in
                                sorted(by_kind.items(), key=lambda x: -x[1])},
        "top_nodes_us_per_step": {k: v / steps for k, v in
                                  sorted(by_node.items(), key=lambda x: -x[1])[:12]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infer_opt.tools.ort_profile")
    parser.add_argument("variant")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    s = profile(args.variant, args.prompt, args.tokens, args.threads, args.model)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"{args.variant}: {s['decode_steps']} decode steps, {args.threads} threads "
          f"({time.perf_counter() - t0:.0f} s)")
    print(f"  wall time per step (unprofiled run): {s['wall_us_per_step']:8.0f} us")
    print(f"  session.run per step (profiled):     {s['session_run_us_per_step']:8.0f} us")
    print(f"  sum of node kernels per step:         {s['kernels_us_per_step']:8.0f} us "
          f"({s['nodes_per_step']:.0f} nodes)")
    print("  per op kind: us/step  (nodes/step)  share of kernel time")
    for kind, (us, n) in s["by_kind_us_per_step"].items():
        print(f"    {kind:42s} {us:8.0f}  ({n:4.0f})  {100 * us / s['kernels_us_per_step']:5.1f}%")
    print("  top nodes: us/step")
    for name, us in s["top_nodes_us_per_step"].items():
        print(f"    {name:60s} {us:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
