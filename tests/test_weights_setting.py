"""Weight quantization as one typed setting (core/weights.py): engines declare what they run,
plugins name no engine, and a new engine joins int4-wo by declaring 4-bit weights alone."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from infer_opt.core import registry
from infer_opt.core.errors import UserError
from infer_opt.core.models import ModelRef, resolve
from infer_opt.core.settings import Settings
from infer_opt.core.stack import build_stack
from infer_opt.core.timing import HostClock
from infer_opt.core.weights import WeightQuant, WeightSupport, refusal
from infer_opt.engines.decode import generate
from infer_opt.engines.torch.engine import TorchEngine, load_model

PLUGINS = Path(__file__).resolve().parents[1] / "src" / "infer_opt" / "plugins"


def fake_quantize(weight: torch.Tensor, wq: WeightQuant) -> torch.Tensor:
    """Round-to-nearest on a [N, K] weight in blocks of `group` along K, dequantized back:
    asymmetric q in [0, 2^bits - 1] with a float zero point, or symmetric around 0."""
    n, k = weight.shape
    group = wq.group or 32
    w = weight.reshape(n, k // group, group)  # [N, K/g, g]
    top = 2 ** wq.bits - 1
    if wq.symmetric:
        scale = w.abs().amax(-1, keepdim=True).clamp_min(1e-8) / (top // 2)
        return (torch.round(w / scale).clamp(-(top // 2), top // 2) * scale).reshape(n, k)
    lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = (hi - lo).clamp_min(1e-8) / top
    return (torch.round((w - lo) / scale).clamp(0, top) * scale + lo).reshape(n, k)


class Fake4Engine(TorchEngine):
    """A new engine that runs 4-bit weights its own way (plain torch round-to-nearest) and
    declares it: nothing in any plugin file names it."""

    name = "fake4"
    summary = "test engine: torch with its own 4-bit round-to-nearest"
    weight_quant = (WeightSupport(4, groups=(32, 64), how="fake round to nearest"),)

    def __init__(self, ref: ModelRef, settings: Settings) -> None:
        model = load_model(ref, dataclasses.replace(settings, weights=None))
        wq = settings.weights
        if wq is not None:
            with torch.no_grad():
                for fqn, m in model.named_modules():
                    if isinstance(m, torch.nn.Linear) and fqn != "lm_head":
                        m.weight.copy_(fake_quantize(m.weight, wq))
            settings.notes.append(f"fake4: {wq.bits}-bit, group {wq.group}, "
                                  f"{'symmetric' if wq.symmetric else 'asymmetric'}")
        self._setup(model, settings, 0.0)


@pytest.fixture
def fake_engine() -> Iterator[None]:
    """Register Fake4Engine as a third party would (an entry point), for this test only."""
    entries = registry._scan("engine")[0]
    ep = EntryPoint("fake4", f"{__name__}:Fake4Engine", registry.GROUPS["engine"])
    entries["fake4"] = registry.Entry("fake4", ep, "fake4-dist", "0.1")
    try:
        yield
    finally:
        entries.pop("fake4", None)
        registry.clear()


def test_int4_wo_runs_on_a_new_engine_that_declares_4_bit_weights(fake_engine: None) -> None:
    int4 = registry.load("plugin", "int4-wo")
    assert int4.engines is None and "fake4" in int4.engine_names()
    assert "fake4" not in registry.load("plugin", "int8-wo").engine_names()
    stack = build_stack("fake4+int4-wo[group=64]", "cpu", "tiny-random")
    assert stack.unavailable is None
    assert stack.settings.weights == WeightQuant(4, group=64, symmetric=False)
    assert stack.settings.owners["weights"] == "int4-wo"

    ref = resolve("tiny-random")
    engine = stack.engine(ref, stack.settings)
    plain = build_stack("fake4", "cpu", "tiny-random")
    fp32 = plain.engine(ref, plain.settings)
    ids = torch.randint(3, 512, (2, 12), generator=torch.Generator().manual_seed(0))
    before = fp32.score(ids)
    # The engine's own recipe, applied by hand to the plain model: exactly what it ran.
    with torch.no_grad():
        for fqn, m in fp32.model.named_modules():
            if isinstance(m, torch.nn.Linear) and fqn != "lm_head":
                m.weight.copy_(fake_quantize(m.weight, WeightQuant(4, group=64, symmetric=False)))
    got = engine.score(ids)
    assert torch.equal(got, fp32.score(ids)) and not torch.equal(got, before)
    assert "fake4: 4-bit, group 64, asymmetric" in stack.settings.notes
    with engine.context():
        run = generate(engine, ids[:, :6], 3, HostClock())
    assert run.tokens.shape == (2, 3)


def test_a_new_engine_refuses_what_it_does_not_declare(fake_engine: None) -> None:
    with pytest.raises(UserError) as err:
        build_stack("fake4+int4-wo[group=128]", "cpu")
    assert str(err.value) == (
        "variant: 'fake4+int4-wo[group=128]': engine fake4 runs 4-bit weights (fake round to "
        "nearest) with group 32, 64; the variant asks for group 128 (set by 'int4-wo')")
    with pytest.raises(UserError, match="'int8-wo' works on engines .*; 'fake4\\+int8-wo' runs "
                                        "on fake4"):
        build_stack("fake4+int8-wo", "cpu")
    with pytest.raises(UserError, match="engine fake4 runs 4-bit weights .* without an accuracy "
                                        "setting"):
        build_stack("fake4+int4-wo[accuracy=4]", "cpu")


def test_plugins_name_no_engine() -> None:
    """The issue's check: no plugin branches on the engine's name."""
    pattern = re.compile(r"settings\.engine ==|engine != ")
    offenders = [f"{p.relative_to(PLUGINS)}:{i}" for p in sorted(PLUGINS.rglob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


@pytest.mark.parametrize("variant, engine", [
    ("kv-cache+int4-wo", "torch"), ("ort+int4-wo", "ort"), ("ort-genai+int8-wo", "ort-genai"),
    ("openvino+int4-wo", "openvino"), ("ct2+int8-dynamic", "ct2"), ("ort+int8-dynamic", "ort"),
    ("kv-cache+int8-dynamic", "torch"),
])
def test_builtin_declarations_accept_the_plugins_defaults(variant: str, engine: str) -> None:
    s = build_stack(variant, "cpu").settings
    assert s.engine == engine and s.weights is not None and s.options == {}


@pytest.mark.parametrize("variant, needle", [
    ("kv-cache+int4-wo[symmetric=true]", "with symmetric false; the variant asks for symmetric "
                                         "true"),
    ("kv-cache+int8-wo[symmetric=false]", "with symmetric true; the variant asks for symmetric "
                                          "false"),
    ("kv-cache+int8-dynamic+int8-wo", "both set weight quantization"),
    ("ct2+int4-wo", "'int4-wo' works on engines"),
    ("llamacpp+int8-dynamic", "'int8-dynamic' works on engines"),
])
def test_builtin_declarations_refuse(variant: str, needle: str) -> None:
    with pytest.raises(UserError) as err:
        build_stack(variant, "cpu")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_refusal_names_engine_field_and_allowed_values() -> None:
    s = (WeightSupport(8, groups=(), symmetric=(True,), lm_head=("int8", "fp32")),)
    assert refusal("e", s, WeightQuant(8)) is None
    assert refusal("e", s, WeightQuant(8, symmetric=False)) == (
        "engine e runs 8-bit weights with symmetric true; the variant asks for symmetric false")
    assert refusal("e", s, WeightQuant(8, group=32)) == (
        "engine e chooses the group of 8-bit weights itself; the variant asks for group 32")
    assert refusal("e", s, WeightQuant(4)) == (
        "engine e does not run 4-bit weights; it runs 8-bit weights")
    assert refusal("e", (), WeightQuant(8, activations="int8")) == (
        "engine e does not run 8-bit weights, int8 activations; it runs no weight quantization")


SUPPORTS = st.builds(WeightSupport, bits=st.sampled_from((4, 8)),
                     groups=st.lists(st.sampled_from((16, 32, 64)), max_size=3).map(tuple),
                     symmetric=st.lists(st.booleans(), max_size=2).map(tuple),
                     lm_head=st.lists(st.sampled_from(("int8", "fp32")), max_size=2).map(tuple),
                     accuracy=st.booleans())
QUANTS = st.builds(WeightQuant, bits=st.sampled_from((4, 8)),
                   group=st.none() | st.sampled_from((16, 32, 64)),
                   symmetric=st.none() | st.booleans(),
                   lm_head=st.none() | st.sampled_from(("int8", "fp32")),
                   accuracy=st.none() | st.integers(0, 4))


@given(support=SUPPORTS, wq=QUANTS)
def test_refusal_is_exactly_the_declaration(support: WeightSupport, wq: WeightQuant) -> None:
    """Accepted iff the kind is declared and every explicit value is listed; a refusal is one
    line naming the engine."""
    ok = (support.kind == wq.kind
          and (wq.group is None or wq.group in support.groups)
          and (wq.symmetric is None or wq.symmetric in support.symmetric)
          and (wq.lm_head is None or wq.lm_head in support.lm_head)
          and (wq.accuracy is None or support.accuracy))
    why = refusal("eng", (support,), wq)
    assert (why is None) == ok
    if why is not None:
        assert why.startswith("engine eng ") and "\n" not in why


def test_ort_reads_the_setting() -> None:
    """What ort builds from Settings.weights (no engine option spells it any more)."""
    from infer_opt.engines.onnx.nbits import weight_spec

    spec = weight_spec(build_stack("ort+int8-wo", "cpu").settings, "tiny-random")
    assert (spec.source, spec.bits, spec.block, spec.symmetric, spec.lm_head) == (
        "rtn", 8, 32, True, "int8")
    assert weight_spec(build_stack("ort+int8-dynamic", "cpu").settings, "x").tag() is None
    spec = weight_spec(build_stack("ort+int4-wo[lm_head=fp32]", "cpu").settings, "x")
    assert (spec.bits, spec.symmetric, spec.accuracy, spec.lm_head) == (4, False, 4, "fp32")


def test_torch_reads_the_setting() -> None:
    from infer_opt.engines.torch.quant import recipe

    _, head, note = recipe(WeightQuant(4, group=64, symmetric=False), "cpu")
    assert head is not None and note.startswith("torchao, group 64, asymmetric")
    _, head, note = recipe(WeightQuant(8, symmetric=True, lm_head="fp32"), "cpu")
    assert head is None and note == "torchao, symmetric, per output channel; lm_head fp32"


def test_the_torch_engine_loads_without_torchao(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchao is optional (GPU images lack it): only a weight-quantized variant imports it."""
    import sys

    from .conftest import load_engine

    monkeypatch.setitem(sys.modules, "torchao", None)  # `import torchao` now raises
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    engine = load_engine("kv-cache")
    assert engine.settings.weights is None
