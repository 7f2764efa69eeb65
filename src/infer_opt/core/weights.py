"""Weight quantization as one typed setting, and what an engine declares it can run.

A plugin (int4-wo, int8-wo, int8-dynamic, gguf-q4) says WHAT the weights become by setting
`Settings.weights` to a `WeightQuant`; each engine says HOW it does it by reading that setting
(torch: torchao; ort, ort-genai: MatMulNBits or quantize_dynamic; openvino: NNCF; ct2: its int8
compute type) and declares which ones it runs as `Engine.weight_quant`, a tuple of
`WeightSupport`, as it declares dtypes. So a plugin names no engine: it works on every engine
that declares its kind (`WeightQuant.kind`), and a new engine joins it by declaring support.
The stack refuses a WeightQuant the engine does not run before anything runs, in one line naming
the engine, the field and the values it takes (`refusal`).
"""

from __future__ import annotations

from dataclasses import dataclass

# Where the quantized weights come from: rounded to nearest from the model's float weights, or
# the blocks of the model's GGUF carried over as they are.
SOURCES = ("rtn", "gguf")
# Activations: kept in float (weight-only), or quantized to int8 at run time (dynamic).
ACTIVATIONS = ("none", "int8")
LM_HEADS = ("int8", "fp32")

# (bits, activations, source): what a plugin needs an engine to run at all.
Kind = tuple[int, str, str]


@dataclass(frozen=True)
class WeightQuant:
    """What the weights of a variant become. None in a field: the engine's own choice (its notes
    say what it ran)."""

    bits: int  # bits per weight of the decoder's Linear layers
    group: int | None = None  # weights per block along K (one scale, zero point per block);
    #                           None: the engine's default (per output channel, or 32)
    symmetric: bool | None = None  # True: no zero point (scale only)
    activations: str = "none"  # "none": weight-only; "int8": quantized per step (dynamic)
    lm_head: str | None = None  # "int8" or "fp32"; None: the engine's default
    accuracy: int | None = None  # ONNX Runtime's MatMulNBits accuracy_level (0 fp32 .. 4 int8)
    source: str = "rtn"  # see SOURCES

    @property
    def kind(self) -> Kind:
        return (self.bits, self.activations, self.source)

    def describe(self) -> str:
        """Short form for refusals: '4-bit weights', '8-bit weights, int8 activations'."""
        out = f"{self.bits}-bit weights"
        if self.activations != "none":
            out += f", {self.activations} activations"
        if self.source != "rtn":
            out += f" from the {self.source.upper()}"
        return out


@dataclass(frozen=True)
class WeightSupport:
    """One kind of weight quantization an engine runs, and the values it takes. A None field of
    the WeightQuant (the engine's default) is always accepted; an explicit value must be listed
    here. An empty tuple: the engine does it its own way, no explicit value is accepted."""

    bits: int
    activations: str = "none"
    source: str = "rtn"
    groups: tuple[int, ...] = ()
    symmetric: tuple[bool, ...] = (False, True)
    lm_head: tuple[str, ...] = ()
    accuracy: bool = False  # takes MatMulNBits' accuracy_level
    how: str = ""  # the tool or kernel, said in refusals and `infer-opt plugins`

    @property
    def kind(self) -> Kind:
        return (self.bits, self.activations, self.source)


def support_for(supports: tuple[WeightSupport, ...], kind: Kind) -> WeightSupport | None:
    return next((s for s in supports if s.kind == kind), None)


def _values(values: tuple[object, ...]) -> str:
    return ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in values)


def refusal(engine: str, supports: tuple[WeightSupport, ...], wq: WeightQuant) -> str | None:
    """Why `engine` cannot run `wq` (one line naming the field and the values it takes), or
    None when it can."""
    s = support_for(supports, wq.kind)
    if s is None:
        runs = "; ".join(x.how or WeightQuant(x.bits, activations=x.activations,
                                               source=x.source).describe() for x in supports)
        return (f"engine {engine} does not run {wq.describe()}; it runs "
                f"{runs or 'no weight quantization'}")
    how = f" ({s.how})" if s.how else ""
    checks: list[tuple[str, object, tuple[object, ...]]] = [
        ("group", wq.group, s.groups), ("symmetric", wq.symmetric, s.symmetric),
        ("lm_head", wq.lm_head, s.lm_head)]
    for name, value, allowed in checks:
        if value is not None and value not in allowed:
            shown = str(value).lower() if isinstance(value, bool) else value
            runs = (f"runs {wq.describe()}{how} with {name} {_values(allowed)}" if allowed else
                    f"chooses the {name} of {wq.describe()} itself{how}")
            return f"engine {engine} {runs}; the variant asks for {name} {shown}"
    if wq.accuracy is not None and not s.accuracy:
        return (f"engine {engine} runs {wq.describe()}{how} without an accuracy setting "
                "(accuracy is ONNX Runtime's accuracy_level); the variant asks for accuracy "
                f"{wq.accuracy}")
    return None
