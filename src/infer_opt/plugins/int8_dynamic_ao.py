"""torch.ao's eager dynamic quantization (fbgemm int8 kernels on x86).

Deprecated in favour of torchao but still shipped in torch 2.13 and, on CPU without compile,
much faster than torchao's dynamic int8; the row says it uses the deprecated API.
"""

from __future__ import annotations

import warnings
from typing import Any

from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings


class Int8DynamicAO(Plugin):
    name = "int8-dynamic-ao"
    summary = ("torch.ao quantize_dynamic int8 Linear, per-channel weights (fbgemm; deprecated "
               "API, CPU, fp32 only)")

    needs_dtype = ("float32",)

    def unavailable_reason(self, settings: Settings) -> str | None:
        if settings.device != "cpu":
            return f"torch.ao dynamic quantization runs on CPU only (device is {settings.device})"
        return super().unavailable_reason(settings)

    def apply(self, settings: Settings) -> None:
        settings.notes.append(f"{self.name}: deprecated API torch.ao.quantization.quantize_dynamic")

        def transform(model: Any, s: Settings) -> Any:
            import torch

            with warnings.catch_warnings():  # its own deprecation warning, already in the notes
                warnings.simplefilter("ignore")
                # Per-output-channel weight scales; the lm_head (tied to the embeddings) stays
                # fp32: 8-bit activations into the 49k-way output layer cost most of the fidelity.
                head = model.get_output_embeddings()
                qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
                spec = {name: qconfig for name, m in model.named_modules()
                        if isinstance(m, torch.nn.Linear) and m is not head}
                return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)

        settings.model_transforms.append(transform)
