from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings
from infer_opt.plugins._bnb import use_bnb


class Int8BnB(Plugin):
    name = "int8-bnb"
    summary = "bitsandbytes LLM.int8: int8 weights, fp16/bf16 outlier columns (CPU and CUDA)"
    requires_packages = ("bitsandbytes", "accelerate")

    def apply(self, settings: Settings) -> None:
        use_bnb(settings, self.name, load_in_8bit=True)
