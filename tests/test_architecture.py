"""Rules of the code's shape, checked on the source with ``ast`` (nothing is imported):

- no comparison of a task or data-kind value with a literal name outside the task modules
  (tasks/) and the data loaders: everything else asks the Task or the DataKind;
- no import cycles among torchkeel's modules, lazy imports inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

from torchkeel.data.kinds import KINDS
from torchkeel.tasks import TASKS

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "torchkeel"
NAMES = set(TASKS) | set(KINDS)
# the modules that define tasks and kinds, and the loaders that decide them for a data set
ALLOWED = {"tasks", "data/kinds.py", "data/images.py", "data/tabular.py", "data/text.py", "data/textgen.py"}
ALLOWED |= {"data/series.py", "data/folder.py", "data/vision.py", "data/stream.py", "data/__init__.py"}
ALLOWED |= {"data/audio.py", "data/transcripts.py"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _allowed(path: Path) -> bool:
    rel = path.relative_to(PACKAGE).as_posix()
    return rel in ALLOWED or rel.split("/")[0] in ALLOWED


def _strings(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return {s for element in node.elts for s in _strings(element)}
    return set()


def _names_a_task_or_kind(node: ast.AST) -> bool:
    """``spec.task``, ``self.spec.kind``, a variable ``task`` or ``kind``, ``cfg.data.task``."""
    if isinstance(node, ast.Attribute):
        return node.attr in ("task", "kind")
    return isinstance(node, ast.Name) and node.id in ("task", "kind")


def task_or_kind_literals(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_names_a_task_or_kind(o) for o in operands) and any(_strings(o) & NAMES for o in operands):
                lines.append(node.lineno)
        elif isinstance(node, ast.Match) and _names_a_task_or_kind(node.subject):
            lines.append(node.lineno)
    return lines


def test_no_task_or_kind_name_is_compared_outside_the_task_modules_and_loaders():
    found = [
        f"{path.relative_to(SRC)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if not _allowed(path)
        for line in task_or_kind_literals(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert found == [], "compare with the Task or DataKind instead: " + ", ".join(found)


def test_the_literal_rule_catches_what_it_should():
    code = (
        "a = spec.task == 'regression'\nb = kind in ('text', 'table')\nc = self.spec.kind != 'image'\nd = x == 'image'"
    )
    assert task_or_kind_literals(ast.parse(code)) == [1, 2, 3]


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """torchkeel modules imported anywhere in ``tree`` (functions included, TYPE_CHECKING not)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".") if is_package else module.split(".")[:-1]
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules and m != module}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    names = set(modules)
    return {
        name: _imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py", names)
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_no_import_cycles():
    found = cycles(import_graph())
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
