from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings


class StaticCachePlugin(Plugin):
    name = "static-cache"
    summary = "KV cache preallocated to prompt+new tokens (fixed shapes; what compile needs)"

    def apply(self, settings: Settings) -> None:
        settings.set("kv_cache", "static", by=self.name)
