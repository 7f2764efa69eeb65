"""Property-based: generated variant strings, suite files and results CSVs, hostile ones
included, through the real CLI in this process. The contract: exit 0 with well-formed output,
or exit 2 with exactly one error line and nothing written; never a traceback (an exception
escaping `main` fails the test). Bounded examples keep `make test` fast."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .test_compare import two_variants
from .trust_helpers import assert_refused, cli

BOUNDED = settings(max_examples=40, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])

NAMES = ["kv-cache", "sdpa", "bf16", "fp16", "baseline", "int4-wo", "int8-wo", "prune-layers",
         "prune-magnitude", "spec-self", "compile", "ort", "torch", "vllm", "static-cache",
         "nope", "KV-CACHE", "kv_cache", "", "é", "a" * 80]
KEYS = ["n", "fraction", "sparsity", "group", "k", "layers", "scope", "symmetric", "", "x",
        "n n", "=", "é"]
VALUES = ["1", "0", "-1", "2", "99", "0.5", "nan", "-nan", "inf", "-inf", "1e309", "", "true",
          "False", "abc", " 1", "1_0", "0x10", "9" * 40, "[", "]", "global"]


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


def toml_str(s: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's; DEL must be escaped too."""
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


@st.composite
def variants(draw: st.DrawFn) -> str:
    """Variant strings from the grammar's pieces, mostly near-valid, some raw text."""
    if draw(st.integers(0, 5)) == 0:
        return draw(TEXT)
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(NAMES))
        if draw(st.booleans()):
            items = [f"{draw(st.sampled_from(KEYS))}{draw(st.sampled_from(['=', '', '==']))}"
                     f"{draw(st.sampled_from(VALUES))}" for _ in range(draw(st.integers(0, 3)))]
            name += "[" + draw(st.sampled_from([",", ", ", ";"])).join(items) + "]"
        parts.append(name)
    return draw(st.sampled_from(["+", "+", " + ", "++", "\t+"])).join(parts)


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def run_refused_or_clean(capsys: pytest.CaptureFixture[str], root: Path, *argv: str) -> str:
    """`run` that must be refused (exit 2, one line) with nothing written under `root`."""
    before = files_under(root)
    code, _, err = cli(capsys, *argv)
    line = assert_refused(code, err)
    assert files_under(root) == before and not (root / "out").exists()
    return line


SUITE = """model = "tiny-random"
device = "cpu"
threads = 1
[[group]]
variants = {variants}
prompt_tokens = 600
new_tokens = 4
min_repeats = 1
max_repeats = 1
"""


@BOUNDED
@given(variant=variants())
def test_variant_strings(capsys: pytest.CaptureFixture[str], variant: str) -> None:
    """Any variant on the tiny model, with a prompt longer than its context: whatever the
    variant, the run is refused before any worker starts, in one line."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "s.toml").write_text(SUITE.format(variants=f"[{toml_str(variant)}]"),
                                     encoding="utf-8")
        line = run_refused_or_clean(capsys, root, "run", "--suite", str(root / "s.toml"),
                                    "--out", str(root / "out"))
        assert "variant" in line or "prompt_tokens" in line or "group[0]" in line


# --- suite files --------------------------------------------------------------------------

SCALARS = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1),
                    st.floats(allow_nan=True, allow_infinity=True),
                    TEXT, st.sampled_from(["kv-cache", "cpu", "tiny-random",
                                                           "static-batch", "online", ""]))
VALUE = st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                  st.lists(variants(), min_size=1, max_size=3))
HEADER_KEYS = ["name", "description", "model", "device", "threads", "timeout_s", "reference",
               "also_reference", "max_workers", "seed", "allow_long_cells", "bogus", ""]
GROUP_KEYS = ["name", "variants", "workload", "batch_sizes", "prompt_tokens", "new_tokens",
              "warmup_runs", "warmup_new_tokens", "min_repeats", "max_repeats", "min_timed_s",
              "max_timed_s", "target_precision_pct", "policies", "arrival", "arrival_rates",
              "num_requests", "prefix_reuse", "prompts", "prefix_tokens", "threads", "x y"]


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, str):
        return toml_str(v)
    return "[" + ", ".join(toml_value(x) for x in v) + "]"


@st.composite
def suite_texts(draw: st.DrawFn) -> str:
    header = draw(st.dictionaries(st.sampled_from(HEADER_KEYS), VALUE, max_size=4))
    header.setdefault("model", "tiny-random")
    lines = [f"{toml_str(k)} = {toml_value(v)}" for k, v in header.items()]
    shape = draw(st.integers(0, 6))
    if shape == 0:  # `group` as a plain value: a list of strings, a number, ...
        lines.append(f"group = {toml_value(draw(VALUE))}")
    else:
        for _ in range(draw(st.integers(1, 2))):
            g = draw(st.dictionaries(st.sampled_from(GROUP_KEYS), VALUE, max_size=6))
            if draw(st.booleans()):
                g["variants"] = draw(st.lists(variants(), min_size=1, max_size=3))
            lines.append("[[group]]")
            lines += [f"{toml_str(k)} = {toml_value(v)}" for k, v in g.items()]
    return "\n".join(lines) + "\n"


@BOUNDED
@given(text=suite_texts())
def test_suite_files(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """`suites --show` prints a suite that loads, or refuses it in one line; `run` of the same
    file with a variant filter no suite has is refused in one line, nothing written."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        path = root / "s.toml"
        path.write_text(text, encoding="utf-8")
        before = files_under(root)
        code, out, err = cli(capsys, "suites", "--show", str(path))
        if code == 0:
            assert out == path.read_text(encoding="utf-8") and not err.strip()
        else:
            assert_refused(code, err)
        assert files_under(root) == before
        run_refused_or_clean(capsys, root, "run", "--suite", str(path), "--out",
                             str(root / "out"), "--variants", "zz-in-no-suite")


# --- results CSVs -------------------------------------------------------------------------

HOSTILE_CELLS = ["", "nan", "NaN", "-1", "-0.0", "inf", "-inf", "1e309", "0", "abc", "é",
                 "\x00", "1,2", '"', "\n", "ok", "failed", "skipped", "9" * 50, "None",
                 "[1, 2]", "{}"]


@st.composite
def damaged_csv(draw: st.DrawFn, good: str) -> str:
    rows = list(csv.reader(io.StringIO(good)))
    header, body = rows[0], rows[1:]
    for _ in range(draw(st.integers(0, 4))):
        r = draw(st.integers(0, len(body) - 1))
        c = draw(st.integers(0, len(header) - 1))
        body[r][c] = draw(st.one_of(st.sampled_from(HOSTILE_CELLS), TEXT))
    action = draw(st.integers(0, 5))
    if action == 1 and len(header) > 1:  # a column dropped
        c = draw(st.integers(0, len(header) - 1))
        header, body = header[:c] + header[c + 1:], [b[:c] + b[c + 1:] for b in body]
    elif action == 2:  # a column added
        name = draw(st.sampled_from(["extra_ms", "bad name", "", "variant", "x_per_s"]))
        header, body = header + [name], [b + [draw(st.sampled_from(HOSTILE_CELLS))]
                                         for b in body]
    elif action == 3:  # rows dropped
        body = body[: draw(st.integers(0, len(body)))]
    out = io.StringIO()
    csv.writer(out).writerows([header, *body])
    text = out.getvalue()
    if action == 4:  # cut anywhere
        text = text[: draw(st.integers(0, len(text)))]
    return text


def good_csv(root: Path, name: str, slow: float) -> Path:
    return two_variants(root, name, slow=slow, seed=3)


@BOUNDED
@given(data=st.data())
def test_results_csvs(capsys: pytest.CaptureFixture[str], data: st.DataObject) -> None:
    """`table` and `compare` on damaged results: a table (compare: exit 0 or 1, its verdict),
    or one line and exit 2; nothing is written beside the files either way."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        old = good_csv(root, "old", 1.0)
        new = good_csv(root, "new", data.draw(st.sampled_from([1.0, 1.5])))
        target = data.draw(st.sampled_from([new, old]))
        target.write_text(data.draw(damaged_csv(target.read_text())), encoding="utf-8")
        if data.draw(st.booleans()):  # the samples file damaged or gone too
            samples = target.with_name(target.stem + ".samples.jsonl")
            if data.draw(st.booleans()):
                samples.unlink()
            else:
                samples.write_text(data.draw(st.sampled_from(["", "{", "[]\n", "null\n"])))
        before = files_under(root)
        code, out, err = cli(capsys, "table", str(target), "--reference", "kv-cache")
        if code == 0:
            assert out.strip() and not [ln for ln in err.splitlines() if "error" in ln]
        else:
            assert_refused(code, err)
        code, out, err = cli(capsys, "compare", str(old), str(new))
        if code in (0, 1):
            assert out.strip()
        else:
            assert_refused(code, err)
        assert files_under(root) == before
        assert os.listdir(root)  # the inputs are still there
