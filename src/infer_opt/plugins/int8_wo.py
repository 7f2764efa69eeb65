"""8-bit weight-only quantization (Settings.weights).

How each engine runs it is the engine's (plugins/_weight_only.py): torch with torchao's
Int8WeightOnlyConfig, symmetric, per output channel unless `group` is set (it dequantizes in the
matmul, so it pays off with bf16 + compile); ort and ort-genai with MatMulNBits bits 8, blocks of
32 by default (MatMulNBits blocks are powers of two, so no per-channel form), accuracy_level 4 its
fast CPU kernel; openvino with NNCF per output channel.
"""

from __future__ import annotations

from typing import ClassVar

from infer_opt.core.params import Param
from infer_opt.plugins._weight_only import ACCURACY, LM_HEAD, WeightOnly


class Int8WeightOnly(WeightOnly):
    name = "int8-wo"
    summary = ("8-bit weight-only (torch: torchao per-channel, pays with bf16 + compile; ort, "
               "ort-genai: MatMulNBits, blocks of 32; openvino: NNCF per channel)")
    bits = 8
    weight_kind = (8, "none", "rtn")
    params: ClassVar[tuple[Param, ...]] = (
        Param("group", int, None, "weights per block along K (default: per output channel on "
              "torch and openvino, 32 on ORT engines)", choices=(16, 32, 64, 128, 256)),
        Param("symmetric", bool, True, "symmetric blocks (no zero point); torchao's int8 "
              "weight-only is symmetric only"),
        ACCURACY,
        LM_HEAD,
    )
