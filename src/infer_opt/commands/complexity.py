from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _lengths(text: str, name: str = "lengths", optional: bool = False) -> list[int]:
    from infer_opt.core.errors import UserError

    if optional and not text.strip():
        return []
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(name, f"expected comma-separated integers > 0, got {text!r}") from None
    if len(set(values)) < 2 or any(v <= 0 for v in values):
        raise UserError(name, f"need at least two distinct integers > 0, got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="model name (default: smollm2-135m)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--attn-lengths", default="256,512,1024,2048",
                   help="sequence lengths for the attention op alone")
    # From 64 tokens on, a no-cache step is dominated by the work on the growing sequence rather
    # than by the fixed cost of reading the weights (SmolLM2-135M, fp32, CPU), so the fit sees
    # the asymptote: about 4 minutes on 2 idle cores.
    p.add_argument("--gen-lengths", default="64,128,256",
                   help="new-token counts for generation without KV cache")
    p.add_argument("--cached-lengths", default="64,128,256",
                   help="new-token counts for generation with a KV cache")
    p.add_argument("--prompt-tokens", type=int, default=4, help="prompt length for generation")
    p.add_argument("--repeats", type=int, default=1,
                   help="timed generation runs per point, after a warm-up (median kept)")
    p.add_argument("--attn-repeats", type=int, default=5,
                   help="timed runs per attention point (median kept)")
    # Long context (SmolLM2-135M's context is 8192): `make complexity-long` sets both.
    p.add_argument("--prefill-lengths", default="",
                   help="prompt lengths for prefill time vs length, e.g. 512,1024,2048,4096,8192 "
                        "(empty: skipped)")
    p.add_argument("--depths", default="",
                   help="context depths for decode step time and KV bytes vs depth, e.g. "
                        "512,1024,2048,4096,8160 (empty: skipped)")
    p.add_argument("--depth-new-tokens", type=int, default=16,
                   help="decode steps timed at each depth (median step kept)")
    p.add_argument("--out", default="results", help="directory for the CSV, report and plot")


def main(args: argparse.Namespace) -> int:
    import csv
    import datetime as dt

    from infer_opt.core.errors import UserError
    from infer_opt.tools import complexity as cx

    if args.repeats < 1 or args.attn_repeats < 1:
        raise UserError("repeats", f"--repeats and --attn-repeats must be integers >= 1, got "
                                   f"{args.repeats} and {args.attn_repeats}")
    if args.prompt_tokens < 1:
        raise UserError("prompt-tokens", f"must be an integer >= 1, got {args.prompt_tokens}")
    attn, gen, cached = (_lengths(args.attn_lengths), _lengths(args.gen_lengths),
                         _lengths(args.cached_lengths))
    prefill = _lengths(args.prefill_lengths, "prefill-lengths", optional=True)
    depths = _lengths(args.depths, "depths", optional=True)
    if args.depth_new_tokens < 2:
        raise UserError("depth-new-tokens", f"must be an integer >= 2, got {args.depth_new_tokens}")
    from infer_opt.core.models import resolve

    context = resolve(args.model).max_context
    longest = max([0, *prefill, *(d + 1 + args.depth_new_tokens for d in depths)])
    if longest > context:
        raise UserError("depths" if depths and longest != max(prefill, default=0)
                        else "prefill-lengths",
                        f"{longest} tokens (longest prefill, or depth + 1 + depth-new-tokens) "
                        f"exceed the model's context of {context}")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    points = cx.measure(args.model, args.device, args.threads, attn, gen, cached,
                        args.prompt_tokens, args.repeats, args.attn_repeats, log,
                        prefill, depths, args.depth_new_tokens)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S") + "-complexity"
    csv_path = out / f"{stem}.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["series", "n", "time_ms", "kv_bytes"])
        for p in points:
            if p.series == "kv-bytes-at-depth":
                w.writerow([p.series, p.n, "", f"{p.seconds:.0f}"])
            else:
                w.writerow([p.series, p.n, f"{p.seconds * 1e3:.6g}", ""])
    png = out / f"{stem}.png"
    cx.plot(points, png)
    header = (f"model {args.model}, device {args.device}, {args.threads} threads, fp32, batch 1, "
              f"prompt {args.prompt_tokens} tokens; generation: median of {args.repeats} timed run(s) "
              f"per point after a warm-up; attention: median of {args.attn_repeats}.")
    text = cx.render(points, header, png.name)
    (out / f"{stem}.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"points: {csv_path}\nreport: {out / (stem + '.md')}\nplot:   {png}", file=sys.stderr)
    return 0
