"""Weight-only quantization as one setting across engines (plugins int4-wo and int8-wo).

The plugin sets `Settings.weights` (core/weights.py) and names no engine: it works on every
engine that declares weight-only support for its bits (`Engine.weight_quant`), and each engine
quantizes its own way (torch: torchao, engines/torch/quant.py; ort, ort-genai: MatMulNBits,
engines/onnx/nbits.py; openvino: NNCF at export). The values:

    group       weights per block along K (one scale, and zero point, per block)
    symmetric   no zero point (scale only)
    accuracy    ONNX Runtime's MatMulNBits compute precision (engines that declare it)
    lm_head     "int8" or "fp32": the output projection (the largest matrix of a small model;
                the decoder's Linears get `bits`); unset: int8 where the engine sets it,
                else the engine's own way (OpenVINO)

A value an engine does not take (a block size it has no kernel for, symmetric blocks on
torchao's int4, accuracy off ONNX Runtime) is refused up front by the stack, naming the engine
and the values it takes. What each engine ran (block size, symmetry, kernel) is in the notes.
"""

from __future__ import annotations

from typing import ClassVar

from infer_opt.core.params import Param
from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings
from infer_opt.core.weights import LM_HEADS, WeightQuant

# The parameters int4-wo and int8-wo share (their group and symmetry defaults differ).
ACCURACY = Param("accuracy", int, None, "ONNX Runtime accuracy_level (0 fp32 .. 4 int8 "
                 "activations); engine default 4", minimum=0, maximum=4)
LM_HEAD = Param("lm_head", str, None, "the lm_head's weights: int8 (the default; torch: torchao "
                "int8 weight-only per channel; ORT: MatMulNBits 8-bit, block 32, symmetric) or "
                "fp32; engines without an lm_head choice (OpenVINO) treat it their own way",
                choices=LM_HEADS)


class WeightOnly(Plugin):
    """What int4-wo and int8-wo share: one weight quantization per stack, as Settings.weights."""

    bits: ClassVar[int]
    engines = None  # every engine whose weight_quant declares (bits, "none", "rtn")

    def apply(self, settings: Settings) -> None:
        settings.exclusive("weight quantization", by=self.name)
        v = self.values
        settings.set("weights", WeightQuant(self.bits, group=v["group"], symmetric=v["symmetric"],
                                            lm_head=v["lm_head"], accuracy=v["accuracy"]),
                     by=self.name)
