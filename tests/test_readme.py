"""The README's two set-up commands are the ones CI and users run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_first_two_commands_are_demo_and_tests():
    demo, tests = readme_commands()[:2]
    assert "softseg demo --screenshot" in demo and demo.startswith("bash scripts/setup.sh")
    assert tests.endswith("-m pytest") and tests.startswith("bash scripts/setup.sh")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_manifest_ships_inside_the_package():
    link = ROOT / "napari_softseg" / "napari.yaml"
    assert link.resolve() == (ROOT / "napari.yaml").resolve()
