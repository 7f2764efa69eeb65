"""Dynamic int8: int8 weights, activations quantized at run time, int8 x int8 matmuls.

torch: torchao's Int8DynamicActivationInt8WeightConfig (per-token activation scales).
ort: onnxruntime.quantization.quantize_dynamic of the exported graph's MatMul weights (per
channel; per-tensor activation scales), see engines/onnx/export.py.
ct2: CTranslate2's compute_type int8 (int8 weights per row, activations quantized at run time),
see engines/ct2/engine.py.
"""

from infer_opt.core.plugin import Plugin, missing_package
from infer_opt.core.settings import Settings
from infer_opt.plugins._torchao import add_torchao_transform


class Int8Dynamic(Plugin):
    name = "int8-dynamic"
    summary = ("dynamic int8: int8 weights, activations quantized at run time (torch: torchao; "
               "ort: quantize_dynamic; ct2: compute_type int8)")
    engines = ("torch", "ort", "ct2")

    def unavailable_reason(self, settings: Settings) -> str | None:
        return missing_package(("torchao",)) if settings.engine == "torch" else None

    def apply(self, settings: Settings) -> None:
        settings.exclusive("weight quantization", by=self.name)  # its weights are int8 too
        if settings.engine == "ort":
            settings.set_option("quantize", "int8-dynamic", by=self.name)
            return
        if settings.engine == "ct2":
            settings.set_option("compute_type", "int8", by=self.name)
            return

        def config() -> object:
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig

            return Int8DynamicActivationInt8WeightConfig()

        add_torchao_transform(settings, self.name, config)
