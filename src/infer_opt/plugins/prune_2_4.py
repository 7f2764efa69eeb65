"""2:4 semi-structured sparsity (compression/semi_structured.py): in every group of 4 weights
along the input dimension, the 2 smallest |w| are set to zero.

`prune-2-4` keeps the weights dense (any device): its row shows what the 2:4 pattern costs in
fidelity. `sparse-2-4` also compresses them for NVIDIA's 2:4 sparse kernels
(`torch.sparse.to_sparse_semi_structured`: CUDA, compute capability >= 8.0, fp16/bf16), where
the pattern can buy speed; elsewhere its row is skipped with the reason.
"""

from __future__ import annotations

from typing import Any

from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings
from infer_opt.plugins.prune_magnitude import ZERO_PCT


def mask_transform(by: str) -> Any:
    def transform(model: Any, s: Settings) -> Any:
        from infer_opt.compression.semi_structured import prune_2_4

        model, facts = prune_2_4(model)
        s.metrics[ZERO_PCT.name] = 100.0 * facts["zero_fraction"]
        s.notes.append(f"{by}: 2 of every 4 decoder Linear weights zero "
                       f"({facts['pruned_tensors']} tensors)")
        return model

    return transform


class Prune24(Plugin):
    name = "prune-2-4"
    summary = "2:4 semi-structured pruning of the decoder Linears, kept dense (fidelity only)"
    metrics = (ZERO_PCT,)

    def apply(self, settings: Settings) -> None:
        settings.model_transforms.append(mask_transform(self.name))


class Sparse24(Plugin):
    name = "sparse-2-4"
    summary = "2:4 pruning plus NVIDIA 2:4 sparse kernels (CUDA, Ampere+, fp16/bf16)"
    metrics = (ZERO_PCT,)
    needs_dtype = ("float16", "bfloat16")

    def unavailable_reason(self, settings: Settings) -> str | None:
        from infer_opt.compression.semi_structured import semi_structured_unavailable
        from infer_opt.engines.torch.engine import DTYPES

        return semi_structured_unavailable(settings.device, DTYPES[settings.dtype])

    def apply(self, settings: Settings) -> None:
        settings.model_transforms.append(mask_transform(self.name))

        def compress(model: Any, s: Settings) -> Any:
            from infer_opt.compression.semi_structured import to_semi_structured

            model, facts = to_semi_structured(model)
            s.notes.append(f"{self.name}: {facts['converted_tensors']} weights compressed "
                           f"({facts['sparse_backend']})")
            return model

        settings.model_transforms.append(compress)
