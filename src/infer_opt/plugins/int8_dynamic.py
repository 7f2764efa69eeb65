from infer_opt.core.plugin import Plugin, Settings
from infer_opt.plugins._torchao import add_torchao_transform


class Int8Dynamic(Plugin):
    name = "int8-dynamic"
    summary = ("torchao dynamic int8: int8 weights, activations quantized per token at run time, "
               "int8 x int8 matmul")
    requires_packages = ("torchao",)

    def apply(self, settings: Settings) -> None:
        def config() -> object:
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig

            return Int8DynamicActivationInt8WeightConfig()

        add_torchao_transform(settings, self.name, config)
