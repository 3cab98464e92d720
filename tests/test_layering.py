"""The dependency direction, read from the source (AST), lazy imports inside functions included:
reference/ (maths and models) imports nothing of the harness or the kernels; kernels/ may import the
reference but not the harness. Importing modules at run time could not see function-level imports."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS_PREFIX = "poetx_bench."


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


def _violations(folder: str, package: str, allowed: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, name in _imports(path, package):
            if name.startswith(HARNESS_PREFIX) and not name.startswith(allowed):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


def test_reference_imports_neither_kernels_nor_harness():
    assert _violations("reference", "poetx_bench.reference", ("poetx_bench.reference",)) == []


def test_kernels_import_only_the_reference():
    assert _violations("kernels", "poetx_bench.kernels", ("poetx_bench.kernels", "poetx_bench.reference")) == []


def _forbidden(folder: str, package: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, name in _imports(path, package):
            if name.startswith(forbidden):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


def test_methods_import_neither_report_nor_gate():
    """Methods (poetx_bench/methods) declare how they train, name and colour themselves; the report and the
    gate read the registry, never the other way round."""
    assert _forbidden("poetx_bench/methods", "poetx_bench.methods",
                      ("poetx_bench.report", "poetx_bench.gate")) == []


def test_method_checker_can_fail(tmp_path, monkeypatch):
    pkg = tmp_path / "poetx_bench" / "methods"
    pkg.mkdir(parents=True)
    (pkg / "bad.py").write_text("from ..report import style\n\ndef f():\n    import poetx_bench.gate\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert len(_forbidden("poetx_bench/methods", "poetx_bench.methods",
                          ("poetx_bench.report", "poetx_bench.gate"))) == 2


def _forbidden_in(paths, package_of, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in paths:
        for line, name in _imports(path, package_of(path)):
            if name.startswith(forbidden):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


def _gate_and_model(root: Path) -> list[Path]:
    """The gate and what it reads rows with: the point model (results/) and the kind registry (points/)."""
    pkg = root / "poetx_bench"
    return [pkg / "gate.py", *sorted((pkg / "results").rglob("*.py")), *sorted((pkg / "points").rglob("*.py"))]


def _package_of(path: Path) -> str:
    """The package a module's relative imports resolve against (poetx_bench.gate -> poetx_bench)."""
    return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])


def test_gate_imports_nothing_of_the_report():
    """The gate judges rows through the point model (poetx_bench.results.point) and the kind registry
    (poetx_bench.points); neither it nor they import the report package."""
    found = _forbidden_in(_gate_and_model(ROOT), _package_of, ("poetx_bench.report",))
    assert found == []


def test_gate_checker_can_fail(tmp_path, monkeypatch):
    pkg = tmp_path / "poetx_bench"
    (pkg / "results").mkdir(parents=True)
    (pkg / "points").mkdir()
    (pkg / "gate.py").write_text("from .report.rows import Point\n")
    (pkg / "results" / "point.py").write_text("def f():\n    from ..report import tables\n")
    (pkg / "points" / "x.py").write_text("import poetx_bench.report.build\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = _forbidden_in(_gate_and_model(tmp_path), _package_of, ("poetx_bench.report",))
    assert len(found) == 3, found
    assert found[0].startswith("poetx_bench/gate.py:1 imports poetx_bench.report.rows")


def test_checker_sees_lazy_imports(tmp_path, monkeypatch):
    """The check must be able to fail: a function-level import of the harness is found."""
    pkg = tmp_path / "reference"
    pkg.mkdir()
    (pkg / "bad.py").write_text("def f():\n    from poetx_bench.kernels import x\n    from ..runner import y\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = _violations("reference", "poetx_bench.reference", ("poetx_bench.reference",))
    assert len(found) == 2, found


def test_added_config_keys_keep_old_point_ids():
    """compile / block_impl at their defaults stay out of the point id: the smoke suite still has the ids of
    the committed CPU baseline (recorded before those keys existed), so --resume and the gate match old rows;
    a non-default value does change the id."""
    import json

    from poetx_bench.suite import load_suite, point_id

    suite = load_suite("smoke", "cpu")
    baseline = ROOT / "reports" / "baselines" / "cpu-smoke.jsonl"
    old_ids = {json.loads(line)["point_id"] for line in baseline.read_text().splitlines() if line.strip()}
    assert {p["point_id"] for p in suite.points} == old_ids
    cfg = suite.points[0]["config"]
    assert cfg["compile"] == "none" and cfg["block_impl"] == "auto"
    assert point_id({**cfg, "compile": "cudagraph"}) != point_id(cfg)


def test_suites_found_through_the_package():
    """Suites are package data of poetx_bench.suites, so a non-editable install finds them too (the old
    path relative to suite.py pointed outside site-packages)."""
    import importlib.util

    from poetx_bench.suite import SUITES_DIR, list_suites

    assert SUITES_DIR == Path(importlib.util.find_spec("poetx_bench.suites").origin).parent
    assert "smoke" in {name for name, _ in list_suites()}


def test_listed_backends_and_compile_settings_expand_side_by_side(tmp_path):
    """compile = [..] (and per-method overrides of it) gives one point per setting; the official backend, which
    compiles its own layers, gets only compile = none when listed beside others; a bad entry names its key."""
    import pytest

    from poetx_bench.errors import UserError
    from poetx_bench.suite import load_suite

    path = tmp_path / "s.toml"
    path.write_text('kind = "train"\nmethods = ["adamw", "poetx-fast"]\nmodels = ["tiny"]\nseq_lens = [32]\nblock_sizes = [32]\n'
                    'batch_sizes = [1]\nbackend = ["triton", "official"]\ncompile = "cudagraph"\n'
                    '[overrides.adamw]\ncompile = ["none", "cudagraph"]\n')
    got = sorted((p["config"]["method"], p["config"]["backend"], p["config"]["compile"])
                 for p in load_suite(str(path), "cuda").points)
    assert got == [("adamw", "triton", "cudagraph"), ("adamw", "triton", "none"),
                   ("poetx-fast", "official", "none"), ("poetx-fast", "triton", "cudagraph")]
    assert len({p["point_id"] for p in load_suite(str(path), "cuda").points}) == 4
    # cayley_scope applies to our triton POET-X points only: the others keep the default (and their ids)
    path.write_text(path.read_text().replace('compile = "cudagraph"\n', 'compile = "cudagraph"\ncayley_scope = "model"\n'))
    scopes = {(p["config"]["method"], p["config"]["backend"]): p["config"]["cayley_scope"]
              for p in load_suite(str(path), "cuda").points}
    assert scopes == {("adamw", "triton"): "layer", ("poetx-fast", "triton"): "model",
                      ("poetx-fast", "official"): "layer"}
    path.write_text(path.read_text().replace('["none", "cudagraph"]', '["none", "jit"]'))
    with pytest.raises(UserError, match=r"overrides\.adamw\.compile.*jit"):
        load_suite(str(path), "cuda")
