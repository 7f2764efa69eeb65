"""4-bit weight-only quantization, blocks of `group` weights along K (Settings.weights).

How each engine runs it is the engine's (plugins/_weight_only.py): torch with torchao's int4
(asymmetric, float zero point; engines/torch/quant.py), ort and ort-genai with MatMulNBits through
onnxruntime's MatMulNBitsQuantizer (engines/onnx/nbits.py: its zero point is a 4-bit integer and
its range always includes 0, so SmolLM2's Q4_1 blocks land on another grid and the answers move,
research: KL 0.25), openvino with NNCF at export.
"""

from __future__ import annotations

from typing import ClassVar

from infer_opt.core.params import Param
from infer_opt.plugins._weight_only import ACCURACY, LM_HEAD, WeightOnly


class Int4WeightOnly(WeightOnly):
    name = "int4-wo"
    summary = ("4-bit weight-only, blocks of 32 along K (torch: torchao int4, CPU and CUDA; "
               "ort, ort-genai: MatMulNBits; openvino: NNCF)")
    bits = 4
    weight_kind = (4, "none", "rtn")
    params: ClassVar[tuple[Param, ...]] = (
        Param("group", int, 32, "weights per block along K", choices=(16, 32, 64, 128, 256)),
        Param("symmetric", bool, False, "symmetric blocks (no zero point); torchao's int4 is "
              "asymmetric only"),
        ACCURACY,
        LM_HEAD,
    )
