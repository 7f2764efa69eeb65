"""One validation pass before any work: every example of issue 20's catalogue is refused with
one line, exit 2 and nothing written, by `run` and by `sweep` alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from infer_opt.core.errors import UserError
from infer_opt.core.params import Param
from infer_opt.core.stack import build_stack, split_variant
from infer_opt.run.suite import load_suite

from .trust_helpers import assert_refused, cli, tiny_suite


def refused_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], suite: Path,
                *needles: str, args: tuple[str, ...] = ()) -> str:
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", "--suite", str(suite), "--out", str(out), *args)
    line = assert_refused(code, err, *needles)
    assert not out.exists()
    return line


@pytest.mark.parametrize("variant,needles", [
    ("kv-cache+prune-magnitude[sparsity=nan]", ("sparsity", "finite")),
    ("kv-cache+prune-magnitude[sparsity=inf]", ("sparsity", "finite")),
    ("kv-cache+prune-magnitude[sparsity=-inf]", ("sparsity", "finite")),
    ("kv-cache+int4-wo[group=32,group=64]", ("'group'", "given twice")),
    ("kv-cache+prune-layers[n=99]", ("prune-layers", "tiny-random", "99 of the model's 2")),
    ("kv-cache+prune-layers[fraction=0.9]", ("prune-layers", "2 of the model's 2")),
    ("kv-cache+spec-self[layers=3]", ("spec-self", "layers=3", "2 decoder layers")),
    ("kv-cache + sdpa", ("whitespace",)),
    ("kv-cache+\tsdpa", ("whitespace",)),
    ("", ("empty variant",)),
    ("kv-cache+prune-magnitude[scope=]", ("not key=value",)),
    ("kv-cache+no-such-thing", ("unknown plugin 'no-such-thing'",)),
])
def test_bad_variants_are_refused_before_work(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              variant: str, needles: tuple[str, ...]) -> None:
    refused_run(tmp_path, capsys, tiny_suite(tmp_path / "s.toml", [variant]), *needles)


@pytest.mark.parametrize("header,extra,needles", [
    ("", 'max_repeats = 100000\n', ("max_repeats", "ceiling", "allow_long_cells")),
    ("", 'max_timed_s = 1e9\n', ("max_timed_s", "ceiling")),
    ('timeout_s = 1e12\n', "", ("timeout_s", "ceiling")),
    ('timeout_s = nan\n', "", ("timeout_s", "finite")),
    ("", 'max_timed_s = inf\n', ("max_timed_s", "finite")),
    ('model = ""\n', "", ("model", "must not be empty")),
    ('reference = ""\n', "", ("reference", "must not be empty")),
    ('reference = "kv-cache+sdpa"\n', "", ("reference", "not a variant of the suite")),
    ('also_reference = ["nope"]\n', "", ("also_reference", "'nope' is not a variant")),
    ("", 'name = ""\n', ("name", "non-empty")),
    ("", 'target_precision_pct = nan\n', ("target_precision_pct", "finite")),
    ("", 'prompt_tokens = 600\n', ("prompt_tokens", "context of 512")),
])
def test_bad_suite_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str], header: str,
                          extra: str, needles: tuple[str, ...]) -> None:
    body = tiny_suite(tmp_path / "s.toml", ["kv-cache"]).read_text()
    for setting, at_end in ((header, False), (extra, True)):
        if setting:  # the key replaces the tiny suite's own line, in the header or the group
            key = setting.split("=")[0].strip()
            body = "\n".join(ln for ln in body.splitlines() if not ln.startswith(key + " "))
            body = body + "\n" + setting if at_end else setting + body
    (tmp_path / "s.toml").write_text(body)
    refused_run(tmp_path, capsys, tmp_path / "s.toml", *needles)


def test_duplicate_variants_in_a_group(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    refused_run(tmp_path, capsys, tiny_suite(tmp_path / "s.toml", ["kv-cache", "kv-cache"]),
                "variants", "'kv-cache' is listed twice")


@pytest.mark.parametrize("body,needles", [
    ('group = ["a", "b"]\n', ("group[0]", "must be a [[group]] table")),
    ('group = "x"\n', ("group", "at least one [[group]]")),
    ('group = [1]\n', ("group[0]", "must be a [[group]] table")),
    ('[[group]]\nvariants = ["kv-cache"]\nbatch_sizes = ["1"]\n', ("batch_sizes", "an integer")),
    ('[[group]]\nvariants = ["kv-cache"]\nbatch_sizes = []\n', ("batch_sizes", "non-empty")),
    ('[[group]]\nvariants = ["kv-cache"]\nbatch_sizes = 4\n', ("batch_sizes", "a list")),
    ('[[group]]\nvariants = ["kv-cache"]\nthreads = 2\n', ("unknown key 'threads'",)),
    ('[[group]]\nname = "g"\nvariants = ["kv-cache"]\n[[group]]\nname = "g"\n'
     'variants = ["baseline"]\n', ("'g' names two groups",)),
])
def test_malformed_suites_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       body: str, needles: tuple[str, ...]) -> None:
    path = tmp_path / "s.toml"
    path.write_text('model = "tiny-random"\ndevice = "cpu"\n' + body)
    refused_run(tmp_path, capsys, path, *needles)


def test_ceiling_is_overridable_explicitly(tmp_path: Path) -> None:
    body = tiny_suite(tmp_path / "s.toml", ["kv-cache"]).read_text().replace(
        "max_repeats = 1", "max_repeats = 5000")
    (tmp_path / "s.toml").write_text(body)
    with pytest.raises(UserError, match="ceiling"):
        load_suite(str(tmp_path / "s.toml"))
    assert load_suite(str(tmp_path / "s.toml"), allow_long_cells=True).groups
    (tmp_path / "s.toml").write_text("allow_long_cells = true\n" + body)
    assert load_suite(str(tmp_path / "s.toml")).allow_long_cells


@pytest.mark.parametrize("args,needles", [
    (("--model", ""), ("--model", "empty")),
    (("--model", " "), ("--model", "empty")),
    (("--variants", ""), ("--variants", "empty entry")),
    (("--variants", "kv-cache,,"), ("--variants", "empty entry")),
])
def test_empty_command_line_strings(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    refused_run(tmp_path, capsys, tiny_suite(tmp_path / "s.toml", ["kv-cache"]), *needles,
                args=args)


ONLINE = """
model = "tiny-random"
device = "cpu"
threads = 1
[[group]]
name = "load"
workload = "online"
variants = {variants}
policies = ["continuous"]
arrival_rates = [50.0]
num_requests = 4
prompt_tokens = {prompt}
new_tokens = 4
ttft_slo_ms = 10000
min_repeats = 1
max_repeats = 1
"""


@pytest.mark.parametrize("variants,prompt,needles", [
    ('["kv-cache+prune-layers[n=99]"]', 8, ("prune-layers", "99 of the model's 2")),
    ('["kv-cache+prune-magnitude[sparsity=nan]"]', 8, ("sparsity", "finite")),
    ('["kv-cache", "kv-cache"]', 8, ("listed twice",)),
    ('["kv-cache"]', 600, ("prompt_tokens", "context of 512")),
])
def test_sweep_has_the_same_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  variants: str, prompt: int, needles: tuple[str, ...]) -> None:
    suite = tmp_path / "s.toml"
    suite.write_text(ONLINE.format(variants=variants, prompt=prompt))
    out = tmp_path / "out"
    code, _, err = cli(capsys, "sweep", "--suite", str(suite), "--out", str(out))
    assert_refused(code, err, *needles)
    assert not out.exists()


def test_param_refuses_non_finite_and_empty() -> None:
    p = Param("x", float, 0.5, "", minimum=0.0, maximum=1.0)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(UserError, match="finite"):
            p.check(bad, "w")
    with pytest.raises(UserError, match="must not be empty"):
        Param("s", str, "a", "").check("  ", "w")
    assert split_variant("kv-cache+prune-magnitude[sparsity=0.5]") == [
        ("kv-cache", {}), ("prune-magnitude", {"sparsity": 0.5})]


def test_a_valid_stack_still_builds() -> None:
    assert build_stack("kv-cache+prune-layers[n=1]", "cpu").plugins[1].values["n"] == 1
