"""The README opens with the two commands, and CI runs the test command exactly."""

import re

from tests.conftest import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)[:2]


def test_readme_opens_with_setup_and_repro_then_setup_and_tests():
    build, test = readme_commands()
    assert build.startswith("python3.11 -m venv .venv") and build.endswith("dvc repro")
    assert test.startswith("python3.11 -m venv .venv") and test.endswith("pytest")


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci
