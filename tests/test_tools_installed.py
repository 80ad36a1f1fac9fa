"""cfy-aws-migrate and cfy-aws-offline work from a plain pip install of the
plugin, outside the clone: the plugin's wheel, built from a copy of the
sources, installed into a new virtual environment, run from another folder.

The wheel is installed with --no-deps, and its dependencies come from this
test environment's site-packages on PYTHONPATH (no .pth file there runs, so
the editable install of this clone is not seen): installing them from the
pip cache takes about 45 s more, for nothing these tests check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT

# What the wheel is built from (setup.py and MANIFEST.in name the rest).
SOURCES = ("setup.py", "MANIFEST.in", "pyproject.toml", "plugin.yaml", "offline", "ec2", "cloudify_aws_ec2_tools")
CLASSIC_34 = ROOT / "tests" / "blueprints" / "classic-3.4"


def ignore_caches(_folder: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "__pycache__"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A virtual environment holding the plugin's wheel; returns its bin folder."""
    base = tmp_path_factory.mktemp("installed")
    source = base / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore_caches)
        else:
            source.mkdir(exist_ok=True)
            shutil.copyfile(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "-w", str(base / "wheels")], check=True, timeout=300)
    (wheel,) = (base / "wheels").glob("*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base / "venv")], check=True, timeout=120)
    python = base / "venv" / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], check=True, timeout=300)
    return python.parent


def run(installed: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess:
    """Runs a command of the new environment in ``cwd``, its dependencies
    from this environment's site-packages."""
    env = dict(os.environ, PYTHONPATH=sysconfig.get_paths()["purelib"])
    env.pop("PYTHONSAFEPATH", None)
    program = str(installed / command[0]) if (installed / command[0]).exists() else command[0]
    return subprocess.run(
        [program, *command[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_tools_come_from_the_installed_package_and_no_tools_package_is_installed(installed, tmp_path):
    found = run(installed, tmp_path, "python", "-c", "import cloudify_aws_ec2_tools as t; print(t.__file__)")
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).is_relative_to(installed.parent)
    clash = run(installed, tmp_path, "python", "-c", "import tools")
    assert "No module named 'tools'" in clash.stderr


@pytest.mark.parametrize(
    "command", [("cfy-aws-migrate",), ("python", "-m", "cloudify_aws_ec2_tools.migrate")], ids=["script", "module"]
)
def test_migrate_runs_outside_the_clone(installed, tmp_path, command):
    assert "--rewrite-imports" in run(installed, tmp_path, *command, "--help").stdout
    shutil.copytree(CLASSIC_34, tmp_path / "classic")
    migrated = run(
        installed,
        tmp_path,
        *command,
        "classic/blueprint.yaml",
        "-i",
        "use_existing_group=true",
        "--rewrite-imports",
        "-o",
        "migrated/blueprint.yaml",
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "plugin:cloudify-aws-ec2-plugin" in (tmp_path / "migrated" / "blueprint.yaml").read_text()
    assert "agent_config" in (tmp_path / "migrated" / "types" / "hosts.yaml").read_text()
    assert "warning: node web_host_2 (web.nodes.Host) is an Instance with no key pair" in migrated.stdout


@pytest.mark.parametrize(
    "command", [("cfy-aws-offline",), ("python", "-m", "cloudify_aws_ec2_tools.offline")], ids=["script", "module"]
)
def test_offline_runs_outside_the_clone_and_serves_the_installed_files(installed, tmp_path, command):
    printed = run(installed, tmp_path, *command, "rules")
    assert printed.returncode == 0, printed.stderr
    targets = {target for rule in yaml.safe_load(printed.stdout)["rules"] for target in rule.values()}
    data = installed.parent / "lib"
    assert len(targets) == 2
    for target in targets:
        path = Path(target[len("file://") :])
        assert path.is_relative_to(data) and path.is_file()
    written = run(installed, tmp_path, *command, "write-cfy-config", "cfy")
    assert written.returncode == 0, written.stderr
    copies = tmp_path / "cfy" / ".cloudify" / "offline"
    assert (copies / "types.yaml").read_bytes() == (ROOT / "offline" / "types.yaml").read_bytes()
    assert (copies / "plugin-classic-dsl.yaml").read_bytes() == (
        ROOT / "offline" / "plugin-classic-dsl.yaml"
    ).read_bytes()
