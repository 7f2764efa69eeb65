"""`infer-opt distill`: train (or find in the cache) a layer-dropped student of a model."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from infer_opt.core.errors import UserError

if TYPE_CHECKING:  # not at run time: torch must load after main() sets OMP_WAIT_POLICY
    from infer_opt.compression.distill import Recipe
    from infer_opt.core.models import ModelRef

# The default recipe (compression/distill.py Recipe) finishes in <= 15 minutes on the 2-core
# development machine; see the report in its distill.json for the measured wall time.


def add_arguments(p: argparse.ArgumentParser) -> None:
    from infer_opt.core.models import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help=f"teacher (default: {DEFAULT_MODEL})")
    p.add_argument("--allow-download", action="store_true",
                   help="let a teacher given as a Hugging Face id be downloaded (default: offline)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--layers", type=int, default=None,
                       help="layers the student keeps (default: half of the teacher's)")
    which.add_argument("--keep-layers", default=None, metavar="I,J,...",
                       help="exact teacher layer indices to keep, e.g. 0,2,4")
    p.add_argument("--select", default=None, choices=("importance", "uniform"),
                   help="how --layers are chosen: highest Block Influence (default) or evenly "
                        "spaced")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (upper bound)")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-time bound on training; stops at steps or minutes, whichever first")
    p.add_argument("--temperature", type=float, default=None, help="KD temperature T")
    p.add_argument("--alpha", type=float, default=None,
                   help="weight of cross-entropy on the text (0: pure distillation)")
    p.add_argument("--lr", type=float, default=None, help="AdamW peak learning rate")
    p.add_argument("--batch", type=int, default=None, help="chunks per step")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per chunk")
    p.add_argument("--seed", type=int, default=None, help="seed for batch order")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")


def _keep_list(text: str) -> tuple[int, ...]:
    try:
        keep = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError("keep-layers",
                        f"expected comma-separated layer indices, got {text!r}") from None
    if not keep or list(keep) != sorted(set(keep)) or keep[0] < 0:
        raise UserError("keep-layers", f"expected ascending distinct indices >= 0, got {text!r}")
    return keep


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The Recipe the arguments ask for (unset ones keep the defaults). Raises UserError."""
    import dataclasses

    from infer_opt.compression.distill import Recipe

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)
             if getattr(args, f.name, None) is not None}
    given["teacher"] = args.model
    if args.keep_layers is not None:
        given["keep_layers"] = _keep_list(args.keep_layers)
    checks = [
        ("layers", given.get("layers", 1) >= 1, "must be an integer >= 1"),
        ("steps", given.get("steps", 1) >= 1, "must be an integer >= 1"),
        ("minutes", given.get("minutes", 1.0) > 0, "must be > 0"),
        ("temperature", given.get("temperature", 1.0) > 0, "must be > 0"),
        ("alpha", 0.0 <= given.get("alpha", 0.0) <= 1.0, "must be in [0, 1]"),
        ("lr", given.get("lr", 1e-4) > 0, "must be > 0"),
        ("batch", given.get("batch", 1) >= 1, "must be an integer >= 1"),
        ("seq-len", given.get("seq_len", 2) >= 2, "must be an integer >= 2"),
    ]
    for name, ok, what in checks:
        if not ok:
            raise UserError(name, f"{what}, got {getattr(args, name.replace('-', '_'))}")
    if args.threads < 1:
        raise UserError("threads", f"must be an integer >= 1, got {args.threads}")
    return Recipe(**given)


def _check_against_teacher(recipe: Recipe, ref: ModelRef) -> None:
    """Layer counts and sequence length that only the teacher's config can judge."""
    from infer_opt.compression.distill import teacher_layers

    n = teacher_layers(ref)
    if recipe.keep_layers is not None and recipe.keep_layers[-1] >= n:
        raise UserError("keep-layers",
                        f"{ref.name} has layers 0..{n - 1}, got index {recipe.keep_layers[-1]}")
    if recipe.layers is not None and recipe.layers > n:
        raise UserError("layers", f"{ref.name} has {n} layers, got {recipe.layers}")
    if recipe.seq_len > ref.max_context:
        raise UserError("seq-len",
                        f"{ref.name} takes at most {ref.max_context} tokens, got {recipe.seq_len}")


def main(args: argparse.Namespace) -> int:
    # libgomp's threads spin while they wait; on a shared 2-core machine a spinning thread
    # steals the core its partner needs, and 2 threads ran 3-5x slower than 1 (measured).
    # Passive waiting must be chosen before torch loads libgomp, hence here, before any import.
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    recipe = recipe_from_args(args)
    from infer_opt.compression.distill import distill
    from infer_opt.core.models import resolve

    _check_against_teacher(recipe, resolve(recipe.teacher))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    print(distill(recipe, threads=args.threads, log=log))
    return 0
