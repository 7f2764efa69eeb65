"""Dynamic int8: int8 weights, activations quantized at run time, int8 x int8 matmuls.

The plugin sets `Settings.weights` to 8-bit weights with int8 activations and names no engine;
each engine that declares that kind runs it its own way: torch with torchao's
Int8DynamicActivationInt8WeightConfig (per-token activation scales, engines/torch/quant.py); ort
with onnxruntime.quantization.quantize_dynamic of the exported graph's MatMul weights (per
channel; per-tensor activation scales, engines/onnx/export.py); ct2 with CTranslate2's compute
type int8 (int8 weights per row, engines/ct2/engine.py).
"""

from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings
from infer_opt.core.weights import WeightQuant


class Int8Dynamic(Plugin):
    name = "int8-dynamic"
    summary = ("dynamic int8: int8 weights, activations quantized at run time (torch: torchao; "
               "ort: quantize_dynamic; ct2: compute_type int8)")
    engines = None  # every engine whose weight_quant declares (8, "int8", "rtn")
    weight_kind = (8, "int8", "rtn")

    def apply(self, settings: Settings) -> None:
        settings.exclusive("weight quantization", by=self.name)
        settings.set("weights", WeightQuant(8, activations="int8"), by=self.name)
