"""The contract between engines and optimizations: registration, declarations, stack validation.

`test_every_builtin_plugin_on_every_engine` is generated from the declarations, not from a
hand list: each built-in plugin on each registered engine either runs for real on the tiny
model or is refused before anything runs (or skipped with the reason where the hardware or a
package is missing).
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import entry_points

import pytest
import torch

from infer_opt.core import registry
from infer_opt.core.errors import UserError
from infer_opt.core.params import Param
from infer_opt.core.settings import Settings
from infer_opt.core.stack import build_stack, split_variant
from infer_opt.core.timing import HostClock
from infer_opt.core.weights import WeightQuant

from .conftest import load_engine

BUILTINS = {"baseline", "kv-cache", "static-cache", "sdpa", "sdpa-flash", "sdpa-mem-efficient",
            "sdpa-math", "flash-attn2", "fp16", "bf16"}


def builtin(kind: str) -> list[str]:
    """Names infer-opt itself registers in an entry-point group (not the test fixtures)."""
    group = registry.GROUPS[kind]
    return sorted(ep.name for ep in entry_points(group=group)
                  if ep.dist is not None and ep.dist.name == "infer-opt")


def test_builtins_register_through_entry_points() -> None:
    assert BUILTINS <= set(registry.names("plugin"))
    assert {"torch", "ort", "vllm"} <= set(registry.names("engine"))
    assert {"static-batch", "online"} <= set(registry.names("workload"))
    assert {"sequential", "dynamic", "continuous"} <= set(registry.names("policy"))
    assert {"local", "ray"} <= set(registry.names("executor"))


def test_outside_plugin_is_discovered() -> None:
    # tests/fixture_plugins is a separate "distribution" on sys.path (see conftest.py).
    assert {"test-raise", "test-crash", "test-hang", "test-missing"} <= set(registry.names("plugin"))


def test_baseline_is_pinned_explicitly() -> None:
    s = build_stack("baseline", "cpu").settings
    assert (s.engine, s.dtype, s.attn_implementation, s.kv_cache) == ("torch", "float32", "eager",
                                                                      "none")
    assert set(s.owners) == {"dtype", "attn_implementation", "kv_cache"}


def test_stack_applies_in_order() -> None:
    s = build_stack("kv-cache+sdpa+bf16", "cpu").settings
    assert (s.dtype, s.attn_implementation, s.kv_cache) == ("bfloat16", "sdpa", "dynamic")


@pytest.mark.parametrize("variant,needles", [
    ("kv-cache+static-cache", ("'kv-cache' and 'static-cache' both set kv_cache",)),
    ("kv-cache+compile", ("'kv-cache' and 'compile' both set kv_cache",)),
    ("baseline+bf16", ("'baseline' and 'bf16' both set dtype",)),
    ("compile+cuda-graphs", ("both set decode step compilation",)),
    ("int8-bnb+nf4-bnb", ("both quantize at load time",)),
    ("ort+int8-bnb", ("'int8-bnb' works on engines torch", "runs on ort")),
    ("ort+int8-wo+int8-dynamic", ("'int8-wo' and 'int8-dynamic' both set weight quantization",)),
    ("kv-cache+int4-wo[symmetric=true]", ("engine torch runs 4-bit weights (torchao int4",
                                          "with symmetric false", "asks for symmetric true",
                                          "set by 'int4-wo'")),
    ("kv-cache+int4-wo[group=16]", ("with group 32, 64, 128, 256", "asks for group 16")),
    ("openvino+int8-wo[group=32]", ("engine openvino chooses the group of 8-bit weights",)),
    ("llamacpp+int4-wo", ("'int4-wo' works on engines openvino, ort, ort-genai, ", "torch;")),
    ("ct2+int8-wo", ("'int8-wo' works on engines", "runs on ct2")),
    ("kv-cache+int8-wo[accuracy=4]", ("accuracy is ONNX Runtime's accuracy_level",)),
    ("ort[weight_group=64]", ("unknown parameter 'weight_group'; allowed: providers",)),
    ("ort+bf16", ("'bf16' works on engines torch, vllm",)),
    ("ort+baseline", ("'baseline' works on engines torch",)),
    ("ort+vllm", ("names 2 engines",)),
    ("kv-cache+int8-dynamic-ao+bf16", ("'int8-dynamic-ao' needs dtype float32", "set by 'bf16'")),
    ("vllm+sdpa", ("'sdpa' works on engines torch, ort",)),
    ("ort[quantise=int8-dynamic]", ("unknown parameter 'quantise'", "allowed: providers")),
    ("ort[quantize=int8-dynamic]", ("unknown parameter 'quantize'",)),
    ("kv-cache+warp-drive", ("unknown plugin 'warp-drive'", "kv-cache", "engines: ")),
    ("kv-cache+sdpa[x=1]", ("unknown parameter 'x'; allowed: none",)),
    ("", ("empty variant",)),
    ("kv-cache+", ("malformed part ''",)),
    ("sdpa+sdpa", ("'sdpa' appears twice",)),
    ("kv-cache+sdpa[x]", ("is not key=value",)),
])
def test_contradictory_or_unknown_stack_is_refused(variant: str, needles: tuple[str, ...]) -> None:
    with pytest.raises(UserError) as err:
        build_stack(variant, "cpu")
    msg = str(err.value)
    assert msg.startswith("variant") and "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg


def test_weights_are_one_setting_and_engine_options_are_typed() -> None:
    s = build_stack("ort+int8-dynamic", "cpu").settings
    assert (s.engine, s.kv_cache, s.options) == ("ort", "dynamic", {})
    assert s.weights == WeightQuant(8, activations="int8") and s.owners["weights"] == (
        "int8-dynamic")
    assert build_stack("ort", "cpu").settings.weights is None
    s = build_stack("ort+int4-wo[group=64,accuracy=1]", "cpu").settings
    assert s.weights == WeightQuant(4, group=64, symmetric=False, accuracy=1)


def test_variant_grammar() -> None:
    assert split_variant("ort[quantize=int8-dynamic]+kv-cache+p[a=1,b=0.5,c=true,d=x]") == [
        ("ort", {"quantize": "int8-dynamic"}), ("kv-cache", {}),
        ("p", {"a": 1, "b": 0.5, "c": True, "d": "x"})]


def test_param_checks() -> None:
    p = Param("sparsity", float, 0.5, "fraction", minimum=0.0, maximum=0.95)
    assert p.check(0, "w") == 0.0 and isinstance(p.check(0, "w"), float)
    for bad, msg in ((0.99, "<= 0.95"), (-1, ">= 0"), ("a", "a number"), (True, "a number")):
        with pytest.raises(UserError, match=msg):
            p.check(bad, "w")


def test_cuda_plugins_say_why_on_cpu() -> None:
    for name in ("sdpa-flash", "sdpa-mem-efficient", "sdpa-math", "flash-attn2"):
        assert build_stack(name, "cpu").unavailable == f"{name}: needs CUDA (device is cpu)"


def test_missing_package_reason() -> None:
    assert build_stack("test-missing", "cpu").unavailable == (
        "test-missing: package 'surely_not_installed_pkg' is not installed")


def test_settings_set_same_value_twice_is_fine() -> None:
    s = Settings()
    s.set("dtype", "bfloat16", by="a")
    s.set("dtype", "bfloat16", by="b")
    assert s.dtype == "bfloat16"


def test_a_hook_the_engine_ignores_is_refused() -> None:
    # test-transform declares torch and ort but edits the torch model: ort must refuse it.
    assert build_stack("kv-cache+test-transform", "cpu").unavailable is None
    with pytest.raises(UserError, match="engine ort does not apply model_transforms"):
        build_stack("ort+test-transform", "cpu")


def test_undeclared_engine_option_is_refused() -> None:
    with pytest.raises(UserError, match="engine option 'turbo' set by 'test-bad-option' is not "
                                        "an option of engine ort"):
        build_stack("ort+test-bad-option", "cpu")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


PAIRS = [(engine, plugin) for engine in builtin("engine") for plugin in builtin("plugin")]


@pytest.mark.parametrize("engine,plugin", PAIRS, ids=[f"{e}+{p}" for e, p in PAIRS])
def test_every_builtin_plugin_on_every_engine(engine: str, plugin: str) -> None:
    """Refused up front, skipped with a reason (hardware/package), or runs for real."""
    variant = f"{engine}+{plugin}"
    cls = registry.load("plugin", plugin)
    try:
        stack = build_stack(variant, "cpu")
    except UserError as exc:
        assert "\n" not in str(exc)
        # Refused: either the plugin does not declare this engine, or the stack contradicts
        # itself (a plugin that needs a setting the engine cannot give).
        return
    engine_cls = registry.load("engine", engine)
    hosted = engine_cls.hosted_engine(stack.settings)  # served: the engine inside the server
    assert hosted in cls.engine_names()
    if stack.unavailable is not None:
        pytest.skip(stack.unavailable)
    if hosted != engine:
        pytest.skip(f"{engine} serves {hosted} behind HTTP: its {hosted} pair runs here, the "
                    "served path in tests/test_http_served.py")
    missing = [m for m in engine_cls.requires_packages if not _importable(m)]
    if engine_cls.environment and missing:
        # Its workers run in .venv-<engine>; this pair is run there by make test-<engine>.
        pytest.skip(f"{engine} runs in its own environment {engine_cls.environment} "
                    f"(make test-{engine}); {', '.join(missing)} not importable here")
    engine_obj = load_engine(variant)
    from infer_opt.engines.decode import generate

    # Batch 2, or what the stack serves (speculative decoding: 1; the plan refuses more).
    bs = min([2] + [p.max_batch_size for p in stack.plugins if p.max_batch_size is not None])
    prompts = torch.randint(3, 512, (bs, 6), generator=torch.Generator().manual_seed(0))
    with engine_obj.context():
        run = generate(engine_obj, prompts, 3, HostClock())
    assert run.tokens.shape == (bs, 3) and len(run.stamps_s) == 3
