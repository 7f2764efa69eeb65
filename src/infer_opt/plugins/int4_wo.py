from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings
from infer_opt.plugins._torchao import add_torchao_transform


class Int4WeightOnly(Plugin):
    name = "int4-wo"
    summary = "torchao int4 weight-only, group size 128 (CUDA tinygemm kernels; stack with bf16)"
    requires_packages = ("torchao",)
    requires_cuda = True  # torchao's int4 weight-only kernels are CUDA (tinygemm) here

    def apply(self, settings: Settings) -> None:
        def config() -> object:
            from torchao.quantization import Int4WeightOnlyConfig

            return Int4WeightOnlyConfig(group_size=128)

        add_torchao_transform(settings, self.name, config)
