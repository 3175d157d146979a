"""The layering rule of DESIGN.md, checked on the source: who may import whom.

drivers/ and timestamping/ import nothing of ours; appliance/ may import drivers/ and
timestamping/; daemon/ (the vault) only timestamping/, never appliance/ nor the TSA key;
nothing below the CLI imports horodate/.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"drivers", "timestamping", "appliance", "daemon", "horodate"}

ALLOWED = {
    "drivers": {"drivers"},
    "timestamping": {"timestamping"},
    "appliance": {"drivers", "timestamping", "appliance"},
    "daemon": {"daemon", "timestamping"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in OURS}


def allowed(package: str, module: str) -> bool:
    return any(module == ok or module.startswith(ok + ".") for ok in ALLOWED[package])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_respect_the_layers(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for module in sorted(imports_of(path))
        if not allowed(package, module)
    ]
    assert not offenders, "layering violated:\n" + "\n".join(offenders)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("from appliance.keys import load_credentials\nimport drivers.gps\n")
    modules = imports_of(bad)
    assert modules == {"appliance.keys", "drivers.gps"}
    assert not allowed("daemon", "appliance.keys")
    assert not allowed("drivers", "appliance.keys")
    assert allowed("appliance", "drivers.gps")


def test_importing_timestamping_loads_nothing_else_of_ours() -> None:
    """The vault uses ``timestamping``; loading it must not bring the signing engine."""
    import subprocess
    import sys

    code = (
        "import sys, timestamping, timestamping.verify, timestamping.aio_client, "
        "timestamping.http_client\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'appliance', 'drivers', 'daemon', 'horodate'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
