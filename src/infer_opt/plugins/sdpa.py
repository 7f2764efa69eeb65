from infer_opt.core.plugin import Plugin, Settings


class SDPA(Plugin):
    name = "sdpa"
    summary = "torch scaled_dot_product_attention (fused kernel chosen by torch)"

    def apply(self, settings: Settings) -> None:
        settings.set("attn_implementation", "sdpa", by=self.name)
