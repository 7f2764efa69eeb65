from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings


class KVCache(Plugin):
    name = "kv-cache"
    summary = "dynamic KV cache: each decode step feeds one token and appends its keys/values"

    def apply(self, settings: Settings) -> None:
        settings.set("kv_cache", "dynamic", by=self.name)
