"""Shared by the bitsandbytes plugins: load-time quantization through transformers."""

from __future__ import annotations

import logging
from typing import Any

from infer_opt.core.settings import Settings


def use_bnb(settings: Settings, by: str, **config: Any) -> None:
    from transformers import BitsAndBytesConfig

    if "quantization_config" in settings.load_kwargs:
        from infer_opt.core.errors import UserError

        owner = settings.owners.get("load_kwargs.quantization_config", "another plugin")
        raise UserError("variant", f"'{by}' and '{owner}' both quantize at load time; keep one")
    settings.load_kwargs["quantization_config"] = BitsAndBytesConfig(**config)
    settings.owners["load_kwargs.quantization_config"] = by
    # bnb places the quantized weights itself (accelerate); `.to(device)` is refused after.
    settings.load_kwargs["device_map"] = {"": settings.device}
    # LLM.int8 logs a dtype-cast warning on every forward call (tens of thousands of lines in a
    # run); the numbers are unaffected, so keep only errors from this logger.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
