"""Repository contracts: CI runs the README's test command; no pickles are tracked."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_cmd = next(b for b in blocks if "pytest" in b and "pip install" in b)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd.strip() in ci


def test_odebench_copy_is_present():
    data = (ROOT / "bench" / "data" / "odebench.json").read_text()
    assert '"systems"' in data


LAYERS = ["data_gen", "odeformer", "service"]  # each may import the ones before it, never those after


def _imported_packages(path: Path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):  # lazy imports inside functions count too
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_packages_import_one_way():
    offenders = []
    for i, package in enumerate(LAYERS):
        higher = set(LAYERS[i + 1:])
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = _imported_packages(path) & higher
            if bad:
                offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "lower packages import higher ones: " + "; ".join(offenders)


def test_layer_check_sees_lazy_imports(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from service.app import create_app\n    import odeformer.cli\n")
    assert _imported_packages(sample) == {"service", "odeformer"}
