"""The README documents every command, and CI runs the README's own test command."""

from __future__ import annotations

import re
from pathlib import Path

import click

from topiq_video.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _commands(group: click.Group, prefix: str = "topiq-video") -> list[str]:
    names = []
    for name, command in group.commands.items():
        full = f"{prefix} {name}"
        if isinstance(command, click.Group):
            names.extend(_commands(command, full))
        else:
            names.append(full)
    return names


def test_every_command_is_documented():
    commands = _commands(cli)
    assert {"topiq-video score", "topiq-video report", "topiq-video models"} <= set(commands)
    for command in commands:
        assert f"`{command}" in README, f"README does not document {command}"


def test_every_command_has_help():
    for name, command in cli.commands.items():
        assert command.help, f"{name} has no help text"


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    test_commands = [b for b in blocks if "pytest" in b]
    assert test_commands, "README shows no test command"
    assert test_commands[0] in (ROOT / ".ci" / "run").read_text()


def test_readme_states_the_weights_terms():
    assert "non-commercial" in README and "IQA-PyTorch" in README
    assert "Big Buck Bunny" in README and "CC-BY 3.0" in README


def test_public_names_resolve_after_their_modules_are_imported():
    """Importing a submodule binds its name on the package; no public name may be shadowed
    by a module that way (``topiq_video.compare`` once turned into the module)."""
    import importlib
    import types

    import topiq_video

    for module in sorted(set(topiq_video._LAZY.values())):
        importlib.import_module(module)
    for name in topiq_video.__all__:
        value = getattr(topiq_video, name)
        assert not isinstance(value, types.ModuleType), name
    assert callable(topiq_video.compare_encodes)
