""".ci/run installs into a fresh environment every time (issue 19, item 10): a stale .venv-ci could hide a
dependency the project's own files no longer install."""

from __future__ import annotations

import shlex
from pathlib import Path

CI = Path(__file__).resolve().parents[1] / ".ci" / "run"


def test_ci_makes_its_virtual_environment_afresh():
    venv_lines = [
        line for line in CI.read_text().splitlines() if " -m venv " in line and not line.lstrip().startswith("#")
    ]
    assert venv_lines, "no 'python -m venv' line in .ci/run"
    for line in venv_lines:
        assert "--clear" in shlex.split(line), f"{line!r}: reuses an existing environment (add --clear)"
