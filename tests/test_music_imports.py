"""Layering of the code (issue 16): the music world (suite/music, DESIGN.md section 5) has
no import circle and imports no network or Lightning module; nothing under suite/ but
suite/run.py imports lightning_modules. Imports inside functions count too."""

import ast
from pathlib import Path

SUITE = Path(__file__).resolve().parent.parent / "suite"
MUSIC = SUITE / "music"


def _imports(path: Path) -> set[str]:
    """Every module a file imports (`from a.b import c` counts as a.b and a.b.c)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


def _music_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in MUSIC.glob("*.py")} - {"__init__"}
    return {
        name: {m.split(".")[2] for m in _imports(MUSIC / f"{name}.py")
               if m.startswith("suite.music.") and m.split(".")[2] in modules} - {name}
        for name in modules
    }  # fmt: skip


def test_music_world_has_no_import_circle():
    graph = _music_graph()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, "import circle: " + " -> ".join((*path, name))
        if name not in done:
            for dep in sorted(graph[name]):
                visit(dep, (*path, name))
            done.add(name)

    for name in sorted(graph):
        visit(name, ())
    assert {"corpus", "midi", "midi_import"} <= set(graph)
    assert "corpus" not in graph["midi"] and "corpus" not in graph["midi_import"]


def test_music_world_imports_no_network_or_lightning_module():
    allowed = {"suite", "suite.music", "suite.artifacts", "suite.audio_files"}
    for path in sorted(MUSIC.glob("*.py")):
        ours = {m for m in _imports(path) if m.split(".")[0] in ("suite", "lightning_modules",
                                                                 "datamodules", "lightning")}  # fmt: skip
        outside = {m for m in ours if not m.startswith("suite.music.") and m not in allowed}
        outside = {m for m in outside if not m.startswith(("suite.artifacts.", "suite.audio_files."))}
        assert not outside, f"{path.name} imports {sorted(outside)}"


# The run task (the only Hydra-aware layer) is run.py and the modules split out of it: how a
# run ends, what it checks before writing, and the Hydra callback that creates the store.
RUN_TASK = {"run.py", "run_end.py", "run_checks.py", "preflight.py", "mlflow_store.py"}


def test_only_suite_run_imports_lightning_modules():
    for path in sorted(SUITE.rglob("*.py")):
        if path.parent == SUITE and path.name in RUN_TASK:
            continue
        bad = {m for m in _imports(path) if m.split(".")[0] == "lightning_modules"}
        assert not bad, f"{path.relative_to(SUITE.parent)} imports {sorted(bad)}"
