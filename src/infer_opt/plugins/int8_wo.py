"""8-bit weight-only quantization.

torch: torchao Int8WeightOnlyConfig, symmetric, per output channel by default (`group` sets
blocks along K); it dequantizes in the matmul, so it pays off with bf16 + compile.
ort, ort-genai: MatMulNBits bits 8 through onnxruntime's MatMulNBitsQuantizer (engine options,
see plugins/_weight_only.py), blocks of 32 by default (MatMulNBits blocks are powers of two,
so no per-channel form), symmetric; accuracy_level 4 is its fast CPU kernel.
"""

from __future__ import annotations

from typing import ClassVar

from infer_opt.core.params import Param
from infer_opt.core.settings import Settings
from infer_opt.plugins._torchao import add_torchao_transform
from infer_opt.plugins._weight_only import (
    ACCURACY,
    LM_HEAD,
    WeightOnly,
    refuse_on_torch,
)


class Int8WeightOnly(WeightOnly):
    name = "int8-wo"
    summary = ("8-bit weight-only (torch: torchao per-channel, pays with bf16 + compile; ort, "
               "ort-genai: MatMulNBits, blocks of 32; openvino: NNCF per channel)")
    bits = 8
    params: ClassVar[tuple[Param, ...]] = (
        Param("group", int, None, "weights per block along K (default: per output channel on "
              "torch, 32 on ORT engines)", choices=(16, 32, 64, 128, 256)),
        Param("symmetric", bool, True, "symmetric blocks (no zero point); torchao's int8 "
              "weight-only is symmetric only"),
        ACCURACY,
        LM_HEAD,
    )

    def apply_torch(self, settings: Settings, group: int | None, lm_head: str) -> None:
        if not self.values["symmetric"]:
            raise refuse_on_torch(self.name, "torchao's int8 weight-only is symmetric only")

        def config() -> object:
            from torchao.quantization import Int8WeightOnlyConfig

            return Int8WeightOnlyConfig(group_size=group)

        settings.notes.append("int8-wo: torchao, symmetric, "
                              + ("per output channel" if group is None else f"group {group}")
                              + f"; lm_head {lm_head}")
        add_torchao_transform(settings, self.name, config, "same" if lm_head == "int8" else None)
