from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import (
    BASELINE_ATTENTION,
    BASELINE_DTYPE,
    BASELINE_KV_CACHE,
    Settings,
)


class Baseline(Plugin):
    name = "baseline"
    summary = "pinned reference: fp32, eager attention, no KV cache (batch 1 is the workload's)"

    def apply(self, settings: Settings) -> None:
        # Pin every field explicitly, though each is the engine's default today: a library
        # default that changes must not move the baseline (and pinning is what it does).
        settings.pin("dtype", BASELINE_DTYPE, by=self.name)
        settings.pin("attn_implementation", BASELINE_ATTENTION, by=self.name)
        settings.pin("kv_cache", BASELINE_KV_CACHE, by=self.name)
