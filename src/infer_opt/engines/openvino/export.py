"""The model as an OpenVINO IR, exported once by optimum-intel and cached (engine `openvino`).

`OVModelForCausalLM.from_pretrained(model_dir, export=True)` traces the checkpoint into a
*stateful* IR: inputs input_ids, attention_mask, position_ids [B, T] and beam_idx [B]; output
logits [B, T, V]; the KV cache lives in the infer request's state variables. With a weight
config, NNCF compresses the weights while exporting (OVWeightQuantizationConfig):

    weight_bits 8   per output channel (NNCF's 8-bit mode has no groups), symmetric or not
    weight_bits 4   blocks of weight_group (16, 32 or 64: a block must divide every input
                    width, and SmolLM2's hidden size 576 is not a multiple of 128), ratio 1.0
                    (every projection in 4 bits; NNCF keeps the embedding table, which is also
                    the tied lm_head, in 8 bits as its backup precision)

Without one, `load_in_8bit=False` says so explicitly: optimum-intel compresses models above 1B
parameters to int8 by default. The export runs in a child process (core/artifacts.cached_build)
and is cached under
<cache>/openvino/<model>-<config>-<hash>, keyed by the model's content, the weight config and
the versions of optimum-intel, openvino, nncf, transformers and torch (core/artifacts.py).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from infer_opt.core.artifacts import build_dir, cached_build, child_threads, version

# Bump when the export recipe changes, so cached IRs are not reused.
RECIPE_VERSION = 1
XML = "openvino_model.xml"
GROUPS_4BIT = (16, 32, 64)


def weight_config(bits: int | None, group: int | None, symmetric: bool | None
                  ) -> dict[str, Any] | None:
    """Keyword arguments of OVWeightQuantizationConfig for the engine's weight options, or None
    for uncompressed fp32 weights. Raises ValueError (one line) for what NNCF cannot do."""
    if bits is None:
        if group is not None or symmetric is not None:
            raise ValueError("weight_group and weight_symmetric need weight_bits")
        return None
    if bits == 8:
        if group is not None:
            raise ValueError("OpenVINO's 8-bit weight compression is per output channel; "
                             "weight_group applies to 4 bits")
        return {"bits": 8, "sym": bool(symmetric)}
    if bits == 4:
        group = 32 if group is None else group
        if group not in GROUPS_4BIT:
            raise ValueError(f"weight_group {group}: OpenVINO 4-bit blocks here are "
                             f"{', '.join(map(str, GROUPS_4BIT))} (a block must divide every "
                             "input width; SmolLM2's 576 is not a multiple of 128)")
        return {"bits": 4, "group_size": group, "sym": bool(symmetric), "ratio": 1.0}
    raise ValueError(f"weight_bits must be 4 or 8, got {bits}")


def label(config: dict[str, Any] | None) -> str:
    if config is None:
        return "fp32"
    sym = "sym" if config["sym"] else "asym"
    if config["bits"] == 8:
        return f"int8-{sym}"
    return f"int4-g{config['group_size']}-{sym}"


def ir_dir(model_path: str, config: dict[str, Any] | None) -> Path:
    key = {"recipe": RECIPE_VERSION, "weights": config,
           **{pkg: version(pkg) for pkg in ("optimum-intel", "openvino", "nncf", "transformers",
                                            "torch")}}
    return build_dir("openvino", model_path, key, label(config))


def ensure_ir(model_path: str, config: dict[str, Any] | None) -> tuple[Path, float]:
    """(the IR's .xml, seconds spent exporting: 0.0 when cached)."""
    target = ir_dir(model_path, config)
    seconds = cached_build(target, functools.partial(export, model_path, config=config),
                           done=XML, child=True, what=f"OpenVINO export ({label(config)})")
    return target / XML, seconds


def export(model_path: str, out: Path, config: dict[str, Any] | None) -> None:
    """In the build child: export (and compress) with optimum-intel, save the IR in `out`."""
    import torch

    torch.set_num_threads(child_threads())
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig

    kwargs: dict[str, Any] = {}
    if config is None:
        kwargs["load_in_8bit"] = False  # optimum-intel's default compresses > 1B models
    else:
        kwargs["quantization_config"] = OVWeightQuantizationConfig(**config)
    model = OVModelForCausalLM.from_pretrained(model_path, export=True, compile=False,
                                               trust_remote_code=False,
                                               **kwargs)
    model.save_pretrained(out)
