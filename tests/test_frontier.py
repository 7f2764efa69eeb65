"""The decode frontier section and plot, on synthetic rows with hand-checked answers."""

from __future__ import annotations

from pathlib import Path

from infer_opt.cli import main
from infer_opt.results.frontier import fastest, front, frontier_groups, render_frontier

from .tables import flat
from .test_compare import fake_cell, write_run

PNG = b"\x89PNG\r\n\x1a\n"

# variant, engine, step ms (decode tok/s = 1000 / step), KL mean
ROWS = [("kv-cache+sdpa", "torch", 100.0, 5e-12),
        ("ort-genai+gguf-q4[accuracy=0]", "ort-genai", 25.0, 1.4e-11),
        ("sdpa+int8-wo+bf16+compile", "torch", 40.0, 4e-3),
        ("ort-genai+gguf-q4", "ort-genai", 10.0, 3e-3),
        ("llamacpp", "llamacpp", 9.0, 2.8e-3),
        ("ort+int4-wo", "ort", 8.0, 0.22),
        ("baseline", "torch", 500.0, 0.0)]


def rows(extra_no_kl: bool = False) -> list[dict[str, str]]:
    out = []
    for i, (variant, engine, step, kl) in enumerate(ROWS):
        row, _ = fake_cell(i, variant, step, seed=i, jitter=0.0)
        row.update(engine=engine, kl_mean=kl, decode_tokens_per_s_ci_low=0.9 * 1000 / step,
                   decode_tokens_per_s_ci_high=1.1 * 1000 / step)
        out.append({k: str(v) for k, v in row.items()})
    if extra_no_kl:
        row, _ = fake_cell(len(out), "vllm", 5.0, seed=99, jitter=0.0)
        out.append({k: str(v) for k, v in {**row, "engine": "vllm"}.items()})
    return out


def test_fastest_per_level_and_the_front() -> None:
    [(key, items)] = frontier_groups(rows()).items()
    assert key == ("tiny-random", "8", "16", "1", "")  # (model, prompt, new, bs, depth)
    pick = {limit: fastest(items, limit)[2]["variant"] for limit in (1e-3, 1e-2, float("inf"))}
    # <= 1e-3: the exact GGUF graph; <= 1e-2: llama.cpp (9 ms) beats gguf-q4 (10 ms); any: int4.
    assert pick == {1e-3: "ort-genai+gguf-q4[accuracy=0]", 1e-2: "llamacpp",
                    float("inf"): "ort+int4-wo"}
    own = fastest(items, 1e-2, ("torch", "ort", "ort-genai"))
    assert own[2]["variant"] == "ort-genai+gguf-q4"
    corners = [round(t, 3) for t, _ in front(items)]
    assert corners == [2.0, 10.0, 40.0, 111.111, 125.0]  # baseline, kv, exact, llama, int4


def test_section_ratios_and_own_line() -> None:
    text = flat(render_frontier(rows(extra_no_kl=True)))
    lines = {ln.split(" | ")[0].lstrip("| "): ln for ln in text.splitlines() if ln.startswith("| ")}
    exact = lines["KL <= 1e-3"]
    assert "ort-genai+gguf-q4[accuracy=0] | ort-genai | 6 | 40.0 [36.0, 44.0]" in exact
    assert "| 4.00x | 0.36x |" in exact  # vs kv-cache+sdpa (10 tok/s), vs llamacpp (111 tok/s)
    assert "| llamacpp | llamacpp |" in lines["KL <= 1e-2"]
    own = lines["KL <= 1e-2 (own)"]
    assert "ort-genai+gguf-q4 | ort-genai" in own and "| 0.90x |" in own
    assert "| 10.00x | 0.90x | 1.11x |" in own  # tok/s vs HF, vs llama.cpp; TTFT vs llama.cpp
    assert "llamacpp: 111.1 [100.0, 122.2] tok/s, TTFT 36 ms" in text
    assert "Not ranked (no KL measured): vllm" in text
    assert render_frontier([r for r in rows() if r["variant"] != "llamacpp"]).count(
        "no llamacpp row") == 1


def test_table_and_report_carry_the_frontier(tmp_path: Path) -> None:
    cells = []
    for i, (variant, engine, step, kl) in enumerate(ROWS):
        row, samples = fake_cell(i, variant, step, seed=i)
        row.update(engine=engine, kl_mean=kl)
        cells.append((row, samples))
    csv_path = write_run(tmp_path / "20260101-000000-f-abcd.csv", cells)
    assert main(["report", str(csv_path)]) == 0
    stem = tmp_path / "20260101-000000-f-abcd"
    text = flat(Path(f"{stem}.report.md").read_text())
    assert "## Decode frontier (fastest row per fidelity level)" in text
    assert "drawn at 1e-12" in text
    assert Path(f"{stem}.frontier.png").read_bytes()[:8] == PNG
