"""SDPA with one backend forced, to see what each kernel buys on its own (CUDA only).

torch picks a kernel per call; forcing one with `torch.nn.attention.sdpa_kernel` makes the call
fail instead of silently falling back, so a row is really the kernel it names.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, ClassVar

from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings


class _ForcedSDPA(Plugin):
    backend_name: ClassVar[str] = ""
    requires_cuda = True

    def apply(self, settings: Settings) -> None:
        settings.set("attn_implementation", "sdpa", by=self.name)
        backend_name = self.backend_name

        def forced() -> AbstractContextManager[Any]:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            return sdpa_kernel(getattr(SDPBackend, backend_name))

        settings.contexts.append(forced)


class SDPAFlash(_ForcedSDPA):
    name = "sdpa-flash"
    summary = "SDPA forced to the FlashAttention kernel (fp16/bf16 on CUDA)"
    backend_name = "FLASH_ATTENTION"


class SDPAMemEfficient(_ForcedSDPA):
    name = "sdpa-mem-efficient"
    summary = "SDPA forced to the memory-efficient (xformers-style) kernel"
    backend_name = "EFFICIENT_ATTENTION"


class SDPAMath(_ForcedSDPA):
    name = "sdpa-math"
    summary = "SDPA forced to the reference math kernel"
    backend_name = "MATH"
