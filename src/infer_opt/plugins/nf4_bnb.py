"""bitsandbytes 4-bit weights. The compute dtype is left unset: bnb then computes in the
dtype of the activations, i.e. the variant's dtype (fp32, or bf16 with `+bf16`)."""

from typing import ClassVar

from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings
from infer_opt.plugins._bnb import use_bnb


class NF4BnB(Plugin):
    name = "nf4-bnb"
    summary = "bitsandbytes 4-bit NormalFloat weights (QLoRA's NF4), blockwise absmax scales"
    requires_packages = ("bitsandbytes", "accelerate")
    quant_type: ClassVar[str] = "nf4"

    def apply(self, settings: Settings) -> None:
        use_bnb(settings, self.name, load_in_4bit=True, bnb_4bit_quant_type=self.quant_type)


class FP4BnB(NF4BnB):
    name = "fp4-bnb"
    summary = "bitsandbytes 4-bit float (FP4) weights, blockwise absmax scales"
    quant_type = "fp4"
