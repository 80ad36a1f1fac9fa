"""The plugin builds into a wagon with plugin.yaml inside, and `wagon
validate` accepts it (as `make wagon` does, but in a scratch copy so that the
source tree stays clean)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import ROOT

WAGON = Path(sys.executable).parent / "wagon"


@pytest.fixture(scope="module")
def wagon_file(tmp_path_factory) -> Path:
    if not WAGON.exists():
        pytest.skip("wagon is not installed")
    source = tmp_path_factory.mktemp("source") / "cloudify-aws-plugin"
    source.mkdir()
    for name in ("setup.py", "plugin.yaml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "ec2", source / "ec2", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wagon")
    result = subprocess.run(
        [str(WAGON), "create", str(source), "-o", str(out), "-f", "--add-file", "plugin.yaml"],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("*.wgn")
    return built


def test_wagon_holds_the_plugin_and_its_plugin_yaml(wagon_file):
    assert wagon_file.name.startswith("cloudify_aws_plugin-2.0.0-")
    with zipfile.ZipFile(wagon_file) as archive:
        names = archive.namelist()
        metadata = json.loads(archive.read("cloudify-aws-plugin/package.json"))
        inside = archive.read("cloudify-aws-plugin/files/plugin.yaml")
    assert inside == (ROOT / "plugin.yaml").read_bytes()
    assert metadata["package_name"] == "cloudify-aws-plugin"
    assert metadata["files"] == ["plugin.yaml"]
    wheels = metadata["wheels"]
    assert any(w.startswith("cloudify_aws_plugin-2.0.0-") for w in wheels)
    assert any(w.startswith("boto3-") for w in wheels)
    assert any(w.startswith("cloudify_common-") for w in wheels)
    assert all(f"cloudify-aws-plugin/wheels/{w}" in names for w in wheels)


def test_wagon_validate_accepts_it(wagon_file):
    result = subprocess.run([str(WAGON), "validate", str(wagon_file)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation Passed" in result.stdout + result.stderr
