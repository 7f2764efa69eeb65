"""Shared by kv-int8 and kv-int4: a dynamic KV cache stored quantized, through transformers'
QuantizedCache with the HQQ backend (engines/torch/engine.py builds it).

Why HQQ and not quanto: with the pinned transformers 5.25, the quanto backend of
QuantizedCache takes only 2 or 4 bits (QuantoQuantizedLayer refuses nbits=8), so it cannot give
an int8 cache; HQQ takes 1, 2, 3, 4 and 8 bits, and both install beside torch 2.13 from wheels.
The cache (KIVI-style, Liu et al. 2024) keeps the newest `residual_length` tokens in the
model's dtype and re-quantizes, per group of `group_size` values, whenever that window fills:
a step reads the dequantized cache, so the saving is memory, paid for in speed and fidelity.
"""

from __future__ import annotations

from typing import ClassVar

from infer_opt.core.params import Param
from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings


class KVQuant(Plugin):
    bits: ClassVar[int] = 0
    engines = ("torch",)
    requires_packages = ("hqq",)
    needs_kv_cache = ("dynamic",)
    params = (
        Param("group_size", int, 64, "values per scale/zero point", choices=(32, 64, 128)),
        Param("residual_length", int, 128, "newest tokens kept unquantized", minimum=1),
    )

    def apply(self, settings: Settings) -> None:
        settings.set("kv_cache", "dynamic", by=self.name)
        settings.set_option("kv_cache_type", f"int{self.bits}", by=self.name)
        settings.set_option("kv_group_size", self.values["group_size"], by=self.name)
        settings.set_option("kv_residual_length", self.values["residual_length"], by=self.name)
