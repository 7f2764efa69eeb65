"""Names are owned: a name registered twice is refused naming both distributions, a built-in is
replaced only when the third party says so, rows record whose code ran, and a plugin that
fails to import is listed as unavailable while everything else works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infer_opt import __version__
from infer_opt.core import registry
from infer_opt.core.errors import UserError
from infer_opt.core.stack import build_stack, variant_sources

from .trust_helpers import assert_refused, cli, installed, tiny_suite

SHADOW = '''
from infer_opt.core.plugin import Plugin


class Shadow(Plugin):
    name = "kv-cache"
    summary = "someone else's kv-cache"
    engines = ("torch",)
    {replaces}

    def apply(self, settings):
        settings.set("kv_cache", "dynamic", by=self.name)
'''
BUILTIN = f"infer-opt {__version__}"


def test_a_shadowed_builtin_is_refused_naming_both(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with installed(tmp_path / "site", "evil-plugins", "1.0",
                   "[infer_opt.plugins]\nkv-cache = evil_mod:Shadow\n",
                   {"evil_mod": SHADOW.format(replaces="")}):
        with pytest.raises(UserError) as err:
            build_stack("kv-cache+sdpa", "cpu")
        assert BUILTIN in str(err.value) and "evil-plugins 1.0" in str(err.value)
        assert "replaces = 'kv-cache'" in str(err.value)
        # Everything that does not name it still works.
        assert build_stack("sdpa", "cpu").plugins[0].name == "sdpa"
        suite = tiny_suite(tmp_path / "s.toml", ["kv-cache+sdpa"])
        code, _, err_text = cli(capsys, "run", "--suite", str(suite), "--out",
                                str(tmp_path / "out"))
        assert_refused(code, err_text, "kv-cache", "evil-plugins 1.0", BUILTIN)
        assert not (tmp_path / "out").exists()
        code, out, _ = cli(capsys, "plugins", "--device", "cpu")
        assert code == 0
        line = next(ln for ln in out.splitlines() if ln.startswith("kv-cache "))
        assert "unavailable" in line and "evil-plugins 1.0" in line


def test_an_explicit_replacement_runs_and_is_recorded(tmp_path: Path) -> None:
    with installed(tmp_path / "site", "better-cache", "2.1",
                   "[infer_opt.plugins]\nkv-cache = better_mod:Shadow\n",
                   {"better_mod": SHADOW.format(replaces='replaces = "kv-cache"')}):
        stack = build_stack("kv-cache+sdpa", "cpu")
        assert type(stack.plugins[0]).__module__ == "better_mod"
        sources = json.loads(variant_sources("kv-cache+sdpa"))
        assert sources == {"engine torch": BUILTIN, "sdpa": BUILTIN,
                           "kv-cache": f"better-cache 2.1 (replaces {BUILTIN})"}


def test_an_engine_name_registered_twice_is_refused(tmp_path: Path) -> None:
    engine = "from infer_opt.engines.onnx.ort_engine import OnnxRuntimeEngine as Ort\n"
    with installed(tmp_path / "site", "other-ort", "0.3",
                   "[infer_opt.engines]\nort = other_ort:Ort\n", {"other_ort": engine}):
        with pytest.raises(UserError) as err:
            build_stack("ort", "cpu")
        assert "engine 'ort'" in str(err.value) and "other-ort 0.3" in str(err.value)
        assert BUILTIN in str(err.value)


def test_every_row_records_its_sources() -> None:
    from infer_opt.core.models import resolve
    from infer_opt.run.cell import Cell, identity_row

    ref = resolve("tiny-random")
    from dataclasses import asdict

    cell = Cell(run_id="r", suite="s", index=0, model=asdict(ref), variant="kv-cache+sdpa",
                workload={"kind": "static-batch", "batch_size": 1}, device="cpu", threads=1,
                bandwidth_gb_per_s=0.0, seed=0, group="g")
    row = identity_row(cell)
    assert json.loads(row["plugin_sources"]) == {"engine torch": BUILTIN, "kv-cache": BUILTIN,
                                                 "sdpa": BUILTIN}


BROKEN = "raise ImportError('needs libfoo.so.3')\n"


def test_a_plugin_that_fails_to_import(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with installed(tmp_path / "site", "broken-plugins", "0.1",
                   "[infer_opt.plugins]\ntest-broken = broken_mod:Nope\n",
                   {"broken_mod": BROKEN}):
        code, out, err = cli(capsys, "plugins", "--device", "cpu")
        assert code == 0, err
        line = next(ln for ln in out.splitlines() if ln.startswith("test-broken "))
        assert "unavailable" in line and "broken-plugins 0.1" in line
        assert "ImportError: needs libfoo.so.3" in line
        assert any(ln.startswith("kv-cache ") and " yes " in ln for ln in out.splitlines())
        suite = tiny_suite(tmp_path / "s.toml", ["kv-cache", "kv-cache+test-broken"])
        code, _, err = cli(capsys, "run", "--suite", str(suite), "--out", str(tmp_path / "o"))
        assert_refused(code, err, "test-broken", "cannot be imported", "libfoo")
        assert not (tmp_path / "o").exists()
        assert "test-broken" in registry.problems("plugin")
        assert build_stack("kv-cache", "cpu").plugins[0].name == "kv-cache"


def test_two_claimants_of_one_name_are_refused(tmp_path: Path) -> None:
    claim = SHADOW.format(replaces='replaces = "kv-cache"')
    with installed(tmp_path / "a", "claim-a", "1.0",
                   "[infer_opt.plugins]\nkv-cache = claim_a:Shadow\n", {"claim_a": claim}), \
            installed(tmp_path / "b", "claim-b", "1.0",
                      "[infer_opt.plugins]\nkv-cache = claim_b:Shadow\n", {"claim_b": claim}):
        with pytest.raises(UserError) as err:
            build_stack("kv-cache", "cpu")
        assert "claim-a 1.0" in str(err.value) and "claim-b 1.0" in str(err.value)
