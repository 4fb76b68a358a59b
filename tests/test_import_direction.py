"""Which parts of the project may import which: the direction docs/architecture.md draws, checked on the code.

Every import in the three packages (at module level or inside a function: both are dependencies) is read
with ``ast``. The rules say what must never happen; ``KNOWN_BACK_EDGES`` listed what still did (the debt
issue 13 removed) and is empty now. The test fails on a new back edge, and on a listed one that is gone, so
the list only ever shrinks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "sync", "firmware_config")
# Command-line entry points: only a dispatcher imports them (shared CLI helpers belong in the core).
# The trust core: records, signed messages, the verifier, one errors module. It imports nothing else.
CORE = {"agent.evidence", "agent.errors"}
# The typed settings the device's packages are built from: the configuration's, which the device imports.
SETTINGS = "firmware_config.settings"
DISPATCHERS = {"agent.cli", "sync.cli"}
CLI_MODULES = {"agent.cli", "agent.verify_cli", "agent.simulate", "sync.cli", "sync.station.cli",
               "sync.uploader.cli", "firmware_config.provision_cli"}

# (importing unit, imported unit) pairs that break a rule, tolerated as known debt. A unit is a subpackage
# (agent.evidence, sync.station) or a top-level module (agent.daemon, sync.protocol).
KNOWN_BACK_EDGES: set[tuple[str, str]] = set()  # none left (issue 13 removed them); keep it empty


def unit_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def module_of(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports() -> set[tuple[str, str, str]]:
    """(importing module, its unit, imported module) for every project import."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            source = module_of(path)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                found.update((source, unit_of(source), name) for name in names if name.split(".")[0] in PACKAGES)
    return found


def broken_rule(source_module: str, source: str, target_module: str) -> str | None:
    """Why importing ``target_module`` from ``source_module`` goes against the direction, or None."""
    target = unit_of(target_module)
    if source == target:
        return None
    if (target_module in CLI_MODULES or target in CLI_MODULES) and source_module not in DISPATCHERS:
        return "a command-line module is imported (nothing imports a CLI)"
    if source_module in CLI_MODULES:
        return None  # an entry point sits above everything else
    if source in CORE and target not in CORE:
        return "the trust core imports something outside itself"
    if source == "agent.camera" and target not in ("agent.errors", SETTINGS):
        return "the camera knows nothing of evidence or the rest of the device"
    if source.startswith("firmware_config") and target.startswith("sync"):
        return "configuration imports the sync side"
    if source.startswith("firmware_config") and target.startswith("agent") and target not in CORE:
        return "configuration imports the device beyond the core"
    if source in ("agent.workflow",) and target not in ("agent.errors", "agent.evidence", SETTINGS):
        return "the state machine imports beyond the core"
    if source.startswith("agent") and target.startswith("sync"):
        return "the device imports the sync side"
    return None


def back_edges() -> dict[tuple[str, str], str]:
    edges: dict[tuple[str, str], str] = {}
    for source_module, source, target_module in sorted(imports()):
        why = broken_rule(source_module, source, target_module)
        if why is not None:
            edges.setdefault((source, unit_of(target_module)), why)
    return edges


def test_no_new_back_edge_and_none_listed_that_is_gone() -> None:
    found = back_edges()
    new = {edge: why for edge, why in found.items() if edge not in KNOWN_BACK_EDGES}
    gone = KNOWN_BACK_EDGES - set(found)
    assert not new, f"imports against the direction of docs/architecture.md: {new}"
    assert not gone, f"fixed, so take them off KNOWN_BACK_EDGES: {sorted(gone)}"


def test_the_rules_see_a_back_edge() -> None:
    """The checker itself: each rule fires on the kind of import it forbids."""
    assert broken_rule("agent.evidence.custody", "agent.evidence", "agent.control_socket")
    assert broken_rule("agent.camera.opencv", "agent.camera", "agent.evidence.clock")
    assert broken_rule("agent.camera.base", "agent.camera", "firmware_config.settings") is None
    assert broken_rule("agent.camera.base", "agent.camera", "firmware_config.device_config")
    assert broken_rule("agent.workflow.state", "agent.workflow", "firmware_config.settings") is None
    assert broken_rule("agent.workflow.state", "agent.workflow", "firmware_config.device_config")
    assert broken_rule("sync.station.report", "sync.station", "agent.verify_cli")
    assert broken_rule("sync.cli", "sync.cli", "sync.station.cli") is None  # a dispatcher
    assert broken_rule("firmware_config.provision_cli", "firmware_config.provision_cli", "sync.enrollment") is None
    assert broken_rule("firmware_config.profiles", "firmware_config.profiles", "agent.workflow.state")
    assert broken_rule("firmware_config.profiles", "firmware_config.profiles", "agent.evidence.procedure") is None
    assert broken_rule("firmware_config.device_config", "firmware_config.device_config", "sync.broker")
    assert broken_rule("sync.station.intake", "sync.station", "agent.evidence.record") is None


def test_the_state_machine_loads_no_crypto() -> None:
    """The pure state machine folds the ledger's officer assignments without the signing code (a fresh
    interpreter: what importing ``agent.workflow.machine`` loads, nothing else of the suite)."""
    probe = "import sys, agent.workflow.machine; print(sorted(m for m in sys.modules if m.startswith('cryptography')))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
