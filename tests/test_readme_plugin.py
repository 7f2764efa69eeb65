"""The README's plugin example, installed from outside the package and run for real."""

import csv
import re
import subprocess
import sys
from pathlib import Path

import tomllib

from .conftest import REPO, write_suite


def readme_example(page: str = "README.md") -> tuple[str, str]:
    text = (REPO / page).read_text()
    after = text.split("<!-- plugin-example -->", 1)[1]
    code = re.search(r"```python\n(.*?)```", after, re.S).group(1)
    toml = re.search(r"```toml\n(.*?)```", after, re.S).group(1)
    return code, toml


def test_the_plugin_guide_shows_the_same_example() -> None:
    assert readme_example("docs/extending.md") == readme_example()


def test_readme_example_is_short_and_its_pyproject_complete() -> None:
    code, toml = readme_example()
    assert len(code.strip().splitlines()) <= 30
    project = tomllib.loads(toml)
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert {"name", "version"} <= set(project["project"])
    assert project["tool"]["setuptools"]["py-modules"] == ["my_plugins"]


def test_readme_plugin_runs(tmp_path: Path) -> None:
    code, toml = readme_example()
    pkg = tmp_path / "site"
    (pkg / "my_plugins-0.1.dist-info").mkdir(parents=True)
    (pkg / "my_plugins.py").write_text(code)
    (pkg / "my_plugins-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: my-plugins\nVersion: 0.1\n")
    eps = tomllib.loads(toml)["project"]["entry-points"]["infer_opt.plugins"]
    (pkg / "my_plugins-0.1.dist-info" / "entry_points.txt").write_text(
        "[infer_opt.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    suite = write_suite(tmp_path / "s.toml", """
model = "tiny-random"
device = "cpu"
threads = 1
[[group]]
variants = ["kv-cache+matmul-medium"]
batch_sizes = [1]
prompt_tokens = 8
new_tokens = 4
min_repeats = 1
max_repeats = 1
""")
    env = {"PYTHONPATH": str(pkg), "PATH": "/usr/bin:/bin"}
    listing = subprocess.run([sys.executable, "-m", "infer_opt.cli", "plugins", "--device", "cpu"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert "matmul-medium" in listing.stdout, listing.stderr
    run = subprocess.run([sys.executable, "-m", "infer_opt.cli", "run", "--suite", str(suite),
                          "--out", str(tmp_path / "r")], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    csv_path = next((tmp_path / "r").glob("*.csv"))
    row = next(csv.DictReader(csv_path.open()))
    assert row["status"] == "ok", row["reason"]
    assert row["notes"] == "float32 matmul precision: medium"
