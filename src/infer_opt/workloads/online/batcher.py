"""Batched greedy decoding over a padded, per-row KV cache: what every serving policy drives.

A `Running` batch holds B sequences of different lengths in one transformers `DynamicCache`
(per layer: keys/values [B, kv_heads, L, head_dim]). Shorter sequences are padded on the LEFT;
a 2D attention mask [B, L] marks real slots (1) and padding (0), and each row carries its own
next position id, so a padded row computes exactly what it would compute alone (up to float
rounding). Rows can join (`merge`, between decode steps) and leave (`select`), which is all
continuous batching needs; dynamic batching only prefills and decodes.

With a shared prefix (`Prefix`), the prefix KV is computed once and copied into every new
row; the row's own tokens follow it, after padding: [prefix | pad | own tokens]. The mask has a
hole there, which the model's 2D-mask path handles like left padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Prefix:
    """KV of a shared prompt prefix, computed once: per layer (keys, values) [1, H, P, D]."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    length: int


@dataclass
class Running:
    """A batch of sequences being decoded together."""

    cache: Any  # DynamicCache, per layer [B, H, L, D]
    mask: torch.Tensor  # [B, L] long, 1 = real slot
    next_pos: torch.Tensor  # [B] long, position id of the token fed next
    last: torch.Tensor  # [B, 1] long, the token fed next (the latest generated one)
    rows: list[int]  # request id of each row

    @property
    def size(self) -> int:
        return len(self.rows)


def _kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


class Engine:
    """Greedy prefill / decode of padded batches on a loaded transformers causal LM."""

    def __init__(self, model: Any, device: str, pad_id: int) -> None:
        self.model = model
        self.config = model.config
        self.device = device
        self.pad_id = pad_id

    def _cache(self, kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Any:
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=kv, config=self.config)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any
                 ) -> torch.Tensor:
        """ids/pos [B, T], mask [B, past + T] -> greedy next ids [B] (on the device)."""
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache,
                         use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].argmax(dim=-1)

    def make_prefix(self, ids: list[int]) -> Prefix:
        """Run the shared prefix once and keep its KV."""
        t = torch.tensor([ids], dtype=torch.long, device=self.device)  # [1, P]
        pos = torch.arange(len(ids), device=self.device)[None]
        cache = self._cache()
        self.model(input_ids=t, attention_mask=torch.ones_like(t), position_ids=pos, cache=cache,
                   use_cache=True, logits_to_keep=1)
        return Prefix(kv=[(k.clone(), v.clone()) for k, v in _kv(cache)], length=len(ids))

    def prefill(self, prompts: list[list[int]], rows: list[int], prefix: Prefix | None = None
                ) -> tuple[Running, list[int]]:
        """Prefill a batch of prompts (the tokens after the prefix, when one is given).

        Returns the running batch and each row's first generated token.
        """
        b, s = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((b, s), self.pad_id, dtype=torch.long)
        own = torch.zeros((b, s), dtype=torch.long)  # [B, S] 1 = real token
        for i, p in enumerate(prompts):
            ids[i, s - len(p):] = torch.tensor(p, dtype=torch.long)
            own[i, s - len(p):] = 1
        start = 0 if prefix is None else prefix.length
        # Position of each real token counts only real tokens; padding gets a dummy 0.
        pos = (own.cumsum(dim=1) - 1).clamp(min=0) + start
        if prefix is None:
            cache, mask = self._cache(), own
        else:
            cache = self._cache([(k.expand(b, -1, -1, -1).contiguous(),
                                  v.expand(b, -1, -1, -1).contiguous()) for k, v in prefix.kv])
            mask = torch.cat([torch.ones((b, prefix.length), dtype=torch.long), own], dim=1)
        ids, mask, pos = ids.to(self.device), mask.to(self.device), pos.to(self.device)
        nxt = self._forward(ids, mask, pos, cache)  # [B]
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        run = Running(cache=cache, mask=mask, next_pos=lengths + start, last=nxt[:, None],
                      rows=list(rows))
        return run, nxt.tolist()  # .tolist() waits for the device: the tokens are ready

    def decode(self, run: Running) -> list[int]:
        """One greedy step for every row; returns each row's new token."""
        b = run.size
        run.mask = torch.cat([run.mask, torch.ones((b, 1), dtype=run.mask.dtype,
                                                   device=run.mask.device)], dim=1)
        nxt = self._forward(run.last, run.mask, run.next_pos[:, None], run.cache)  # [B]
        run.next_pos = run.next_pos + 1
        run.last = nxt[:, None]
        return nxt.tolist()

    def select(self, run: Running, keep: list[int]) -> Running | None:
        """Keep rows at indices `keep` (finished rows leave); None when no row is left.

        Columns that became padding in every remaining row are trimmed from the left, so the
        batch does not keep paying attention over slots nobody uses.
        """
        if not keep:
            return None
        if len(keep) == run.size:
            return run
        idx = torch.tensor(keep, device=run.mask.device)
        mask = run.mask[idx]
        used = mask.any(dim=0).nonzero()
        cut = int(used[0]) if used.numel() else 0
        kv = [(k[idx, :, cut:], v[idx, :, cut:]) for k, v in _kv(run.cache)]
        return Running(cache=self._cache(kv), mask=mask[:, cut:], next_pos=run.next_pos[idx],
                       last=run.last[idx], rows=[run.rows[i] for i in keep])

    def merge(self, a: Running | None, b: Running) -> Running:
        """Rows of b join a between decode steps; the shorter cache is padded on the left."""
        if a is None:
            return b
        la, lb = a.mask.shape[1], b.mask.shape[1]
        width = max(la, lb)

        def pad(t: torch.Tensor, n: int) -> torch.Tensor:  # left-pad dim -2 (or -1 for masks)
            if n == 0:
                return t
            shape = list(t.shape)
            dim = t.dim() - 2 if t.dim() == 4 else 1
            shape[dim] = n
            return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)

        kv = [(torch.cat([pad(ka, width - la), pad(kb, width - lb)]),
               torch.cat([pad(va, width - la), pad(vb, width - lb)]))
              for (ka, va), (kb, vb) in zip(_kv(a.cache), _kv(b.cache))]
        return Running(cache=self._cache(kv),
                       mask=torch.cat([pad(a.mask, width - la), pad(b.mask, width - lb)]),
                       next_pos=torch.cat([a.next_pos, b.next_pos]),
                       last=torch.cat([a.last, b.last]), rows=a.rows + b.rows)
