from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings


class FP16(Plugin):
    name = "fp16"
    summary = "weights and activations in float16 (half the bytes of fp32; narrow range)"
    engines = ("torch", "ort", "vllm")

    def apply(self, settings: Settings) -> None:
        settings.set("dtype", "float16", by=self.name)
