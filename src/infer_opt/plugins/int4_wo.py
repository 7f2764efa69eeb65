"""4-bit weight-only quantization, blocks of `group` weights along K.

torch: torchao. On CPU its prototype PrototypeInt4WeightOnlyConfig (Int4OpaqueTensor, packed for
aten._weight_int4pack_mm_for_cpu); on CUDA Int4WeightOnlyConfig (tinygemm; stack with bf16).
Both are asymmetric with a float zero point per block: w = (q - 8) * scale + zero. That grid
holds any GGUF Q4_1 block (w = d * q + m: scale = d, zero = m + 8d), so on SmolLM2, whose fp32
weights are dequantized Q4_1 blocks, round-to-nearest at group 32 recovers them (KL ~1e-11).
ort, ort-genai: MatMulNBits through onnxruntime's MatMulNBitsQuantizer (engine options, see
plugins/_weight_only.py): its zero point is a 4-bit integer and its range always includes 0, so
the same Q4_1 blocks land on another grid and the answers move (research: KL 0.25).
"""

from __future__ import annotations

from typing import Any, ClassVar

from infer_opt.core.params import Param
from infer_opt.core.settings import Settings
from infer_opt.plugins._torchao import add_torchao_transform
from infer_opt.plugins._weight_only import (
    ACCURACY,
    LM_HEAD,
    WeightOnly,
    refuse_on_torch,
)


def torchao_int4_config(device: str, group: int) -> Any:
    if device.startswith("cuda"):
        from torchao.quantization import Int4WeightOnlyConfig

        return Int4WeightOnlyConfig(group_size=group)
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

    return PrototypeInt4WeightOnlyConfig(group_size=group)


def int8_weight_only() -> Any:
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig()


class Int4WeightOnly(WeightOnly):
    name = "int4-wo"
    summary = ("4-bit weight-only, blocks of 32 along K (torch: torchao int4, CPU and CUDA; "
               "ort, ort-genai: MatMulNBits; openvino: NNCF)")
    bits = 4
    params: ClassVar[tuple[Param, ...]] = (
        Param("group", int, 32, "weights per block along K", choices=(16, 32, 64, 128, 256)),
        Param("symmetric", bool, False, "symmetric blocks (no zero point); torchao's int4 is "
              "asymmetric only"),
        ACCURACY,
        LM_HEAD,
    )

    def apply_torch(self, settings: Settings, group: int | None, lm_head: str) -> None:
        if self.values["symmetric"]:
            raise refuse_on_torch(self.name, "torchao's int4 weight-only is asymmetric only")
        if group == 16:
            raise refuse_on_torch(self.name, "torchao's int4 kernels take groups of 32 to 256")
        kernel = ("tinygemm (CUDA)" if settings.device.startswith("cuda") else
                  "_weight_int4pack_mm_for_cpu")
        settings.notes.append(f"int4-wo: torchao, group {group}, asymmetric (float zero point), "
                              f"{kernel}; lm_head {lm_head}")
        add_torchao_transform(settings, self.name,
                              lambda: torchao_int4_config(settings.device, group),
                              int8_weight_only if lm_head == "int8" else None)
