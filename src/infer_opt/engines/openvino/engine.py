"""OpenVINO engine: optimum-intel's stateful IR on OpenVINO's CPU plugin, stepped by the suite's
decode loop.

Real code against openvino (tested with 2026.4.1, optimum-intel 2.2.0, nncf 3.4.0; see README).
The IR is exported once per weight config (engines/openvino/export.py) and compiled here with
pinned properties: INFERENCE_NUM_THREADS = the suite's `threads`, PERFORMANCE_HINT LATENCY,
NUM_STREAMS 1, INFERENCE_PRECISION_HINT f32 (a CPU with bf16 units would otherwise compute in
bf16), KV_CACHE_PRECISION from the option `kv_cache_precision` (OpenVINO's own default is f16,
and so is ours: that is what a user gets; f32 is the option). The effective values of these and
of DYNAMIC_QUANTIZATION_GROUP_SIZE (OpenVINO's CPU plugin quantizes activations in groups of 32
for compressed weights by default) are read back from the compiled model into the row's notes.

Each step is one `infer` of the raw infer request, the way optimum-intel's own generate loop
drives it: input_ids, attention_mask (all ones: static batches have no padding), position_ids
and beam_idx = [0 .. B-1] (keep every row in place). The exported IR computes logits for every
fed position, so a prefill would pay the lm_head on the whole prompt; at load we insert a Slice
before the lm_head MatMul with a `logits_to_keep` input (what openvino-genai's pipeline does
with its SliceBeforeMatmul pass, and what the torch and ORT engines do), so the step returns
logits [B, K, V] for the last K positions only. The KV cache is the request's state:
`new_cache` resets it. Rows cannot join or leave a running batch (row_ops = False): the state
is opaque to the loop.

Weight-only quantization comes from `Settings.weights` (core/weights.py; set by the int4-wo /
int8-wo plugins: bits, group, symmetric), mapped to NNCF's OVWeightQuantizationConfig at export.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from infer_opt.core.memory import KVMemory
from infer_opt.core.models import ModelRef
from infer_opt.core.params import Param
from infer_opt.core.roofline import Weight, WeightBytes
from infer_opt.core.settings import Settings
from infer_opt.core.weights import WeightSupport
from infer_opt.engines.base import Engine, ModelFacts, StepInput
from infer_opt.engines.openvino import export as openvino_export

KV_PRECISIONS = {"f16": 2, "f32": 4}
# Ops that only decompress a constant weight (NNCF's int8/int4 pattern: Convert, Subtract the
# zero point, Multiply by the scale, Reshape groups back): a weight is used by what follows them.
DECOMPRESSION = {"Convert", "Subtract", "Multiply", "Reshape", "Unsqueeze", "Transpose"}
# Constant element types that are shapes and axes, not weights.
INDEX_TYPES = {"i32", "i64", "boolean", "u1"}


def precision(value: Any) -> str:
    """An OpenVINO element type property as its short name (f32, f16, bf16)."""
    name = getattr(value, "to_string", None)
    return str(name() if callable(name) else value)


def ir_weights(model: Any) -> WeightBytes:
    """Every weight constant of an ov.Model as stored (u4/u8 data, f16 scales and zero points
    count separately), with what a decode step reads of it: a table reached only by Gather
    (through its decompression ops) is an embedding read by lookup, one row per token; one
    reached by Gather and MatMul is the tied lm_head's table, read in full (core/roofline.py)."""
    const_only: dict[str, bool] = {}

    def is_const(node: Any) -> bool:
        name = node.get_friendly_name()
        if name not in const_only:
            kind = node.get_type_name()
            const_only[name] = kind == "Constant" or (
                kind in DECOMPRESSION and all(is_const(i.get_source_output().get_node())
                                              for i in node.inputs()))
        return const_only[name]

    def users(node: Any) -> set[str]:
        found: set[str] = set()
        for target in node.output(0).get_target_inputs():
            user = target.get_node()
            found |= users(user) if is_const(user) else {user.get_type_name()}
        return found

    weights: list[Weight] = []
    uses: dict[str, set[str]] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant":
            continue
        et = op.get_element_type()
        if et.get_type_name() in INDEX_TYPES:
            continue
        shape = [int(d) for d in op.get_output_shape(0)]
        elements = int(np.prod(shape, dtype=np.int64)) if shape else 1
        name = op.get_friendly_name()
        uses[name] = users(op)
        lookup = uses[name] == {"Gather"} and len(shape) == 2
        weights.append(Weight(name, elements, (elements * et.bitwidth + 7) // 8,
                              lookup_rows=shape[0] if lookup else 0))
    tied = [w.name for w in weights if {"Gather", "MatMul"} <= uses[w.name]]
    # The table itself (not its scale or zero point): the largest of them.
    table = max(tied, key=lambda n: next(w.stored_bytes for w in weights if w.name == n),
                default=None)
    return WeightBytes(tuple(weights), tied_lm_head=table)


def keep_logits_input(model: Any) -> None:
    """Give the IR an input `logits_to_keep` (i64 scalar K): the hidden states are sliced to
    their last K positions before the lm_head MatMul, so logits are [B, K, V] (in place)."""
    import openvino as ov
    import openvino.opset13 as ops

    node = model.output("logits").get_node().input(0).get_source_output().get_node()
    for _ in range(8):  # from the Result back to the lm_head MatMul (through a Convert, say)
        if node.get_type_name() == "MatMul":
            break
        node = node.input(0).get_source_output().get_node()
    else:
        raise RuntimeError("no lm_head MatMul found before the logits output")
    keep = ops.parameter([], ov.Type.i64, name="logits_to_keep")
    keep.output(0).get_tensor().set_names({"logits_to_keep"})

    def i64(value: int) -> Any:
        return ops.constant(np.array([value], np.int64))

    start = ops.unsqueeze(ops.negative(keep), ops.constant(np.array([0], np.int64)))
    hidden = ops.slice(node.input(0).get_source_output(), start,
                       i64(np.iinfo(np.int64).max), i64(1), i64(1))  # [B, K, H]
    node.input(0).replace_source_output(hidden.output(0))
    model.add_parameters([keep])
    model.validate_nodes_and_infer_types()


@dataclass
class State:
    """The request's KV state for `batch` rows holding `length` positions."""

    batch: int
    length: int
    serial: int


class OpenVINOEngine(Engine):
    name = "openvino"
    summary = "OpenVINO (optimum-intel's stateful IR), stepped by the suite's loop"
    requires_packages = ("openvino", "optimum.intel", "nncf")
    environment = ".venv-openvino"
    dtypes = ("float32",)  # INFERENCE_PRECISION_HINT f32, pinned
    attn_implementations = ()  # OpenVINO's fused SDPA
    kv_caches = ("dynamic",)
    honours = frozenset({"step_wrappers", "contexts"})
    row_ops = False
    weight_quant = (
        WeightSupport(4, groups=openvino_export.GROUPS_4BIT,
                      how="NNCF 4-bit, blocks that divide every input width, the embedding "
                          "and tied lm_head in 8 bits"),
        WeightSupport(8, groups=(), how="NNCF 8-bit, per output channel"),
    )
    options = (
        Param("kv_cache_precision", str, "f16", "KV_CACHE_PRECISION of the CPU plugin "
              "(OpenVINO's default f16)", choices=tuple(KV_PRECISIONS)),
        Param("dynamic_quantization_group_size", int, None, "activations quantized in groups "
              "of this size for compressed weights (unset: OpenVINO's default, 32 on CPU; 0: "
              "off)", minimum=0),
    )

    @classmethod
    def defaults(cls, settings: Settings) -> None:
        settings.set("attn_implementation", "openvino", by=cls.name)
        settings.set("kv_cache", "dynamic", by=cls.name)

    @classmethod
    def check_settings(cls, settings: Settings) -> str | None:
        """Why the weight options cannot be exported (one line), or None."""
        try:
            cls.weight_config(settings)
        except ValueError as exc:
            return str(exc)
        return None

    @staticmethod
    def weight_config(settings: Settings) -> dict[str, Any] | None:
        wq = settings.weights
        if wq is None:
            return None
        return openvino_export.weight_config(wq.bits, wq.group, wq.symmetric)

    def __init__(self, ref: ModelRef, settings: Settings) -> None:
        import openvino as ov

        self.settings = settings
        opts = settings.options
        threads = torch.get_num_threads()  # the suite's `threads`
        config = self.weight_config(settings)
        kv = opts.get("kv_cache_precision", "f16")
        t0 = time.perf_counter()
        xml, export_s = openvino_export.ensure_ir(ref.path, config)
        core = ov.Core()
        model = core.read_model(str(xml))
        weights = ir_weights(model)  # before the edit below (it adds only index constants)
        keep_logits_input(model)
        properties: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": kv}
        if opts.get("dynamic_quantization_group_size") is not None:
            properties["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = opts["dynamic_quantization_group_size"]
        self.compiled = core.compile_model(model, "CPU", properties)
        self.request = self.compiled.create_infer_request()
        load_s = time.perf_counter() - t0
        self._serial = 0

        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(ref.path, trust_remote_code=False)
        heads = int(cfg.num_attention_heads)
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        actual_kv = precision(self.compiled.get_property("KV_CACHE_PRECISION"))
        self.kv_precision = actual_kv  # what the compiled model reports, not what was asked
        elem = KV_PRECISIONS.get(actual_kv, 2)
        self.facts = ModelFacts(
            weight_bytes=sum(w.stored_bytes for w in weights.weights),
            kv_bytes_per_token=2 * int(cfg.num_hidden_layers) * kv_heads * head_dim * elem,
            load_s=load_s, weights=weights, kv_element_bytes=elem,
            query_groups=heads // kv_heads, extra={"ir": str(xml)})
        dq = self.compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")
        note = (f"openvino {ov.get_version().split('-')[0]} CPU, {threads} threads, weights "
                f"{openvino_export.label(config)}, inference precision "
                f"{precision(self.compiled.get_property('INFERENCE_PRECISION_HINT'))}, KV cache "
                f"{actual_kv}")
        if config is not None:
            note += (f", activations quantized dynamically in groups of {dq}" if dq else
                     ", no dynamic activation quantization")
        note += "; logits of the last position only (a Slice before the lm_head, added at load)"
        if export_s:
            note += f"; exported in {export_s:.1f} s (in load_s)"
        settings.notes.append(note)
        self.step = self.wrap_step(self._forward)  # type: ignore[method-assign]

    def _infer(self, ids: np.ndarray, start: int, keep: int) -> np.ndarray:
        """Feed ids [B, T] at positions start..; the request's logits of the last `keep`
        positions, [B, keep, V] (a view of the request's output tensor)."""
        batch, length = ids.shape
        self.request.infer({
            "input_ids": ids.astype(np.int64),
            "attention_mask": np.ones((batch, start + length), np.int64),
            "position_ids": np.broadcast_to(np.arange(start, start + length, dtype=np.int64),
                                            (batch, length)).copy(),
            "beam_idx": np.arange(batch, dtype=np.int32),
            "logits_to_keep": np.array(keep, np.int64),
        })
        return self.request.get_tensor("logits").data

    def _forward(self, inp: StepInput) -> torch.Tensor:
        """The raw step: new tokens of every row on top of the request's state -> [B, K, V]."""
        state = inp.cache
        if not isinstance(state, State) or state.serial != self._serial:
            raise RuntimeError("the OpenVINO request holds one KV state: step on the latest "
                               "new_cache")
        if inp.attention_mask is not None:
            raise ValueError("the openvino engine runs unpadded static batches")
        ids = inp.input_ids.cpu().numpy()
        start = int(inp.position_ids[0, 0])
        if start != state.length or ids.shape[0] != state.batch:
            raise ValueError(f"step at position {start} for {ids.shape[0]} rows does not "
                             f"continue the state ({state.batch} rows, {state.length} cached)")
        logits = self._infer(ids, start, inp.logits_to_keep)
        state.length += ids.shape[1]
        return torch.from_numpy(np.array(logits))  # a copy: the request reuses its buffer

    # --- step API --------------------------------------------------------------------------
    def new_cache(self, batch_size: int, max_len: int) -> State:
        self.request.reset_state()
        self._serial += 1
        return State(batch=batch_size, length=0, serial=self._serial)

    def kv_memory(self, cache: Any, length: int) -> KVMemory | None:
        """The request state's precision as compiled; bytes from the shapes (the plugin's own
        allocation is not exposed: allocated = used)."""
        rows = cache.batch if isinstance(cache, State) else 1
        used = round(self.facts.kv_bytes_per_token * rows * length)
        return KVMemory(dtype=self.kv_precision, bytes_per_token=self.facts.kv_bytes_per_token,
                        allocated_bytes=used, used_bytes=used)

    def kv(self, cache: Any, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError("OpenVINO's KV cache is the request's state (row_ops)")

    def cache_from_kv(self, kv: Any, max_len: int) -> Any:
        raise NotImplementedError("OpenVINO's KV cache is the request's state (row_ops)")

    # --- fidelity --------------------------------------------------------------------------
    def score(self, ids: torch.Tensor) -> torch.Tensor:
        """One teacher-forced infer of the whole sequences from an empty state: [B, T, V]."""
        with self.context():
            self.new_cache(ids.shape[0], ids.shape[1])
            logits = self._infer(ids.cpu().numpy(), 0, ids.shape[1])
        return torch.from_numpy(np.array(logits, dtype=np.float32))
