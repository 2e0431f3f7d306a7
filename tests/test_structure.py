"""The shape the code keeps (issue "one shape"): no import cycle among an app's modules
(imports inside functions, the lazy task enqueue, aside), and `portal` uses neither app's
internals (the root URLconf aside)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def top_level_imports(path: Path, package: str) -> set[str]:
    """The modules of `package` that `path` imports at module level."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                module = node.module
            elif node.module and node.module.split(".")[0] == package:
                module = node.module.partition(".")[2]
            else:
                continue
            names.update([module.split(".")[0]] if module else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                head, _sep, rest = alias.name.partition(".")
                if head == package and rest:
                    names.add(rest.split(".")[0])
    return names


def module_graph(package: str) -> dict[str, set[str]]:
    modules = {path.stem: path for path in (ROOT / package).glob("*.py")}
    return {
        name: top_level_imports(path, package) & modules.keys() for name, path in modules.items()
    }


def a_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


@pytest.mark.parametrize("package", ["releases", "schools", "portal"])
def test_no_import_cycle_among_an_apps_modules(package):
    graph = module_graph(package)
    assert graph, package
    assert a_cycle(graph) is None


def test_the_cycle_finder_finds_one():
    assert a_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert a_cycle({"a": {"b"}, "b": set()}) is None


def test_portal_uses_neither_app_but_in_the_root_urlconf():
    offenders = []
    for path in (ROOT / "portal").rglob("*.py"):
        if (path.name == "urls.py" and path.parent.name == "portal") or "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            offenders += [
                f"{path.relative_to(ROOT)}: {m}"
                for m in modules
                if m.split(".")[0] in ("releases", "schools")
            ]
    assert offenders == []


def written_codes() -> set[str]:
    """Every literal `code="…"` keyword in the apps' code: the codes rows and refusals store."""
    codes = set()
    for package in ("portal", "releases", "schools"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.keyword) and node.arg == "code":
                    values = [node.value]
                    if isinstance(node.value, ast.IfExp):
                        values = [node.value.body, node.value.orelse]
                    codes.update(v.value for v in values if isinstance(v, ast.Constant) and v.value)
    return codes


def test_every_code_the_code_writes_has_a_message():
    """A code without a message would be shown raw (`render` falls back to the code)."""
    from releases.reasons import MESSAGES

    codes = written_codes()
    assert "server_edited" in codes and "promoted" in codes  # the scan finds them
    assert sorted(codes - MESSAGES.keys()) == []
