from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings
from infer_opt.plugins._torchao import add_torchao_transform


class Int8WeightOnly(Plugin):
    name = "int8-wo"
    summary = ("torchao int8 weight-only (per-channel scales); dequantizes in the matmul, so it "
               "pays off with bf16 + compile")
    requires_packages = ("torchao",)

    def apply(self, settings: Settings) -> None:
        def config() -> object:
            from torchao.quantization import Int8WeightOnlyConfig

            return Int8WeightOnlyConfig()

        add_torchao_transform(settings, self.name, config)
