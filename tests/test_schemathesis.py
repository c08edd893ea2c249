"""Schemathesis against a running gateway, from the /openapi.json it serves: every check,
every phase (examples, coverage, fuzzing, stateful), a bounded number of examples.

Requests carry a valid token of `alice`, whose threads (with `bob`, the document's
examples) hold projected messages, so they reach the real handlers. Hooks
(tests/schemathesis_hooks.py) sort the users of generated thread ids, which no regex can
require. ``DUOLOGUE_SCHEMATHESIS_EXAMPLES`` and ``DUOLOGUE_SCHEMATHESIS_SEED`` change the
budget and the seed (default: fixed, so a run is repeatable). The section 8 limits are
off (start_api_gateway): answers of 429 would test nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.http_support import Projection, eid, start_api_gateway
from tests.support import ROOT, token

EXAMPLES = os.environ.get("DUOLOGUE_SCHEMATHESIS_EXAMPLES", "100")
SEED = os.environ.get("DUOLOGUE_SCHEMATHESIS_SEED", "20261205")

# Values a schema cannot tell apart from valid ones are refused with 400 invalid: a q with
# no word (docs/search.md: Postgres's parser says what a word is, no portable regex can),
# a `before` cursor the API did not make (opaque by contract).
OPERATIONS = """
[[operations]]
include-path = "/v1/search"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "429"]

[[operations]]
include-path = "/v1/threads"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "429"]
"""


@pytest.fixture
def api(redis_url: str, fresh_database: str, log_dir: Path, prefix: str):
    projection = Projection(fresh_database)
    for thread, other in (("dm:alice:bob", "bob"), ("dm:alice:carol", "carol")):
        projection.thread(thread, eid(3))
        for n, sender in ((1, "alice"), (2, other), (3, "alice")):
            projection.message(thread, eid(n), sender, f"hello number {n}")
    projection.close()
    gateway = start_api_gateway(redis_url, log_dir, prefix, DATABASE_URL=fresh_database)
    yield gateway
    gateway.terminate()


@pytest.mark.timeout(300)
def test_schemathesis_finds_nothing(api, tmp_path: Path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(OPERATIONS)
    command = [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config),
               "run", f"{api.http_url}/openapi.json", "--checks", "all",
               "--max-examples", EXAMPLES, "--seed", SEED, "--workers", "1",
               "--header", f"Authorization: Bearer {token('alice')}",
               "--request-timeout", "10"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
           "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=280)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-12000:]
    assert "Tested: 9" in output, output[-3000:]
