"""Settings guards: a plugin that writes a field directly, and one that changes nothing the
engine reads, are refused before anything runs (one line, exit 2, nothing written). The
fixture plugins (tests/fixture_plugins) register like third-party ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from infer_opt.core.errors import UserError
from infer_opt.core.settings import Settings
from infer_opt.core.stack import build_stack

from .conftest import write_suite
from .test_cli_errors import GOOD, assert_one_line_error, cli


@pytest.mark.parametrize("variant, message", [
    ("kv-cache+test-direct-dtype",
     "variant: plugin 'test-direct-dtype' writes settings.dtype directly; use "
     "settings.set('dtype', value, by=self.name)"),
    ("kv-cache+test-noop",
     "variant: 'test-noop' changes nothing engine torch reads in 'kv-cache+test-noop' (no "
     "setting, option, hook or weights it sets differs); drop it, or pin the value it stands "
     "for with settings.pin"),
    ("ort+test-noop",
     "variant: 'test-noop' changes nothing engine ort reads in 'ort+test-noop' (no setting, "
     "option, hook or weights it sets differs); drop it, or pin the value it stands for with "
     "settings.pin"),
])
def test_the_stack_refuses(variant: str, message: str) -> None:
    with pytest.raises(UserError) as err:
        build_stack(variant, "cpu")
    assert str(err.value) == message


@pytest.mark.parametrize("variant, needle", [
    ("kv-cache+test-direct-dtype", "plugin 'test-direct-dtype' writes settings.dtype directly"),
    ("kv-cache+test-noop", "'test-noop' changes nothing engine torch reads"),
])
def test_infer_opt_run_refuses(tmp_path: Path, variant: str, needle: str) -> None:
    suite = write_suite(tmp_path / "s.toml", GOOD.replace('"kv-cache"', f'"{variant}"'))
    out = tmp_path / "results"
    proc = cli("run", "--suite", str(suite), "--out", str(out), cwd=tmp_path)
    assert_one_line_error(proc, "variant", needle)
    assert not out.exists()


def test_an_option_written_directly_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from infer_opt_testplugins import BadOption

    monkeypatch.setattr(BadOption, "apply",
                        lambda self, settings: settings.options.update(providers=["X"]))
    with pytest.raises(UserError, match="plugin 'test-bad-option' writes "
                                        "settings.options\\['providers'\\] directly"):
        build_stack("ort+test-bad-option", "cpu")


def test_baseline_pins_what_is_already_the_default() -> None:
    """Every field baseline sets is the engine's default; it counts because it pins them."""
    s = build_stack("baseline", "cpu").settings
    assert s.pins == {"dtype": "baseline", "attn_implementation": "baseline",
                      "kv_cache": "baseline"}
    assert s.changed(Settings(engine="torch").engine_view()) == []


def test_writes_outside_plugins_and_through_set_are_fine() -> None:
    s = Settings()
    s.dtype = "float16"  # engines and tests may build Settings directly
    before = s.engine_view()
    with s.applying("p"):
        s.set("kv_cache", "dynamic", by="p")
        s.notes.append("a note is not a change")
        with pytest.raises(UserError, match="plugin 'p' writes settings.decoder directly"):
            s.decoder = print
        with pytest.raises(UserError, match="plugin 'p' sets unknown setting 'kvcache'"):
            s.set("kvcache", "dynamic", by="p")
    assert s.changed(before) == ["kv_cache"]
    s.decoder = None  # the guard ends with the plugin


def test_a_plugin_that_only_repeats_a_default_is_a_no_op() -> None:
    """kv-cache on an engine whose graph has a KV cache already would measure nothing."""
    s = Settings(engine="ort")
    s.set("kv_cache", "dynamic", by="ort")
    before = s.engine_view()
    with s.applying("p"):
        s.set("kv_cache", "dynamic", by="p")
    assert s.changed(before) == [] and "p" not in s.pins.values()
