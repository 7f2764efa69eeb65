from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings


class FlashAttention2(Plugin):
    name = "flash-attn2"
    summary = "FlashAttention-2 via the flash-attn package (CUDA, fp16/bf16)"
    requires_cuda = True
    requires_packages = ("flash_attn",)

    def apply(self, settings: Settings) -> None:
        settings.set("attn_implementation", "flash_attention_2", by=self.name)
