"""The GGUF's own 4-bit blocks, carried over exactly into onnxruntime-genai's fused graph.

SmolLM2-135M ships as a Q4_1 GGUF; infer-opt's fp32 weights are its blocks dequantized. This
plugin puts those very blocks into MatMulNBits nodes (engines/onnx/gguf_blocks.py, engines/onnx/nbits.py):
no re-quantization, so the only difference from the fp32 graph is how the kernel computes.
`accuracy` is MatMulNBits' accuracy_level: 0 computes in fp32 (the rows match the fp32
baseline: KL ~1e-11, greedy 128/128), 4 quantizes the activations to int8 per block (the fast
CPU path, what llama.cpp also does with its Q8_1 activations). `lm_head`: q8 takes the GGUF's
Q8_0 embedding blocks as an 8-bit lm_head (MatMulNBits has a fast 8-bit CPU kernel only with
int8 activations, so it always runs at accuracy 4); auto = q8 at accuracy 4, fp32 below.
"""

from __future__ import annotations

from typing import ClassVar

from infer_opt.core.models import source_gguf
from infer_opt.core.params import Param
from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings
from infer_opt.core.weights import WeightQuant


class GGUFQ4(Plugin):
    name = "gguf-q4"
    summary = ("the GGUF's own Q4_1 blocks as MatMulNBits (exact weights), fp32 min term; "
               "lm_head from its Q8_0 embedding")
    engines = None  # every engine whose weight_quant declares the GGUF's own 4-bit blocks
    weight_kind = (4, "none", "gguf")
    params: ClassVar[tuple[Param, ...]] = (
        Param("accuracy", int, 4, "MatMulNBits accuracy_level: 0 fp32 compute (exact), 4 int8 "
              "activations (fast)", minimum=0, maximum=4),
        Param("lm_head", str, "auto", "q8: the GGUF's Q8_0 blocks (8-bit, accuracy 4); fp32; "
              "auto: q8 at accuracy 4, else fp32", choices=("auto", "q8", "fp32")),
    )

    def unavailable_reason(self, settings: Settings) -> str | None:
        if source_gguf(settings.model) is None and not settings.options.get("gguf"):
            return (f"no GGUF known for model {settings.model!r} (the packaged one for "
                    "smollm2-135m, or the one *.gguf of a model directory)")
        return None

    def apply(self, settings: Settings) -> None:
        settings.exclusive("weight quantization", by=self.name)
        accuracy = self.values["accuracy"]
        lm_head = self.values["lm_head"]
        if lm_head == "auto":
            lm_head = "q8" if accuracy == 4 else "fp32"
        settings.set("weights", WeightQuant(4, source="gguf", accuracy=accuracy,
                                            lm_head="int8" if lm_head == "q8" else "fp32"),
                     by=self.name)
