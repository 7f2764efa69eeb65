from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings


class SDPA(Plugin):
    name = "sdpa"
    summary = "torch scaled_dot_product_attention (fused kernel chosen by torch)"
    engines = ("torch", "ort")  # ort: the graph is exported with SDPA attention

    def apply(self, settings: Settings) -> None:
        settings.set("attn_implementation", "sdpa", by=self.name)
