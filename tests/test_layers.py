"""The layering rules of DESIGN.md's layout table, checked on the source, and no import cycle.

Every import counts: at module level, inside a function, under ``if TYPE_CHECKING:`` (a
type-only import still couples two modules, and hiding a cycle there is still a cycle).

Between packages: drivers/ and timestamping/ import nothing of ours; appliance/ may import
drivers/ and timestamping/; daemon/ (the vault) only timestamping/, never appliance/ nor
the TSA key; nothing below the CLI imports horodate/.

Inside appliance/, the rooms form layers, each importing only those below it::

    runtime/   the process: assembly, driver threads, workers, signals   (+ config)
    http/      the aiohttp application, health, metrics, the fast lane, listening
    issuance/  serials, the issuance log, the issuer
    clock/     the ensemble (sans-IO) and its timekeeper
    tsa/       the RFC 3161 engine and its credentials (sans-IO)

Beside them, doctor/ (``horodate doctor``'s checks) reads only the configuration.

The simulated hardware (drivers/sim/) is reached only from the ``--simulate`` wiring
(appliance/runtime/driver_threads.py) and from the CLI's demo.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("drivers", "timestamping", "appliance", "daemon", "horodate")

# package (or room) -> what it may import besides itself
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "drivers": (),
    "timestamping": (),
    "daemon": ("timestamping",),
    "appliance": (),  # its __init__; every module lives in a room below
    "appliance.tsa": ("timestamping",),
    "appliance.clock": ("drivers", "appliance.tsa"),
    "appliance.issuance": ("timestamping", "appliance.tsa"),
    "appliance.http": (
        "drivers",
        "timestamping",
        "appliance.tsa",
        "appliance.clock",
        "appliance.issuance",
    ),
    "appliance.runtime": ("drivers", "timestamping", "appliance"),
    "appliance.config": ("appliance.config",),
    # horodate doctor's checks: over a root and the configuration, beside the process
    "appliance.doctor": ("appliance.config",),
    "horodate": OURS,
}
SIMULATOR = "drivers.sim"
SIMULATOR_WIRING = ("drivers.sim", "appliance.runtime.driver_threads", "horodate.commands.demo")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(root: Path) -> Iterator[tuple[str, Path]]:
    for package in OURS:
        for path in sorted((root / package).rglob("*.py")):
            yield module_name(root, path), path


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """Every module of ours ``path`` imports, wherever the import statement stands."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # ``from appliance.http import fastlane``: the submodule is what is imported
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    return {name for name in found if name.split(".")[0] in OURS}


def graph(root: Path) -> dict[str, set[str]]:
    paths = dict(sources(root))
    known = set(paths)
    return {module: imports_of(path, module, known) - {module} for module, path in paths.items()}


def room_of(module: str) -> str:
    """The most specific entry of MAY_IMPORT that ``module`` belongs to."""
    for depth in (2, 1):
        room = ".".join(module.split(".")[:depth])
        if room in MAY_IMPORT:
            return room
    raise AssertionError(f"{module} is in no room of the layout table")


def within(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(edges.items()):
        room = room_of(module)
        for target in sorted(targets):
            if within(target, (room, *MAY_IMPORT[room])):
                if within(target, (SIMULATOR,)) and not within(module, SIMULATOR_WIRING):
                    found.append(f"{module} imports the simulator {target}")
                continue
            found.append(f"{module} ({room}) imports {target}")
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = itertools.count()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = next(counter)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def without_package_inits(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges between modules only: importing ``a.b.c`` runs ``a/b/__init__`` first, but a
    package's ``__init__`` re-exporting its modules is not a cycle with them."""
    packages = {m for m in edges if any(o.startswith(m + ".") for o in edges)}
    return {
        m: {t for t in targets if t not in packages}
        for m, targets in edges.items()
        if m not in packages
    }


def test_every_import_respects_the_layers() -> None:
    found = violations(graph(ROOT))
    assert not found, "layering violated:\n" + "\n".join(found)


def test_no_import_cycle() -> None:
    found = cycles(without_package_inits(graph(ROOT)))
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def plant(root: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in OURS:
        (root / package).mkdir(exist_ok=True)
    return graph(root)


PLANTED = {
    "drivers imports appliance": ("drivers/gps.py", "from appliance.clock import Ensemble\n"),
    "timestamping imports daemon": ("timestamping/x.py", "import daemon.store\n"),
    "daemon imports appliance": (
        "daemon/v.py",
        "def f():\n    from appliance.tsa.credentials import load_credentials\n",
    ),
    "daemon imports drivers": ("daemon/v.py", "from drivers.monotonic import mono_ns\n"),
    "appliance imports horodate": ("appliance/runtime/a.py", "import horodate.cli\n"),
    "tsa imports clock": ("appliance/tsa/e.py", "from appliance.clock import Policy\n"),
    "tsa imports issuance": (
        "appliance/tsa/e.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from appliance.issuance.log import IssuanceLog\n",
    ),
    "clock imports http": ("appliance/clock/t.py", "from appliance.http import app\n"),
    "issuance imports clock": ("appliance/issuance/i.py", "from appliance.clock import Ensemble\n"),
    "http imports runtime": (
        "appliance/http/l.py",
        "from appliance.runtime.workers import WorkerPool\n",
    ),
    "http imports config": ("appliance/http/l.py", "from appliance.config import load\n"),
    "a room imports the simulator": (
        "appliance/runtime/assembly.py",
        "from drivers.sim.world import SimWorld\n",
    ),
    "relative import across rooms": ("appliance/tsa/e.py", "from ..http import app\n"),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_the_checker_catches_a_planted_violation(case: str, tmp_path: Path) -> None:
    name, text = PLANTED[case]
    siblings = {"appliance/http/app.py": "", "appliance/http/__init__.py": ""}
    edges = plant(tmp_path, {name: text, **siblings})
    assert violations(edges), f"{case}: not caught"


def test_the_checker_allows_what_the_table_allows(tmp_path: Path) -> None:
    edges = plant(
        tmp_path,
        {
            "appliance/http/app.py": "from appliance.issuance.issuer import TsaService\n",
            "appliance/runtime/driver_threads.py": "from drivers.sim.world import SimWorld\n",
            "daemon/v.py": "from timestamping.verify import verify_reply\n",
            "horodate/cli.py": "import appliance.http.app, daemon.v\n",
        },
    )
    assert violations(edges) == []


def test_the_checker_finds_a_cycle_even_through_type_checking(tmp_path: Path) -> None:
    edges = plant(
        tmp_path,
        {
            "appliance/http/a.py": "from appliance.http.b import x\n",
            "appliance/http/b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                "    from appliance.http.a import y\n"
            ),
            "appliance/http/c.py": "def f():\n    from appliance.http.a import y\n",
        },
    )
    assert cycles(without_package_inits(edges)) == [["appliance.http.a", "appliance.http.b"]]


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
