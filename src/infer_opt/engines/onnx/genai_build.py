"""Build onnxruntime-genai's fused decoder graph from a local safetensors model, and cache it.

onnxruntime-genai's model builder (`python -m onnxruntime_genai.models.builder`, a build-time
dependency only) writes a graph made for decoding on CPU: GroupQueryAttention (rotary embedding
and the KV-cache update inside one op), SkipSimplifiedLayerNormalization (residual add + RMSNorm),
one fused QKV MatMul per layer, and, with `prune_lm_head=true`, the lm_head on the last position
only. We build it in fp32 for the CPU (precision fp32, execution provider cpu), then change one
thing: the prune step (Gather of position -1) becomes a Slice of the last `logits_to_keep`
positions, a new int64 [1] input. With 1 it is the builder's graph; with T it returns every
position's logits, which teacher-forced scoring (fidelity) and speculative verify steps need.

Graph interface (B rows, T new tokens, C = capacity of the shared KV buffers):

    input_ids                       int64 [B, T]
    attention_mask                  int64 [B, L + T]   ones over the L cached and T new tokens
    logits_to_keep                  int64 [1]          K
    past_key_values.{i}.key/value   float32 [B, kv_heads, C, head_dim]
    -> logits [B, K, V], present.{i}.key/value [B, kv_heads, C, head_dim]

GroupQueryAttention takes the positions from the mask (rows are assumed right-aligned from 0,
no left padding) and, when past and present are the same buffer, writes the new keys/values in
place (what onnxruntime-genai calls past_present_share_buffer).

The build runs once, in a child process (core/artifacts.cached_build; about a minute for
SmolLM2), and is published with an atomic rename under a lock, keyed by the weights' content,
the config, the onnxruntime-genai version, the builder options and this recipe's version. The builder wants tokenizer files beside the weights; a model without them
(the tiny random test model) gets a placeholder word-level tokenizer in the staging folder.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from infer_opt.core.artifacts import (
    cache_root,
    cached_build,
    key_digest,
    weights_digest,
)

MODEL_FILE = "model.onnx"
BUILDER_OPTIONS = {"prune_lm_head": "true"}
# Bump when the build or the rewrite below changes, so old graphs are not reused.
RECIPE_VERSION = 1
KEEP_INPUT = "logits_to_keep"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "merges.txt")


def genai_version() -> str | None:
    try:
        return md.version("onnxruntime-genai")
    except md.PackageNotFoundError:
        return None


def graph_dir(model_path: str) -> Path:
    """Cache folder of one build: readable prefix, hash of everything that changes the graph."""
    p = Path(model_path)
    key = {"weights": weights_digest(p), "genai": genai_version(), "options": BUILDER_OPTIONS,
           "precision": "fp32", "ep": "cpu", "recipe": RECIPE_VERSION}
    return cache_root() / "ort-genai" / f"{p.name}-fp32-genai{genai_version()}-{key_digest(key)}"


def ensure_graph(model_path: str, threads: int = 2) -> tuple[Path, dict[str, Any]]:
    """Path of the fp32 graph (building it once), and what happened, for the row."""
    target = graph_dir(model_path)
    build_s = cached_build(target, functools.partial(build, Path(model_path)), done=MODEL_FILE,
                           child=True, what="onnxruntime-genai build", threads=threads)
    return target / MODEL_FILE, {"build_s": build_s, "cache_dir": str(target)}


def _stage(model_path: Path, staging: Path) -> None:
    """The model's files linked into `staging`, plus a placeholder tokenizer if it has none."""
    for f in model_path.iterdir():
        if f.is_file():
            (staging / f.name).symlink_to(f.resolve())
    if any((staging / name).exists() for name in ("tokenizer.json", "tokenizer.model")):
        return
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    config = json.loads((model_path / "config.json").read_text())
    vocab = {f"<t{i}>": i for i in range(int(config["vocab_size"]))}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, "<t0>")),
                                  unk_token="<t0>", eos_token="<t2>", bos_token="<t1>")
    tok.save_pretrained(staging)


def keep_last_logits(model: Any) -> Any:
    """Replace the builder's prune step (Gather position -1, Unsqueeze) by a Slice of the last
    `logits_to_keep` positions: logits [B, K, V]."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    gather = next(n for n in g.node if n.op_type == "Gather" and n.name.endswith("/prune/Gather"))
    unsq = next(n for n in g.node if n.op_type == "Unsqueeze" and gather.output[0] in n.input)
    g.initializer.extend([numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64),
                                                  "logits_to_keep/end"),
                          numpy_helper.from_array(np.array([1], np.int64), "logits_to_keep/axis")])
    nodes = []
    for n in g.node:
        if n is gather:
            nodes.append(helper.make_node("Neg", [KEEP_INPUT], ["logits_to_keep/start"],
                                          name="/lm_head/keep/Neg"))
        elif n is unsq:
            nodes.append(helper.make_node(
                "Slice", [gather.input[0], "logits_to_keep/start", "logits_to_keep/end",
                          "logits_to_keep/axis"], [unsq.output[0]], name="/lm_head/keep/Slice"))
        else:
            nodes.append(n)
    # The Gather's index constant has no other reader now: ORT would warn at every load.
    index = gather.input[1]
    if not any(index in n.input for n in nodes):
        nodes = [n for n in nodes if index not in n.output]
    del g.node[:]
    g.node.extend(nodes)
    g.input.append(helper.make_tensor_value_info(KEEP_INPUT, TensorProto.INT64, [1]))
    for out in g.output:
        if out.name == "logits":
            out.type.tensor_type.shape.dim[1].dim_param = "logits_to_keep"
    # Shapes recorded for the old Gather/Unsqueeze outputs would now be wrong.
    keep = [v for v in g.value_info if v.name not in (gather.output[0], unsq.output[0])]
    del g.value_info[:]
    g.value_info.extend(keep)
    return model


def build(model_path: Path, out: Path) -> None:
    """Runs in the child: the builder into `out`, then the logits_to_keep rewrite."""
    import onnx

    work = Path(tempfile.mkdtemp(prefix="infer-opt-genai-"))
    try:
        staging = work / "model"
        staging.mkdir()
        _stage(model_path, staging)
        options = [f"{k}={v}" for k, v in BUILDER_OPTIONS.items()]
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(staging),
               "-o", str(out), "-p", "fp32", "-e", "cpu", "-c", str(work / "cache"),
               "--extra_options", *options]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env=dict(os.environ, HF_HUB_OFFLINE="1"))
        if proc.returncode != 0 or not (out / MODEL_FILE).is_file():
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            raise RuntimeError(f"builder: {lines[-1] if lines else proc.returncode}")
        model = onnx.load(str(out / MODEL_FILE), load_external_data=False)
        onnx.save(keep_last_logits(model), str(out / MODEL_FILE))  # data file untouched
    finally:
        shutil.rmtree(work, ignore_errors=True)
