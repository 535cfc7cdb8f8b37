"""The README's measured tables are generated from benchmarks/results/ (benchmarks/readme_tables.py), never
edited by hand: this fails when a table and its results file disagree."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_match_the_committed_results():
    tables = _module()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    names = [m.group(2) for m in tables.BLOCK.finditer(text)]
    assert sorted(names) == sorted(tables.SOURCES), names  # every source has its block, once
    assert tables.render(text) == text, "README.md is stale: run python benchmarks/readme_tables.py"


def test_a_changed_figure_is_caught(tmp_path):
    tables = _module()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    begin = "<!-- begin generated: speed -->\n"
    tampered = text.replace(begin, begin + "| e5onnx-int8 | 99999 |\n", 1)
    assert tables.render(tampered) == text
