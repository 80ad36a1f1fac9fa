"""The wagon that `make wagon` built in dist/ holds the plugin as it is in this
tree, its dependencies and plugin.yaml, and `wagon validate` accepted it.

Nothing is built here: `make wagon` builds and validates the wagon once, and
CI runs it before `make test`. Without a wagon in dist/, or with one built from
other sources, these tests skip (run `make wagon`); under CI=true they fail."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support import ROOT

DIST = ROOT / "dist"
VALIDATE_REPORT = DIST / "wagon-validate.txt"
IN_CI = os.environ.get("CI", "").lower() == "true"


def not_usable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (.ci/run runs `make wagon` before `make test`)")
    pytest.skip(f"{reason}: run `make wagon`")


def plugin_wheel_sources(wagon: Path) -> dict[str, bytes]:
    """The ec2 package's files as the plugin's own wheel inside the wagon holds them."""
    with zipfile.ZipFile(wagon) as archive:
        metadata = json.loads(archive.read("cloudify-aws-ec2-plugin/package.json"))
        (wheel,) = [w for w in metadata["wheels"] if w.startswith("cloudify_aws_ec2_plugin-")]
        wheel_bytes = archive.read(f"cloudify-aws-ec2-plugin/wheels/{wheel}")
    with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as inner:
        return {name: inner.read(name) for name in inner.namelist() if name.startswith("ec2/")}


def tree_sources() -> dict[str, bytes]:
    return {f"ec2/{path.name}": path.read_bytes() for path in sorted((ROOT / "ec2").glob("*.py"))}


def built_from_this_tree(wagon: Path) -> bool:
    with zipfile.ZipFile(wagon) as archive:
        inside = archive.read("cloudify-aws-ec2-plugin/files/plugin.yaml")
    return inside == (ROOT / "plugin.yaml").read_bytes() and plugin_wheel_sources(wagon) == tree_sources()


@pytest.fixture(scope="module")
def wagon_file() -> Path:
    built = sorted(DIST.glob("*.wgn"))
    if not built:
        not_usable("no wagon in dist/")
    assert len(built) == 1, f"`make wagon` leaves one wagon in dist/, found {[p.name for p in built]}"
    if not IN_CI and not built_from_this_tree(built[0]):
        not_usable(f"dist/{built[0].name} was built from other sources than this tree's")
    return built[0]


def test_wagon_holds_the_plugin_and_its_plugin_yaml(wagon_file):
    assert wagon_file.name.startswith("cloudify_aws_ec2_plugin-2.1.0-")
    with zipfile.ZipFile(wagon_file) as archive:
        names = archive.namelist()
        metadata = json.loads(archive.read("cloudify-aws-ec2-plugin/package.json"))
        inside = archive.read("cloudify-aws-ec2-plugin/files/plugin.yaml")
    assert inside == (ROOT / "plugin.yaml").read_bytes()
    assert metadata["package_name"] == "cloudify-aws-ec2-plugin"
    assert metadata["files"] == ["plugin.yaml"]
    wheels = metadata["wheels"]
    assert any(w.startswith("cloudify_aws_ec2_plugin-2.1.0-") for w in wheels)
    assert any(w.startswith("boto3-") for w in wheels)
    assert any(w.startswith("cloudify_common-") for w in wheels)
    assert all(f"cloudify-aws-ec2-plugin/wheels/{w}" in names for w in wheels)


def test_wagon_holds_the_ec2_package_as_it_is_in_this_tree(wagon_file):
    assert plugin_wheel_sources(wagon_file) == tree_sources()


def test_wagon_has_a_copy_of_plugin_yaml_beside_it(wagon_file):
    assert (DIST / "plugin.yaml").read_bytes() == (ROOT / "plugin.yaml").read_bytes()


def test_wagon_validate_accepts_it(wagon_file):
    report = VALIDATE_REPORT.read_text() if VALIDATE_REPORT.exists() else ""
    assert f"Validating dist/{wagon_file.name}" in report
    assert "Validation Passed" in report
