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
