"""The one decode loop: greedy prefill and decode steps over an engine's step API.

Everything that generates tokens drives these functions: static batches (`generate`), the online
serving policies (rows joining and leaving a running batch: `prefill`, `decode`, `select`,
`merge`, with a shared prefix computed once by `make_prefix`) and speculative decoding. Each
call goes through `Engine.step`, i.e. through every plugin's step wrapper, the engine's own KV
cache kind (dynamic, static or none) and its version-specific arguments, so a serving row of
`kv-cache+sdpa+bf16` measures exactly that stack.

A `DecodeBatch` holds B sequences. Shorter ones are padded on the LEFT: a 2D mask [B, L] marks
real slots (1) and padding (0), and each row carries its own next position id, so a padded row
computes what it would compute alone (up to float rounding). A static batch has equal-length
rows and no mask at all, exactly as the pinned baseline runs. Without a KV cache the rows keep
their whole sequence (`seq`) and every step feeds all of it again.

With a shared prefix (`Prefix`), its KV is computed once and copied into every new row, whose
own tokens follow after its padding: [prefix | pad | own tokens]; the mask has a hole there,
which the models' 2D-mask path treats like left padding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from infer_opt.core.timing import Clock
from infer_opt.engines.base import BatchRun, Engine, StepInput


@dataclass
class Prefix:
    """KV of a shared prompt prefix, computed once: per layer (keys, values) [1, H, P, D]."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    length: int


@dataclass
class DecodeBatch:
    """Sequences decoded together."""

    cache: Any  # the engine's KV state for these rows; None without a KV cache
    seq: torch.Tensor | None  # [B, L] every token so far: only without a KV cache
    mask: torch.Tensor | None  # [B, L] long, 1 = real slot; None = no row is padded
    next_pos: torch.Tensor  # [B] long, position id of the token fed next
    last: torch.Tensor  # [B, 1] long, the token fed next (the latest generated one)
    ids: list[int]  # request id of each row
    length: int  # L: slots used so far (cache columns, or seq length)
    capacity: int  # slots a static cache holds (length + tokens still to come)

    @property
    def size(self) -> int:
        return len(self.ids)


def _greedy(logits: torch.Tensor) -> torch.Tensor:
    """logits [B, K, V] -> greedy ids of the last position [B], on the device."""
    return logits[:, -1, :].argmax(dim=-1)


def prefill(engine: Engine, prompts: list[list[int]] | torch.Tensor, ids: list[int],
            capacity: int, prefix: Prefix | None = None) -> tuple[DecodeBatch, torch.Tensor]:
    """Prefill prompts (the tokens after the prefix, when one is given) as one batch.

    `capacity`: the most slots any row will need (prefix + prompt + new tokens), for engines
    whose cache is allocated up front. Returns the rows and each row's first greedy token [B].
    """
    device = engine.settings.device
    if isinstance(prompts, torch.Tensor):  # equal lengths: no padding, no mask
        tokens = prompts.to(device)  # [B, P]
        b, s = tokens.shape
        own = None
        pos = torch.arange(s, device=device).expand(b, s)
        lengths = torch.full((b,), s, device=device)
    else:
        b, s = len(prompts), max(len(p) for p in prompts)
        tokens = torch.zeros((b, s), dtype=torch.long)
        own = torch.zeros((b, s), dtype=torch.long)  # [B, S] 1 = real token
        for i, p in enumerate(prompts):
            tokens[i, s - len(p):] = torch.tensor(p, dtype=torch.long)
            own[i, s - len(p):] = 1
        # Position of each real token counts only real tokens; padding gets a dummy 0.
        pos = (own.cumsum(dim=1) - 1).clamp(min=0)
        lengths = torch.tensor([len(p) for p in prompts])
        tokens, own, pos, lengths = (t.to(device) for t in (tokens, own, pos, lengths))
    start = 0 if prefix is None else prefix.length
    if prefix is None:
        cache = engine.new_cache(b, capacity)
        mask = own
    else:
        kv = [(k.expand(b, -1, -1, -1).contiguous(), v.expand(b, -1, -1, -1).contiguous())
              for k, v in prefix.kv]
        cache = engine.cache_from_kv(kv, capacity)
        real = own if own is not None else torch.ones((b, s), dtype=torch.long, device=device)
        mask = torch.cat([torch.ones((b, start), dtype=torch.long, device=device), real], dim=1)
    logits = engine.step(StepInput(tokens, pos + start, mask, cache, 1))
    first = _greedy(logits)  # [B]
    rows = DecodeBatch(cache=cache, seq=tokens if cache is None else None, mask=mask,
                       next_pos=lengths + start, last=first[:, None], ids=list(ids),
                       length=start + s, capacity=capacity)
    return rows, first


def decode(engine: Engine, rows: DecodeBatch) -> torch.Tensor:
    """One greedy step for every row; returns each row's new token [B] (on the device)."""
    b = rows.size
    device = rows.last.device
    if rows.mask is not None:
        rows.mask = torch.cat([rows.mask, torch.ones((b, 1), dtype=rows.mask.dtype,
                                                     device=device)], dim=1)
    if rows.cache is None:
        # No KV cache: the whole sequence is recomputed every step (the baseline).
        assert rows.seq is not None
        rows.seq = torch.cat([rows.seq, rows.last], dim=1)  # [B, L + 1]
        if rows.mask is None:
            pos = torch.arange(rows.seq.shape[1], device=device).expand(b, -1)
        else:
            pos = (rows.mask.cumsum(dim=1) - 1).clamp(min=0)
        inp = StepInput(rows.seq, pos, rows.mask, None, 1)
    else:
        inp = StepInput(rows.last, rows.next_pos[:, None], rows.mask, rows.cache, 1)
    nxt = _greedy(engine.step(inp))
    rows.length += 1
    rows.next_pos = rows.next_pos + 1
    rows.last = nxt[:, None]
    return nxt


def generate(engine: Engine, prompts: torch.Tensor, new_tokens: int, clock: Clock) -> BatchRun:
    """Exactly new_tokens greedy tokens for prompts [B, P]; a stamp as each token is ready.

    The greedy ids stay on the device, so no host sync happens inside the loop except the
    clock's own. No early stop at EOS: every variant does the same work. Engines without a
    step API (vLLM) generate themselves; a plugin's decoder (speculative decoding) replaces
    the plain greedy steps and drives engine.step itself.
    """
    if not engine.step_api:
        return engine.generate(prompts, new_tokens, clock)
    if engine.settings.decoder is not None:
        return engine.settings.decoder(engine, prompts, new_tokens, clock)
    batch, prompt_len = prompts.shape
    out: list[torch.Tensor] = []
    clock.start()
    rows, nxt = prefill(engine, prompts, list(range(batch)), prompt_len + new_tokens)
    clock.stamp()
    out.append(nxt)
    for _ in range(new_tokens - 1):
        out.append(decode(engine, rows))
        clock.stamp()
    stamps = clock.finish()
    return BatchRun(stamps_s=stamps, tokens=torch.stack(out, dim=1).cpu(), cache=rows.cache)


def extend(engine: Engine, rows: DecodeBatch, tokens: torch.Tensor) -> torch.Tensor:
    """Append tokens [B, T] to rows that hold a KV cache, at positions length..length+T-1 (a
    chunk of a long context, or the prompt chunk appended at depth); returns each row's greedy
    token after them [B]."""
    batch, chunk = tokens.shape
    device = rows.last.device
    tokens = tokens.to(device)
    pos = torch.arange(chunk, device=device).expand(batch, chunk) + rows.next_pos[:, None]
    mask = None if rows.mask is None else torch.cat(
        [rows.mask, torch.ones((batch, chunk), dtype=rows.mask.dtype, device=device)], dim=1)
    logits = engine.step(StepInput(tokens, pos, mask, rows.cache, 1))
    nxt = _greedy(logits)  # [B]
    rows.mask, rows.length = mask, rows.length + chunk
    rows.next_pos, rows.last = rows.next_pos + chunk, nxt[:, None]
    return nxt


def prefill_context(engine: Engine, context: torch.Tensor, capacity: int,
                    chunk: int = 512) -> DecodeBatch:
    """A long context [B, D] into a new KV cache with room for `capacity` slots, `chunk`
    tokens per step (eager attention over all 8192 positions at once would hold a
    [B, heads, 8192, 8192] score matrix). Untimed: the context a depth row starts from."""
    batch, depth = context.shape
    rows, _ = prefill(engine, context[:, :chunk], list(range(batch)), capacity)
    for lo in range(chunk, depth, chunk):
        extend(engine, rows, context[:, lo:lo + chunk])
    return rows


def generate_at_depth(engine: Engine, rows: DecodeBatch, prompts: torch.Tensor, new_tokens: int,
                      clock: Clock) -> BatchRun:
    """generate() from `rows` that already hold a long context (depth D = rows.length,
    prefilled before the clock starts): the chunk prompts [B, P] is appended at positions
    D..D+P-1 (TTFT = its prefill at depth, llama-bench's pp at depth), then new_tokens - 1
    decode steps, each attending over D + P + i cached positions (tg at depth)."""
    out: list[torch.Tensor] = []
    clock.start()
    out.append(extend(engine, rows, prompts))
    clock.stamp()
    for _ in range(new_tokens - 1):
        out.append(decode(engine, rows))
        clock.stamp()
    stamps = clock.finish()
    return BatchRun(stamps_s=stamps, tokens=torch.stack(out, dim=1).cpu(), cache=rows.cache)


def make_prefix(engine: Engine, ids: list[int]) -> Prefix:
    """Run the shared prefix once and keep its KV (the engine needs a KV cache)."""
    rows, _ = prefill(engine, torch.tensor([ids], dtype=torch.long), [0], len(ids))
    return Prefix(kv=[(k.clone(), v.clone()) for k, v in engine.kv(rows.cache, rows.length)],
                  length=len(ids))


def select(engine: Engine, rows: DecodeBatch, keep: list[int]) -> DecodeBatch | None:
    """Keep rows at indices `keep` (finished rows leave); None when no row is left.

    Columns that became padding in every remaining row are trimmed from the left, so the
    batch does not keep paying attention over slots nobody uses.
    """
    if not keep:
        return None
    if len(keep) == rows.size:
        return rows
    device = rows.last.device
    idx = torch.tensor(keep, device=device)
    cut = 0
    mask = None
    if rows.mask is not None:
        mask = rows.mask[idx]
        used = mask.any(dim=0).nonzero()
        cut = int(used[0]) if used.numel() else 0
        mask = mask[:, cut:]
    length = rows.length - cut
    cache = seq = None
    if rows.cache is None:
        assert rows.seq is not None
        seq = rows.seq[idx, cut:]
    else:
        kv = [(k[idx, :, cut:], v[idx, :, cut:]) for k, v in engine.kv(rows.cache, rows.length)]
        cache = engine.cache_from_kv(kv, rows.capacity - cut)
    return replace(rows, cache=cache, seq=seq, mask=mask, next_pos=rows.next_pos[idx],
                   last=rows.last[idx], ids=[rows.ids[i] for i in keep], length=length,
                   capacity=rows.capacity - cut)


def _left_pad(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)


def _mask(rows: DecodeBatch) -> torch.Tensor:
    if rows.mask is not None:
        return rows.mask
    return torch.ones((rows.size, rows.length), dtype=torch.long, device=rows.last.device)


def merge(engine: Engine, a: DecodeBatch | None, b: DecodeBatch) -> DecodeBatch:
    """The rows of b join a between decode steps; the shorter one is padded on the left."""
    if a is None:
        return b
    la, lb = a.length, b.length
    width = max(la, lb)
    # Room the merged batch needs: the most any row still has to add.
    capacity = width + max(a.capacity - la, b.capacity - lb)
    mask = torch.cat([_left_pad(_mask(a), width - la, 1), _left_pad(_mask(b), width - lb, 1)])
    cache = seq = None
    if a.cache is None:
        assert a.seq is not None and b.seq is not None
        seq = torch.cat([_left_pad(a.seq, width - la, 1), _left_pad(b.seq, width - lb, 1)])
    else:
        kv = [(torch.cat([_left_pad(ka, width - la, 2), _left_pad(kb, width - lb, 2)]),
               torch.cat([_left_pad(va, width - la, 2), _left_pad(vb, width - lb, 2)]))
              for (ka, va), (kb, vb) in zip(engine.kv(a.cache, la), engine.kv(b.cache, lb))]
        cache = engine.cache_from_kv(kv, capacity)
    return DecodeBatch(cache=cache, seq=seq, mask=mask,
                       next_pos=torch.cat([a.next_pos, b.next_pos]),
                       last=torch.cat([a.last, b.last]), ids=a.ids + b.ids, length=width,
                       capacity=capacity)
