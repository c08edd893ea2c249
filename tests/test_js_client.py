"""The JavaScript client (clients/js): its generated protocol types match schemas/, and
its own test suite (``npm test``: Node's test runner against real gateways, and the
check that the committed build is the build of the committed sources) passes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.support import ROOT

JS = ROOT / "clients" / "js"


def test_protocol_types_are_generated_from_the_schemas() -> None:
    done = subprocess.run([sys.executable, str(JS / "scripts" / "gen_protocol.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(900)
def test_npm_test_passes() -> None:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail("Node.js and npm are needed (.ci/run installs them)")
    if not (JS / "node_modules" / ".bin" / "tsc").exists():
        pytest.fail("clients/js has no node_modules: run `npm ci` there (scripts/test does)")
    env = {**os.environ, "DUOLOGUE_PYTHON": sys.executable}
    done = subprocess.run([npm, "test"], cwd=JS, env=env, capture_output=True, text=True,
                          timeout=840)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
