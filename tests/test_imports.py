"""The package's import graph: no circle (module-level or inside functions), and the layering of the brief —
the runtime never imports the exporter, the server, the CLI or the benchmarks."""

import ast
from pathlib import Path

import e5onnx

PACKAGE = Path(e5onnx.__file__).parent


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path, name, known):
    """e5onnx modules ``path`` imports anywhere in its body (``from . import x`` counts x when x is a module)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("e5onnx")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("e5onnx"):
                continue
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
            out |= subs or {base}
    return out & known


def _graph():
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, name, set(paths)) - {name} for name, path in paths.items()}


def _cycle(graph):
    """One import circle as a list of modules, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_circle():
    graph = _graph()
    assert "e5onnx.runtime.manifest" in graph and "e5onnx.runtime.atomic" in graph["e5onnx.runtime.manifest"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_checker_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_runtime_imports_only_the_runtime_config_and_errors():
    graph = _graph()
    allowed = ("e5onnx.runtime", "e5onnx.config", "e5onnx.errors")
    for name, targets in graph.items():
        if name.startswith("e5onnx.runtime"):
            outside = sorted(t for t in targets if not t.startswith(allowed))
            assert outside == [], f"{name} imports {outside}"
