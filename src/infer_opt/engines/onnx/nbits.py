"""Weight-only quantized copies of an ONNX decoder graph (MatMulNBits), cached beside it.

Two ways to get 4-bit (or 8-bit) weights into a graph, one cache:

- `rtn`: onnxruntime's MatMulNBitsQuantizer (round to nearest, per block of `block` weights
  along K, symmetric or with a uint zero point) on every projection MatMul; works on the
  `ort` export and on the `ort-genai` fused graph alike.
- `gguf-q4`: the GGUF's own Q4_0/Q4_1 blocks carried over bit for bit (gguf_blocks.py), on the
  `ort-genai` graph (its projection MatMuls are named per layer). For Q4_1 the additive part
  of each block, (m + 8d) * sum(x over the block), is computed beside the MatMulNBits in fp32:

      s  = ReduceSum(Reshape(x, [.., K/32, 32]), -1)       once per distinct input x
      y  = MatMulNBits(x; q, d) + s @ (m + 8d)^T

  gate_proj and up_proj read the same input and can run as one MatMulNBits of N = 2 * ffn
  followed by one min-term MatMul and a Split (`fuse_gate_up`), which saves nodes per layer.

The lm_head (tied to the embedding table in SmolLM2) stays fp32 unless `lm_head = "int8"`:
MatMulNBits bits 8, block 32, symmetric, from the GGUF's Q8_0 blocks when the weights come from
the GGUF (exact), else round-to-nearest of the fp32 table. It always runs at accuracy_level 4:
ONNX Runtime's only fast 8-bit CPU kernel (int8 activations); levels 0-3 took ~400 ms per call
here. The embedding lookup keeps reading the fp32 table.

Each copy is written once by a child process (core/artifacts.cached_build), so the fp32 graph it
loads never counts in the measuring process's memory, and published under a lock with atomic
renames as `model.<tag>.onnx` + `.data` beside the graph it was made from. The tag names
every choice (and the GGUF's content digest), so two variants never share a file.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infer_opt.core.artifacts import cached_build, file_digest
from infer_opt.core.errors import UserError
from infer_opt.core.models import source_gguf
from infer_opt.core.settings import Settings
from infer_opt.core.weights import LM_HEADS, WeightSupport

MS_DOMAIN = "com.microsoft"
# Bump when a rewrite below changes, so old copies are not reused.
NBITS_RECIPE_VERSION = 1
LM_HEAD_ACCURACY = 4
# onnxruntime-genai's projection MatMuls: /model/layers.{i}/{attn|mlp}/{name}/MatMul
GENAI_PROJECTION = re.compile(r"^/model/layers\.(\d+)/(attn|mlp)/(\w+)/MatMul$")
# Which transformers projections each of the genai graph's MatMuls holds (qkv fused by default).
GENAI_PARTS = {"qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
               "q_proj": ("self_attn.q_proj",), "k_proj": ("self_attn.k_proj",),
               "v_proj": ("self_attn.v_proj",), "o_proj": ("self_attn.o_proj",),
               "gate_proj": ("mlp.gate_proj",), "up_proj": ("mlp.up_proj",),
               "down_proj": ("mlp.down_proj",)}


@dataclass(frozen=True)
class WeightSpec:
    """What the weights of a graph are. `source`: fp32 (the graph as built), rtn (quantized by
    MatMulNBitsQuantizer: bits, block, symmetric, accuracy) or gguf-q4 (the GGUF at `gguf`,
    accuracy, fuse_gate_up). `lm_head`: fp32 or int8."""

    source: str = "fp32"
    bits: int = 4
    block: int = 32
    symmetric: bool = False
    accuracy: int = 4
    lm_head: str = "fp32"
    fuse_gate_up: bool = True
    block_sums: str = "reduce"
    gguf: str = ""
    gguf_digest: str = ""

    def tag(self) -> str | None:
        """File tag of the copy; None: the graph as built."""
        lm = "" if self.lm_head == "fp32" else "-lm8"
        if self.source == "fp32":
            return None if not lm else f"v{NBITS_RECIPE_VERSION}{lm}"
        if self.source == "rtn":
            sym = "sym" if self.symmetric else "asym"
            return (f"rtn-v{NBITS_RECIPE_VERSION}-b{self.bits}-g{self.block}-{sym}"
                    f"-acc{self.accuracy}{lm}")
        if self.source == "gguf-q4":
            fused = "-gateup" if self.fuse_gate_up else ""
            sums = "" if self.block_sums == "reduce" else f"-sums{self.block_sums}"
            return (f"gguf-v{NBITS_RECIPE_VERSION}-acc{self.accuracy}{fused}{sums}{lm}"
                    f"-{self.gguf_digest[:12]}")
        raise ValueError(f"unknown weight source {self.source!r}")

    def describe(self) -> str:
        """For the row's notes."""
        lm = ("lm_head fp32" if self.lm_head == "fp32" else
              f"lm_head 8-bit (block 32, symmetric, accuracy_level {LM_HEAD_ACCURACY})")
        if self.source == "fp32":
            return f"fp32 weights, {lm}"
        if self.source == "rtn":
            return (f"MatMulNBits {self.bits}-bit, block {self.block}, "
                    f"{'symmetric' if self.symmetric else 'asymmetric'} round-to-nearest "
                    f"(MatMulNBitsQuantizer), accuracy_level {self.accuracy}, {lm}")
        return (f"GGUF blocks carried over ({Path(self.gguf).name}: MatMulNBits 4-bit, block 32, "
                f"scale d, fp32 min term{', gate+up fused' if self.fuse_gate_up else ''}"
                f"{', block sums by the MatMulNBits' if self.block_sums == 'nbits' else ''}), "
                f"accuracy_level {self.accuracy}, {lm}")


# What ort and ort-genai run (Engine.weight_quant, core/weights.py): a MatMulNBits copy of the
# graph, made by MatMulNBitsQuantizer (round to nearest; blocks are powers of two >= 16).
MATMUL_NBITS = tuple(
    WeightSupport(bits, groups=(16, 32, 64, 128, 256), lm_head=LM_HEADS, accuracy=True,
                  how=f"MatMulNBits {bits}-bit, round to nearest, blocks of 16 to 256")
    for bits in (4, 8))
# ort-genai: the GGUF's own 4-bit blocks carried over (its block size and zero points).
GGUF_BLOCKS = WeightSupport(4, source="gguf", groups=(), symmetric=(), lm_head=LM_HEADS,
                            accuracy=True, how="the GGUF's own 4-bit blocks as MatMulNBits")


def weight_spec(settings: Settings, model_name: str) -> WeightSpec:
    """Settings.weights (and ort-genai's gguf/fuse_gate_up/block_sums options) as a WeightSpec;
    the stack has checked them against MATMUL_NBITS / GGUF_BLOCKS. Weights with int8
    activations (ort's quantize_dynamic) are not a MatMulNBits copy: fp32 here."""
    wq, o = settings.weights, settings.options
    if wq is None or wq.activations != "none":
        return WeightSpec()
    accuracy = 4 if wq.accuracy is None else wq.accuracy
    lm_head = wq.lm_head or "int8"
    if wq.source == "gguf":
        path = o.get("gguf") or source_gguf(model_name)
        if path is None:
            raise UserError("engine options", f"gguf-q4: no GGUF known for model "
                                              f"{model_name!r}; set gguf=<path>")
        return WeightSpec(source="gguf-q4", accuracy=accuracy, lm_head=lm_head,
                          fuse_gate_up=bool(o.get("fuse_gate_up", True)),
                          block_sums=o.get("block_sums") or "reduce", gguf=str(path),
                          gguf_digest=file_digest(Path(path)))
    return WeightSpec(source="rtn", bits=wq.bits, block=wq.group or 32,
                      symmetric=(wq.bits == 8) if wq.symmetric is None else wq.symmetric,
                      accuracy=accuracy, lm_head=lm_head)


# --- graph helpers ----------------------------------------------------------------------------


class Graph:
    """A ModelProto being rewritten: initializers by name, nodes in order."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.g = model.graph
        self.inits = {i.name: i for i in self.g.initializer}
        self.new_inits: list[Any] = []
        self.drop: set[str] = set()

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name])

    def add(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.new_inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def consumers(self, name: str) -> list[Any]:
        return [n for n in self.g.node if name in n.input]

    def finish(self, nodes: list[Any]) -> None:
        from onnx import helper

        used = {i for n in nodes for i in n.input}
        keep = [i for i in self.g.initializer if i.name not in self.drop or i.name in used]
        del self.g.initializer[:]
        self.g.initializer.extend(keep + self.new_inits)
        del self.g.node[:]
        self.g.node.extend(nodes)
        if not any(o.domain == MS_DOMAIN for o in self.model.opset_import):
            self.model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


def matmul_nbits(x: str, b: str, scales: str, out: str, k: int, n: int, bits: int,
                 accuracy: int, name: str) -> Any:
    from onnx import helper

    return helper.make_node("MatMulNBits", [x, b, scales], [out], name=name, domain=MS_DOMAIN,
                            K=k, N=n, bits=bits, block_size=32, accuracy_level=accuracy)


def lm_head_node(model: Any) -> Any:
    """The MatMul that produces the graph's `logits` output."""
    for node in model.graph.node:
        if node.op_type == "MatMul" and "logits" in node.output:
            return node
    raise ValueError("no MatMul produces the graph's 'logits' output")


def _lm_head_weight(graph: Graph, node: Any) -> np.ndarray:
    """The lm_head weight [V, K] (rows = vocabulary), from an initializer B [K, V] or a
    Transpose of a [V, K] initializer (a tied table)."""
    b = node.input[1]
    if b in graph.inits:
        return graph.array(b).T
    producer = next((n for n in graph.g.node if b in n.output), None)
    if producer is not None and producer.op_type == "Transpose" and producer.input[0] in graph.inits:
        return graph.array(producer.input[0])
    raise ValueError(f"cannot find the weight of the lm_head MatMul {node.name!r}")


def rtn_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric 8-bit round to nearest per block of 32 along K: w [N, K] ->
    (B uint8 [N, K/32, 32] = q + 128, scales float32 [N, K/32]); the format of GGUF's Q8_0."""
    n, k = w.shape
    blocks = w.reshape(n, k // 32, 32).astype(np.float32)
    d = np.abs(blocks).max(axis=-1) / np.float32(127.0)
    inv = np.where(d == 0, np.float32(0.0), np.float32(1.0) / np.where(d == 0, 1, d))
    q = np.clip(np.rint(blocks * inv[..., None]), -127, 127).astype(np.int16) + 128
    return q.astype(np.uint8), d.astype(np.float32)


def lm_head_int8(model: Any, blocks: tuple[np.ndarray, np.ndarray] | None = None) -> Any:
    """Replace the lm_head MatMul by MatMulNBits bits 8 (blocks given: the GGUF's Q8_0,
    checked against the fp32 weight; else round to nearest)."""
    graph = Graph(model)
    node = lm_head_node(model)
    w = _lm_head_weight(graph, node)
    if blocks is None:
        b8, s8 = rtn_int8(w)
    else:
        b8, s8 = blocks
        deq = (s8[..., None] * (b8.astype(np.float32) - np.float32(128.0))).reshape(w.shape)
        if not np.array_equal(deq, w):
            raise ValueError("the GGUF's Q8_0 lm_head blocks differ from the model's lm_head "
                             "weight: is this the GGUF the model was converted from?")
    n, k = w.shape
    nodes = []
    for nd in model.graph.node:
        if nd is node:
            nodes.append(matmul_nbits(nd.input[0], graph.add("lm_head.int8.B", b8),
                                      graph.add("lm_head.int8.scales", s8), nd.output[0],
                                      k, n, 8, LM_HEAD_ACCURACY, nd.name + "_int8"))
            if nd.input[1] in graph.inits:
                graph.drop.add(nd.input[1])  # kept if the embedding Gather still reads it
        else:
            nodes.append(nd)
    graph.finish(nodes)
    return model


def quantize_rtn(model: Any, bits: int, block: int, symmetric: bool, accuracy: int) -> Any:
    """Every MatMul with a constant weight, except the lm_head, through onnxruntime's
    MatMulNBitsQuantizer."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric,
                                          accuracy_level=accuracy, bits=bits,
                                          op_types_to_quantize=("MatMul",))
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=symmetric,
                                     accuracy_level=accuracy,
                                     nodes_to_exclude=[lm_head_node(model).name],
                                     algo_config=config)
    quantizer.process()
    return quantizer.model.model


def sum_columns(k: int) -> tuple[np.ndarray, np.ndarray]:
    """K/32 extra MatMulNBits columns whose outputs are the input's block sums: column b has
    code 9 (weight (9 - 8) * 1 = 1) on block b's rows and 8 (weight 0) elsewhere, scale 1.
    -> (packed uint8 [K/32, K/32, 16], scales float32 [K/32, K/32])."""
    kb = k // 32
    packed = np.full((kb, kb, 16), 0x88, np.uint8)
    packed[np.arange(kb), np.arange(kb)] = 0x99
    return packed, np.ones((kb, kb), np.float32)


def inject_gguf(model: Any, gguf_path: str, accuracy: int, fuse_gate_up: bool = True,
                block_sums: str = "reduce") -> Any:
    """Replace every projection MatMul of an onnxruntime-genai graph by MatMulNBits holding the
    GGUF's own blocks (module docstring); each one is checked to dequantize exactly to the
    MatMul's fp32 weight, so a GGUF that is not the model's source is refused."""
    from onnx import helper

    from infer_opt.engines.onnx.gguf_blocks import GGUFWeights, Q4Blocks

    weights = GGUFWeights(gguf_path)
    graph = Graph(model)
    sums: dict[str, str] = {}  # input tensor -> its per-block sums
    shape = None
    by_layer: dict[tuple[int, str], Any] = {}
    for node in model.graph.node:
        m = GENAI_PROJECTION.match(node.name) if node.op_type == "MatMul" else None
        if m and m.group(3) in GENAI_PARTS:
            by_layer[(int(m.group(1)), m.group(3))] = node
    if not by_layer:
        raise ValueError("no onnxruntime-genai projection MatMul found (/model/layers.N/...)")

    def blocks_for(layer: int, node: Any, part_names: tuple[str, ...]) -> Q4Blocks:
        parts = [weights.projection(layer, p) for p in part_names]
        mins = None
        if any(p.mins is not None for p in parts):  # Q4_0 parts add 0 in a mixed fusion
            mins = np.concatenate([p.mins if p.mins is not None else
                                   -np.float32(8.0) * p.scales for p in parts])
        blocks = Q4Blocks(np.concatenate([p.packed for p in parts]),
                          np.concatenate([p.scales for p in parts]), mins)
        w = graph.array(node.input[1])  # MatMul B: [K, N]
        if w.shape != (blocks.packed.shape[1] * 32, blocks.packed.shape[0]) or \
                not np.array_equal(blocks.dequantize().T, w):
            raise ValueError(f"GGUF blocks of layer {layer} {'+'.join(part_names)} differ from "
                             f"the graph's weight {node.input[1]}: is {Path(gguf_path).name} the "
                             "file this model was converted from?")
        graph.drop.add(node.input[1])
        return blocks

    def emit(out: list[Any], x: str, blocks: Q4Blocks, outputs: list[str], widths: list[int],
             base: str, name: str) -> None:
        nonlocal shape
        n, kb = blocks.scales.shape
        offsets = blocks.offsets()
        fused_out = outputs[0] if len(outputs) == 1 else base + "/fused"
        q_out = fused_out if offsets is None else base + "/q"
        if offsets is not None and block_sums == "nbits":
            # One MatMulNBits computes the projection and, in K/32 more columns, the block sums.
            extra_b, extra_s = sum_columns(kb * 32)
            out.append(matmul_nbits(
                x, graph.add(base + ".B", np.concatenate([blocks.packed, extra_b])),
                graph.add(base + ".scales", np.concatenate([blocks.scales, extra_s])),
                base + "/q_and_sums", kb * 32, n + kb, 4, accuracy, name + "_Q4"))
            out.append(helper.make_node(
                "Split", [base + "/q_and_sums", graph.add(base + ".sums_split",
                                                          np.array([n, kb], np.int64))],
                [q_out, base + "/sums"], axis=-1, name=name + "_sums"))
            mins = graph.add(base + ".min_term", np.ascontiguousarray(offsets.T))  # [K/32, N]
            out += [helper.make_node("MatMul", [base + "/sums", mins], [base + "/m"],
                                     name=name + "_min"),
                    helper.make_node("Add", [q_out, base + "/m"], [fused_out],
                                     name=name + "_addmin")]
        else:
            out.append(matmul_nbits(x, graph.add(base + ".B", blocks.packed),
                                    graph.add(base + ".scales", blocks.scales), q_out, kb * 32,
                                    n, 4, accuracy, name + "_Q4"))
        if offsets is not None and block_sums != "nbits":
            if shape is None:
                shape = graph.add("gguf.block_shape", np.array([0, 0, -1, 32], np.int64))
                graph.add("gguf.last_axis", np.array([-1], np.int64))
            if x not in sums:
                sums[x] = x + "/block_sums"
                out += [helper.make_node("Reshape", [x, shape], [x + "/blocks"],
                                         name=x + "/BlockReshape"),
                        helper.make_node("ReduceSum", [x + "/blocks", "gguf.last_axis"],
                                         [sums[x]], keepdims=0, name=x + "/BlockSum")]
            mins = graph.add(base + ".min_term", np.ascontiguousarray(offsets.T))  # [K/32, N]
            out += [helper.make_node("MatMul", [sums[x], mins], [base + "/m"], name=name + "_min"),
                    helper.make_node("Add", [q_out, base + "/m"], [fused_out],
                                     name=name + "_addmin")]
        if len(outputs) > 1:
            split = graph.add(base + ".split", np.array(widths, np.int64))
            out.append(helper.make_node("Split", [fused_out, split], outputs, axis=-1,
                                        name=name + "_split"))

    nodes: list[Any] = []
    done: set[str] = set()
    for node in model.graph.node:
        m = GENAI_PROJECTION.match(node.name) if node.op_type == "MatMul" else None
        if not m or m.group(3) not in GENAI_PARTS:
            nodes.append(node)
            continue
        if node.name in done:
            continue
        layer, kind = int(m.group(1)), m.group(3)
        base = f"gguf.layers.{layer}.{kind}"
        up = by_layer.get((layer, "up_proj"))
        if fuse_gate_up and kind == "gate_proj" and up is not None and up.input[0] == node.input[0]:
            gate_b = blocks_for(layer, node, GENAI_PARTS["gate_proj"])
            up_b = blocks_for(layer, up, GENAI_PARTS["up_proj"])
            both = Q4Blocks(np.concatenate([gate_b.packed, up_b.packed]),
                            np.concatenate([gate_b.scales, up_b.scales]),
                            None if gate_b.mins is None and up_b.mins is None else
                            np.concatenate([b.mins if b.mins is not None else
                                            -np.float32(8.0) * b.scales for b in (gate_b, up_b)]))
            emit(nodes, node.input[0], both, [node.output[0], up.output[0]],
                 [gate_b.scales.shape[0], up_b.scales.shape[0]], f"gguf.layers.{layer}.gate_up",
                 f"/model/layers.{layer}/mlp/gate_up_proj/MatMul")
            done.add(up.name)
            continue
        blocks = blocks_for(layer, node, GENAI_PARTS[kind])
        emit(nodes, node.input[0], blocks, [node.output[0]], [], base, node.name)
    graph.finish(nodes)
    return model


# --- the cached copies ------------------------------------------------------------------------


def variant_path(base: Path, spec: WeightSpec) -> Path:
    tag = spec.tag()
    return base if tag is None else base.with_name(f"{base.stem}.{tag}.onnx")


def make_variant(base: Path, out: Path, spec: WeightSpec) -> None:
    """Write the copy of `base` described by `spec` to `out` (+ `out`.data). Runs in the
    child process."""
    import onnx

    model = onnx.load(str(base))  # with its external data
    lm_blocks = None
    if spec.source == "rtn":
        model = quantize_rtn(model, spec.bits, spec.block, spec.symmetric, spec.accuracy)
    elif spec.source == "gguf-q4":
        model = inject_gguf(model, spec.gguf, spec.accuracy, spec.fuse_gate_up, spec.block_sums)
        if spec.lm_head == "int8":
            from infer_opt.engines.onnx.gguf_blocks import GGUFWeights

            q8 = GGUFWeights(spec.gguf).lm_head()
            lm_blocks = (q8.b, q8.scales)
    if spec.lm_head == "int8":
        model = lm_head_int8(model, lm_blocks)
    onnx.save(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
              location=out.name + ".data", size_threshold=1024)


def ensure_variant(base: Path, spec: WeightSpec, threads: int = 2) -> tuple[Path, float]:
    """The copy of the graph `base` with weights `spec`, made once (seconds spent, 0 if
    cached). The graph as built when `spec` changes nothing."""
    target = variant_path(base, spec)
    if target == base:
        return base, 0.0
    seconds = cached_build(target, functools.partial(_variant_into, base, spec, target.name),
                           child=True, what="weight rewrite", threads=threads)
    return target, seconds


def _variant_into(base: Path, spec: WeightSpec, name: str, out: Path) -> None:
    make_variant(base, out / name, spec)
