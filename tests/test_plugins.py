import pytest

from infer_opt.core.errors import UserError
from infer_opt.core.plugin import Settings, build_settings, discover, parse_variant

BUILTINS = {"baseline", "kv-cache", "static-cache", "sdpa", "sdpa-flash", "sdpa-mem-efficient",
            "sdpa-math", "flash-attn2", "fp16", "bf16"}


def test_builtins_register_through_entry_points() -> None:
    assert BUILTINS <= set(discover())


def test_outside_plugin_is_discovered() -> None:
    # tests/fixture_plugins is a separate "distribution" on sys.path (see conftest.py).
    assert {"test-raise", "test-crash", "test-hang", "test-missing"} <= set(discover())


def test_baseline_is_pinned_explicitly() -> None:
    s, reason = build_settings(["baseline"], "cpu")
    assert reason is None
    assert (s.dtype, s.attn_implementation, s.kv_cache) == ("float32", "eager", "none")
    assert set(s._owners) == {"dtype", "attn_implementation", "kv_cache"}


def test_stack_applies_in_order() -> None:
    s, reason = build_settings(parse_variant("kv-cache+sdpa+bf16"), "cpu")
    assert reason is None
    assert (s.dtype, s.attn_implementation, s.kv_cache) == ("bfloat16", "sdpa", "dynamic")


def test_contradictory_stack_is_refused() -> None:
    with pytest.raises(UserError, match="kv-cache.*static-cache.*kv_cache"):
        build_settings(["kv-cache", "static-cache"], "cpu")
    with pytest.raises(UserError, match="baseline"):
        build_settings(["baseline", "bf16"], "cpu")


def test_unknown_plugin_lists_known_ones() -> None:
    with pytest.raises(UserError) as err:
        parse_variant("kv-cache+warp-drive")
    msg = str(err.value)
    assert msg.startswith("variant: unknown plugin 'warp-drive'")
    assert "kv-cache" in msg and "\n" not in msg


@pytest.mark.parametrize("bad", ["", "kv-cache+", "+sdpa", "sdpa+sdpa"])
def test_malformed_variant(bad: str) -> None:
    with pytest.raises(UserError):
        parse_variant(bad)


def test_cuda_plugins_say_why_on_cpu() -> None:
    for name in ("sdpa-flash", "sdpa-mem-efficient", "sdpa-math", "flash-attn2"):
        _, reason = build_settings([name], "cpu")
        assert reason == f"{name}: needs CUDA (device is cpu)"


def test_missing_package_reason() -> None:
    _, reason = build_settings(["test-missing"], "cpu")
    assert reason == "test-missing: package 'surely_not_installed_pkg' is not installed"


def test_settings_set_same_value_twice_is_fine() -> None:
    s = Settings()
    s.set("dtype", "bfloat16", by="a")
    s.set("dtype", "bfloat16", by="b")
    assert s.dtype == "bfloat16"
