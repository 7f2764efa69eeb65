"""`infer-opt serve VARIANT`: the suite's own OpenAI-compatible server on one variant (a stack
of an engine with row operations), batching through a registered policy
(workloads/online/http_app.py). Any OpenAI-compatible client or benchmark can point at it."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("variant", help="the stack to serve, e.g. kv-cache+sdpa")
    p.add_argument("--policy", default="continuous",
                   help="batching policy (registered: sequential, dynamic, continuous, ...)")
    p.add_argument("--max-batch-size", type=int, default=8, help="rows decoded together")
    p.add_argument("--max-wait-ms", type=float, default=50.0, help="dynamic policy's wait")
    p.add_argument("--model", default=None, help="built-in model name or path (default: the "
                                                 "suite's default model)")
    p.add_argument("--served-model-name", default=None,
                   help="the name /v1/models reports and requests give (default: --model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=int, default=8000, help="port to bind")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--allow-download", action="store_true",
                   help="let a model given as a Hugging Face id be downloaded (default: offline)")


def main(args: argparse.Namespace) -> int:
    from infer_opt.core import registry
    from infer_opt.core.errors import UserError
    from infer_opt.core.models import DEFAULT_MODEL, load_tokenizer, resolve
    from infer_opt.core.stack import build_stack
    from infer_opt.run.plan import resolve_device

    policies = registry.names("policy")
    if args.policy not in policies:
        raise UserError("--policy", f"{args.policy!r} is not one of {', '.join(policies)}")
    if args.max_batch_size < 1:
        raise UserError("--max-batch-size", f"must be an integer >= 1, got {args.max_batch_size}")
    if args.max_wait_ms < 0:
        raise UserError("--max-wait-ms", f"must be a number >= 0, got {args.max_wait_ms}")
    if not 0 < args.port < 65536:
        raise UserError("--port", f"must be in 1..65535, got {args.port}")
    if args.threads < 0:
        raise UserError("--threads", f"must be an integer >= 0, got {args.threads}")
    _check_port_free(args.host, args.port)  # before the model loads, not after
    device = resolve_device(args.device)
    model = args.model or DEFAULT_MODEL
    stack = build_stack(args.variant, device, model)
    if not (stack.engine.step_api and stack.engine.row_ops):
        raise UserError("variant", f"engine {stack.engine.name} ({args.variant!r}) has no row "
                                   "operations; the server's policies need an engine with them "
                                   "(e.g. torch)")
    if stack.unavailable:
        raise UserError("variant", f"{args.variant!r} cannot run here: {stack.unavailable}")
    if stack.settings.decoder is not None:
        raise UserError("variant", f"{args.variant!r} replaces whole-sequence generation "
                                   "(speculative decoding); the server decodes rows step by step")
    import torch
    import uvicorn

    from infer_opt.workloads.online.http_app import PolicyOptions, build_app

    if args.threads:
        torch.set_num_threads(args.threads)
    ref = resolve(model)
    engine = stack.engine(ref, stack.settings)
    tokenizer = load_tokenizer(ref)
    opts = PolicyOptions(max_batch_size=1 if args.policy == "sequential" else args.max_batch_size,
                         max_wait_ms=args.max_wait_ms)
    app = build_app(engine, tokenizer, registry.load("policy", args.policy), opts,
                    args.served_model_name or model, ref.max_context)
    print(f"infer-opt serve: {args.variant} ({args.policy}) on http://{args.host}:{args.port}/v1",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _check_port_free(host: str, port: int) -> None:
    """One line, exit 2, when the address is taken or cannot be bound (uvicorn would say it
    only after the model has loaded, in a log line and exit code of its own)."""
    import socket

    from infer_opt.core.errors import UserError

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.bind((host, port))
    except OSError as exc:
        raise UserError("--port", f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                                  "choose a free port") from None
