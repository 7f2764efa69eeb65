"""Weight-only quantization as one concept across engines (plugins int4-wo and int8-wo).

On torch a torchao config quantizes every nn.Linear after loading. Every other engine that
supports weight-only quantization declares these typed options, and the plugin sets them:

    weight_bits       int   4 or 8
    weight_group      int   weights per block along K (one scale, and zero point, per block)
    weight_symmetric  bool  no zero point (scale only)
    accuracy_level    int   ONNX Runtime's MatMulNBits compute precision (ORT engines only)
    lm_head           str   "int8" or "fp32": the output projection (the largest matrix of a
                            small model; the decoder's Linears get `weight_bits`); optional:
                            an engine without it treats the lm_head its own way

so a new engine (OpenVINO, ...) joins the same plugins by declaring the options and adding its
name to the plugins' `engines`. The plugin sets accuracy_level only on engines that declare it,
and refuses an explicit `accuracy` on one that does not. What each engine ran (block size,
symmetry, kernel) is in the row's notes.
"""

from __future__ import annotations

from typing import ClassVar

from infer_opt.core import registry
from infer_opt.core.errors import UserError
from infer_opt.core.params import Param
from infer_opt.core.plugin import Plugin, missing_package
from infer_opt.core.settings import Settings

ENGINES = ("torch", "ort", "ort-genai", "openvino")

# The parameters int4-wo and int8-wo share (their group and symmetry defaults differ).
ACCURACY = Param("accuracy", int, None, "ONNX Runtime accuracy_level (0 fp32 .. 4 int8 "
                 "activations); engine default 4", minimum=0, maximum=4)
LM_HEAD = Param("lm_head", str, None, "the lm_head's weights: int8 (the default; torch: torchao "
                "int8 weight-only per channel; ORT: MatMulNBits 8-bit, block 32, symmetric) or "
                "fp32; engines without an lm_head option (OpenVINO) treat it their own way",
                choices=("int8", "fp32"))


def torchao_reason(settings: Settings) -> str | None:
    """On torch the plugins need torchao; other engines quantize with their own tools."""
    return missing_package(("torchao",)) if settings.engine == "torch" else None


def set_weight_options(settings: Settings, by: str, bits: int, group: int | None,
                       symmetric: bool, accuracy: int | None, lm_head: str | None) -> None:
    """The weight-only options on a non-torch engine (declared by the engine; the stack check
    refuses one it does not declare)."""
    declared = {p.name for p in registry.load("engine", settings.engine).options}
    settings.set_option("weight_bits", bits, by=by)
    if group is not None:
        settings.set_option("weight_group", group, by=by)
    settings.set_option("weight_symmetric", symmetric, by=by)
    if "lm_head" in declared:
        settings.set_option("lm_head", lm_head or "int8", by=by)
    elif lm_head is not None:
        raise UserError("variant", f"'{by}': engine {settings.engine} has no lm_head option "
                                   "(it quantizes the lm_head its own way, see its notes)")
    if "accuracy_level" in declared:
        if accuracy is not None:
            settings.set_option("accuracy_level", accuracy, by=by)
    elif accuracy is not None:
        raise UserError("variant", f"'{by}': accuracy is ONNX Runtime's accuracy_level; engine "
                                   f"{settings.engine} has no such option")


def refuse_on_torch(by: str, what: str) -> UserError:
    return UserError("variant", f"'{by}' on torch: {what}")


class WeightOnly(Plugin):
    """What int4-wo and int8-wo share: one weight quantization per stack; on other engines the
    engine options; on torch the subclass's torchao recipe (`apply_torch`)."""

    bits: ClassVar[int]
    engines = ENGINES

    def unavailable_reason(self, settings: Settings) -> str | None:
        return torchao_reason(settings)

    def apply(self, settings: Settings) -> None:
        settings.exclusive("weight quantization", by=self.name)
        if settings.engine != "torch":
            set_weight_options(settings, self.name, self.bits, self.values["group"],
                               self.values["symmetric"], self.values["accuracy"],
                               self.values["lm_head"])
            return
        if self.values["accuracy"] is not None:
            raise refuse_on_torch(self.name, "accuracy is ONNX Runtime's accuracy_level")
        self.apply_torch(settings, self.values["group"], self.values["lm_head"] or "int8")

    def apply_torch(self, settings: Settings, group: int | None, lm_head: str) -> None:
        raise NotImplementedError
