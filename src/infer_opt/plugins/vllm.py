from infer_opt.core.plugin import Plugin, Settings


class VLLM(Plugin):
    """vLLM serves the batch with its own scheduler, paged KV cache and kernels.

    Engine flags go in `Settings.options` under "vllm_*" keys (see backends/vllm_backend.py);
    a plugin stacked after this one may set them, e.g. options["vllm_enable_prefix_caching"].
    """

    name = "vllm"
    summary = "vLLM engine (LLM + SamplingParams, token-id prompts, paged KV cache)"
    requires_packages = ("vllm",)

    def apply(self, settings: Settings) -> None:
        settings.set("backend", "vllm", by=self.name)
        # vLLM always decodes from its paged KV cache.
        settings.set("kv_cache", "dynamic", by=self.name)
