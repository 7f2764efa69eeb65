"""Output fidelity of a variant against the pinned fp32 baseline, on every ok row.

Reference (computed once per model, device and thread count, cached on disk): the baseline
(fp32, eager, no KV cache) greedily continues a fixed prompt set, and its logits along those
sequences are kept. The variant is then scored on the very same token sequences, teacher-forced,
through the engine's `score(ids) -> logits`, so any engine can be compared:

- kl_mean / kl_max: KL(baseline || variant) of the next-token distributions at each generated
  position (nats); a position whose variant logits hold NaN/inf counts as KL = inf;
- top1_agreement_pct: % of those positions where the two argmaxes agree;
- greedy_match_tokens: how many tokens the variant generates greedily, identical to the
  baseline's, before the first difference (min over prompts). Read from the teacher-forced pass:
  while the variant has matched every token so far, its context is exactly the baseline's, so
  its next greedy token is the argmax of its logits along the baseline's sequence; the first
  position where that argmax differs is where its own generation departs. This saves a
  32-step generation per cell. It is exact for the scoring path (`score`); whether the decode
  path (KV cache, compiled step, engine) generates the same tokens is checked on every row by
  the table's `greedy = ref` column, which compares the tokens the timed runs generated with the
  reference row's;
- perplexity: exp(mean NLL) of the evaluation text (data/eval_text.txt; seeded random ids for a
  model without tokenizer, which only makes sense relative to the baseline's);
- logits_nonfinite_count: NaN/inf values in all logits the variant produced here.

Everything runs outside the timed region. Softmaxes are computed the stable way (max
subtracted, in float64), so only non-finite logits themselves can make KL non-finite.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from infer_opt.core.artifacts import weights_digest
from infer_opt.core.divergence import compare_logits, perplexity, stable_log_softmax  # noqa: F401
from infer_opt.core.divergence import g4 as _g
from infer_opt.core.greedy import greedy_match
from infer_opt.core.models import ModelRef, cache_root, locked
from infer_opt.core.prompts import prompt_batch, text_token_stream

# Bump when anything below changes what the reference holds.
RECIPE_VERSION = 1
PROMPTS = 2  # prompts in the fidelity set
PROMPT_TOKENS = 32  # tokens per prompt
NEW_TOKENS = 32  # greedy tokens the baseline adds (positions scored per prompt)
PPL_TOKENS = 256  # tokens of evaluation text for perplexity
SEED = 1234  # prompt seed for models without a tokenizer


@dataclass
class Reference:
    prompts: torch.Tensor  # [B, P] int64
    greedy: torch.Tensor  # [B, N] int64, the baseline's greedy continuation
    logits: torch.Tensor  # [B, N, V] float32, baseline logits predicting greedy[:, i]
    ppl_ids: torch.Tensor  # [1, L] int64, evaluation text


def fidelity_inputs(ref: ModelRef, tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompts [PROMPTS, PROMPT_TOKENS], evaluation ids [1, <= PPL_TOKENS]), fixed per model."""
    prompts = prompt_batch(PROMPTS, PROMPT_TOKENS, ref.vocab_size, tokenizer, seed=SEED)
    if tokenizer is not None:
        ids = torch.tensor([text_token_stream(tokenizer)[:PPL_TOKENS]], dtype=torch.long)
    else:
        g = torch.Generator().manual_seed(SEED + 1)
        ids = torch.randint(3, ref.vocab_size, (1, PPL_TOKENS), generator=g)
    return prompts, ids


def _cache_path(ref: ModelRef, device: str, prompts: torch.Tensor, ppl_ids: torch.Tensor) -> Path:
    """The reference's cache file, keyed by what determines its logits: the weights' content
    (a local directory; a hub id by name), device, threads, library versions and inputs."""
    import transformers

    model = weights_digest(Path(ref.path)) if ref.local else ref.path
    key = json.dumps({
        "recipe": RECIPE_VERSION, "model": model, "device": device,
        # Thread count changes CPU reduction order, hence the last bits of the logits.
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": transformers.__version__, "prompts": prompts.tolist(),
        "new_tokens": NEW_TOKENS, "ppl_ids": ppl_ids.tolist(),
    }, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "fidelity" / f"{Path(ref.path).name}-{digest}.safetensors"


def _greedy(engine: Any, prompts: torch.Tensor, device: str) -> torch.Tensor:
    from infer_opt.core.timing import clock_for
    from infer_opt.engines.decode import generate

    with engine.context():
        return generate(engine, prompts, NEW_TOKENS, clock_for(device)).tokens  # [B, N]


def _compute_reference(ref: ModelRef, device: str, prompts: torch.Tensor,
                       ppl_ids: torch.Tensor) -> Reference:
    from infer_opt.core.stack import build_stack

    stack = build_stack("baseline", device, ref.name)
    baseline = stack.engine(ref, stack.settings)
    greedy = _greedy(baseline, prompts, device)
    seq = torch.cat([prompts, greedy], dim=1)  # [B, P+N]
    logits = baseline.score(seq)[:, PROMPT_TOKENS - 1 : -1, :].contiguous()  # [B, N, V]
    del baseline
    return Reference(prompts, greedy, logits, ppl_ids)


def load_reference(ref: ModelRef, device: str, tokenizer: Any) -> Reference:
    """The baseline's reference for this model, from the disk cache or computed once (locked)."""
    from safetensors.torch import load_file, save_file

    prompts, ppl_ids = fidelity_inputs(ref, tokenizer)
    path = _cache_path(ref, device, prompts, ppl_ids)
    if not path.is_file():
        with locked(path):
            if not path.is_file():
                r = _compute_reference(ref, device, prompts, ppl_ids)
                tmp = path.with_suffix(".tmp")
                save_file({"prompts": r.prompts, "greedy": r.greedy, "logits": r.logits,
                           "ppl_ids": r.ppl_ids}, str(tmp))
                tmp.replace(path)  # readers never see a half-written file
    t = load_file(str(path))
    return Reference(t["prompts"], t["greedy"], t["logits"], t["ppl_ids"])


def measure_fidelity(ctx: Any, row: dict[str, Any]) -> None:
    """Fill the FIDELITY columns of `row` for the loaded engine in `ctx` (a CellContext)."""
    reference = load_reference(ctx.ref, ctx.cell.device, ctx.tokenizer)
    engine = ctx.engine
    seq = torch.cat([reference.prompts, reference.greedy], dim=1)  # [B, P+N]
    logits = engine.score(seq)[:, PROMPT_TOKENS - 1 : -1, :]  # [B, N, V]
    result = compare_logits(reference.logits, logits)
    # The variant's greedy choice at each position of the baseline's sequence; a position whose
    # logits are not finite never matches.
    greedy = logits.argmax(dim=-1).masked_fill(~torch.isfinite(logits).all(dim=-1), -1)  # [B, N]
    ppl_logits = engine.score(reference.ppl_ids)  # [1, L, V]
    nonfinite = result["logits_nonfinite_count"] + int((~torch.isfinite(ppl_logits)).sum())
    row.update(
        kl_mean=_g(result["kl_mean"]), kl_max=_g(result["kl_max"]),
        top1_agreement_pct=round(result["top1_agreement_pct"], 2),
        greedy_match_tokens=greedy_match(greedy.tolist(), reference.greedy.tolist()),
        perplexity=_g(perplexity(ppl_logits, reference.ppl_ids)),
        logits_nonfinite_count=nonfinite,
    )


# --- once per variant per run ----------------------------------------------------------------
# Fidelity depends on the model, the variant, the device and the thread count, never on the
# workload: within one run, the first ok cell of a variant measures it and later cells of the
# same variant reuse its columns (the row says which cell measured them). Kept beside the
# reference cache, keyed by run, so cells in separate processes (or on one Ray node) share it.

FIDELITY_COLUMNS = ("kl_mean", "kl_max", "top1_agreement_pct", "greedy_match_tokens",
                    "perplexity", "logits_nonfinite_count")


def run_store_dir(run_id: str) -> Path:
    return cache_root() / "fidelity" / "runs" / run_id


def _run_store_path(cell: Any) -> Path:
    key = json.dumps([cell.model.get("path"), cell.variant, cell.device, cell.threads])
    return run_store_dir(cell.run_id) / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def reuse_fidelity(cell: Any, row: dict[str, Any]) -> int | None:
    """Copy the fidelity columns measured earlier in this run for this variant into `row`;
    returns the index of the cell that measured them, or None (nothing stored yet)."""
    path = _run_store_path(cell)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    row.update({c: stored["columns"][c] for c in FIDELITY_COLUMNS})
    return int(stored["cell_index"])


def keep_fidelity(cell: Any, row: dict[str, Any]) -> None:
    path = _run_store_path(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{cell.index}.tmp")
    tmp.write_text(json.dumps({"cell_index": cell.index,
                               "columns": {c: row[c] for c in FIDELITY_COLUMNS}}),
                   encoding="utf-8")
    tmp.replace(path)  # a reader sees the whole file or none
