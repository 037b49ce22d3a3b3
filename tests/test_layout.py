"""The layout's rule, checked over the source: nothing outside a task's or a modality's home
compares anything with its registered name (a task's home is its module or package, a
modality's its folder). Code elsewhere asks the registered class (a property, a method), so
a new task or modality lands as new files without edits across the package."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

from polymodal.modalities import MODALITIES
from polymodal.options import CONFIG_OPTIONS
from polymodal.registry import Registry
from polymodal.tasks import TASKS

SOURCE = Path(inspect.getfile(import_module("polymodal"))).parent


def homes(registry: Registry) -> dict[str, Path]:
    """Each registered name → the folder of its package, or its own module file."""
    found = {}
    for name in registry.names():
        path = Path(inspect.getfile(registry.get(name))).resolve()
        found[name] = path.parent if path.parent.name == name else path
    return found


def compared_strings(node: ast.Compare) -> list[str]:
    """String constants on either side of a comparison, also inside a tuple, list or set."""
    found = []
    for side in (node.left, *node.comparators):
        items = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
        found += [
            i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)
        ]
    return found


def name_switches(names: dict[str, Path], root: Path = SOURCE) -> list[str]:
    """`file:line: code` for each comparison with a registered name outside its home."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            for value in compared_strings(node):
                home = names.get(value)
                if home is not None and not path.resolve().is_relative_to(home):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("registry", [TASKS, MODALITIES], ids=["tasks", "modalities"])
def test_no_code_outside_a_home_switches_on_its_name(registry):
    assert name_switches(homes(registry)) == []


def test_the_check_finds_a_switch_planted_outside_the_home(tmp_path):
    """The scan itself can fail: a comparison with 'match' outside the match task's home,
    inside a tuple too, is found; the same comparisons inside it are not."""
    home = tmp_path / "tasks" / "match"
    home.mkdir(parents=True)
    (home / "cli.py").write_text('ok = target.task == "match"\n')
    (tmp_path / "options.py").write_text('a = task == "match"\nb = kind in ("image", "match")\n')
    found = name_switches({"match": home}, root=tmp_path)
    assert found == [
        "options.py:1: task == 'match'",
        "options.py:2: kind in ('image', 'match')",
    ]


def test_every_option_given_by_name_resolves_to_a_function():
    named = {
        key: option.edit for key, option in CONFIG_OPTIONS.items() if isinstance(option.edit, str)
    }
    assert {"match", "decoder"} <= set(named)
    for key, target in named.items():
        module, _, function = target.partition(":")
        assert callable(getattr(import_module(module), function)), key


def test_the_command_line_starts_without_torch():
    """A task's options are imported only when given, so `polymodal --help` stays quick."""
    code = "import sys, polymodal.cli; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
