from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings


class BF16(Plugin):
    name = "bf16"
    summary = "weights and activations in bfloat16 (fp32 range, 8-bit mantissa)"
    engines = ("torch", "vllm")

    def apply(self, settings: Settings) -> None:
        settings.set("dtype", "bfloat16", by=self.name)
