"""`infer-opt plugins` shows what each metric column means (unit, better direction, help) and
each engine's options, under the plugin or engine that declares them."""

from __future__ import annotations

import pytest

from infer_opt.commands.plugins import metric_line
from infer_opt.core.plugin import Metric

from .trust_helpers import cli


@pytest.mark.parametrize("metric,line", [
    (Metric("compile_s", None, "wall time of the first call"),
     "metric compile_s (s): wall time of the first call"),
    (Metric("acceptance_rate_pct", "higher", "drafted tokens accepted"),
     "metric acceptance_rate_pct (%, higher is better): drafted tokens accepted"),
    (Metric("errors", "lower", "requests that failed"),
     "metric errors (lower is better): requests that failed"),
    (Metric("energy", None, "joules per run", unit="J"), "metric energy (J): joules per run"),
    (Metric("server_preemptions", None, "preemptions"), "metric server_preemptions: preemptions"),
])
def test_metric_line(metric: Metric, line: str) -> None:
    assert metric_line(metric) == line


def block(out: str, name: str) -> list[str]:
    """The line of `name` and the indented lines under it."""
    lines = out.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith(name + " "))
    j = i + 1
    while j < len(lines) and lines[j].startswith(" "):
        j += 1
    return lines[i:j]


def test_plugins_prints_metrics_and_engine_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "plugins", "--device", "cpu")
    assert code == 0, err
    width = out.splitlines()[0].index("  here")
    pad = " " * (width + 10)
    # A fixture plugin from outside the package (tests/fixture_plugins), with a directed metric.
    assert block(out, "test-count")[1:] == [
        pad + "metric test_forward_steps (lower is better): forward steps, warm-up included"]
    assert block(out, "compile")[1:] == [
        pad + "[freezing=False: inductor freezing: weights become constants, folded and "
              "prepacked into the graph]",
        pad + "[max_autotune=False: inductor max-autotune: benchmark kernel choices while "
              "compiling (much longer compile)]",
        pad + "metric compile_s (s): wall time of the first call of the compiled decode shape "
              "(compilation + one step), paid in the warm-up"]
    torch_lines = block(out, "torch")
    assert [ln[len(pad):].split(":")[0] for ln in torch_lines[1:]] == [
        "[kv_cache_type='model' (model|int8|int4)", "[kv_group_size=64 (32|64|128)",
        "[kv_residual_length=128"]
    assert block(out, "kv-cache") == [block(out, "kv-cache")[0]]  # no params, no metrics
