"""The package's shape, as issue 22 left it, kept: no import circles (TYPE_CHECKING and
function-level imports included), a command line that reaches the library only through its public
names, and no code outside the outputs module that asks whether an output is a folder or a bucket.
Figures come from ``scripts/structure.py`` (run it for the numbers and the import graph)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def structure() -> ModuleType:
    # The script reads the package relative to the working folder, as its docstring says.
    spec = importlib.util.spec_from_file_location("structure", ROOT / "scripts" / "structure.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        patch.setitem(sys.modules, "structure", module)
        spec.loader.exec_module(module)
        module.LAYERS = module.graph()
    return module


def test_no_import_circle_at_any_layer(structure: ModuleType) -> None:
    merged: dict[str, set[str]] = {}
    for kind in ("module", "function", "typing"):
        for source, targets in structure.LAYERS[kind].items():
            merged.setdefault(source, set()).update(targets)
        assert structure.circles(merged) == [], f"a circle through {kind}-level imports"


def test_the_command_line_uses_only_public_modules(structure: ModuleType) -> None:
    # A few small shared helpers stay private (the issue allows it), none of them batch's: the
    # contract's ranges for the flags' help, the one converter for JSON reports, the one file
    # layer, secrets scrubbed from messages, and exit statuses with the one mapping behind them.
    helpers = {"_spec", "_converter", "_files", "_config", "_failures"}
    public = re.compile(
        r"novita_async(\.batch|\.webhooks|\.ray|\.emulator(\.\w+)?|\._cli(\.\w+)?)?$"
    )
    reached = {
        (source, target)
        for layer in structure.LAYERS.values()
        for source, targets in layer.items()
        if source == "novita_async._cli" or source.startswith("novita_async._cli.")
        for target in targets
        if not public.match(target) and target.removeprefix("novita_async.") not in helpers
    }
    assert reached == set()


def test_only_the_outputs_module_tells_a_folder_from_a_bucket(structure: ModuleType) -> None:
    branch = re.compile(r"isinstance\([^)]*(ObjectOutput|LocalOutput)")
    found = [
        f"{path}:{number}"
        for path in structure.COUNTED.values()
        if path.as_posix() != "novita_async/batch/_outputs.py"
        for number, line in enumerate((ROOT / path).read_text(encoding="utf-8").splitlines(), 1)
        if branch.search(line)
    ]
    assert found == []
