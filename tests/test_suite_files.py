from pathlib import Path

import pytest

from infer_opt.core.errors import UserError
from infer_opt.core.stack import build_stack
from infer_opt.run.suite import load_suite, named_suites

from .conftest import write_suite

GOOD = """
model = "tiny-random"
[[group]]
variants = ["baseline"]
batch_sizes = [1, 2]
prompt_tokens = 8
new_tokens = 4
"""


@pytest.mark.parametrize("name", sorted(named_suites()))
def test_shipped_suites_are_valid(name: str) -> None:
    suite = load_suite(name)
    assert suite.cell_count > 0
    for g in suite.groups:
        for v in g.variants:
            engine = build_stack(v, "cuda").engine
            assert engine.step_api or engine.serves_requests or not any(
                w.needs_step_api for w in g.workloads)


def test_group_expands_batch_sizes(tmp_path: Path) -> None:
    suite = load_suite(str(write_suite(tmp_path / "s.toml", GOOD)))
    assert [w.batch_size for w in suite.groups[0].workloads] == [1, 2]
    assert suite.name == "s"


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write_suite(tmp_path / "bad.toml", GOOD.replace("new_tokens = 4", "new_tokenz = 4"))
    with pytest.raises(UserError) as err:
        load_suite(str(path))
    msg = str(err.value)
    assert "bad.toml" in msg and "'new_tokenz'" in msg and "new_tokens" in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write_suite(tmp_path / "bad.toml", "colour = 'red'\n" + GOOD)
    with pytest.raises(UserError, match="unknown key 'colour'"):
        load_suite(str(path))


@pytest.mark.parametrize("field,value", [("batch_sizes", "[0]"), ("prompt_tokens", "-1"),
                                         ("new_tokens", "0"), ("prompt_tokens", "'long'")])
def test_non_positive_sizes(tmp_path: Path, field: str, value: str) -> None:
    body = GOOD.replace("batch_sizes = [1, 2]", "batch_sizes = [1]")
    lines = [ln for ln in body.splitlines() if not ln.startswith(field)]
    path = write_suite(tmp_path / "bad.toml", "\n".join(lines) + f"\n{field} = {value}\n")
    with pytest.raises(UserError) as err:
        load_suite(str(path))
    key = "batch_size" if field == "batch_sizes" else field
    assert "group[0]" in str(err.value) and key in str(err.value)
    assert "> 0" in str(err.value) or "must be an integer" in str(err.value)


def test_malformed_toml(tmp_path: Path) -> None:
    path = write_suite(tmp_path / "bad.toml", "model = \n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_suite(str(path))


def test_unknown_suite_name() -> None:
    with pytest.raises(UserError, match="unknown suite 'nope'; known: .*default"):
        load_suite("nope")
    assert {"quick", "default", "gpu"} <= set(named_suites())
