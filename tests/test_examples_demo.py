"""examples/demo.py, the driver behind `make demo`: it succeeds, fails
clearly, and stops its emulator on success, failure and Ctrl-C.

These need the Cloudify CLI, which `make demo` installs into the venv; they
are skipped when `cfy` is missing (CI runs `make demo` before `make test`)."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, TYPES_URL

DEMO = ROOT / "examples" / "demo.py"
CFY = Path(sys.executable).parent / "cfy"

pytestmark = pytest.mark.skipif(not CFY.exists(), reason="the Cloudify CLI is not installed (run make demo)")


def demo_environment() -> dict:
    """The demo sets its own fake credentials and endpoint; make sure nothing
    from the test environment or the home folder leaks in either way."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    return env


def run_demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DEMO), *args], capture_output=True, text=True, env=demo_environment(), timeout=600
    )


def emulator_pid(output: str) -> int:
    match = re.search(r"listening on http://127\.0\.0\.1:\d+, pid (\d+)", output)
    assert match, output
    return int(match.group(1))


def assert_gone(pid: int) -> None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    # Still there: make sure it is not this test's leak, then fail.
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f"the demo left its emulator (pid {pid}) running")


def test_demo_runs_end_to_end_and_stops_its_emulator(tmp_path):
    result = run_demo("--workdir", str(tmp_path / "work"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"instance_id\s+i-[0-9a-f]+", result.stdout)
    assert re.search(r"elastic_ip\s+\d+\.\d+\.\d+\.\d+", result.stdout)
    assert "nothing left" in result.stdout
    assert_gone(emulator_pid(result.stdout))
    config = yaml.safe_load((tmp_path / "work" / ".cloudify" / "config.yaml").read_text())
    (rule,) = config["import_resolver"]["parameters"]["rules"]
    assert list(rule.values()) == [(ROOT / "offline" / "types.yaml").as_uri()]


def test_demo_fails_clearly_and_still_stops_its_emulator(tmp_path):
    inputs = yaml.safe_load((ROOT / "examples" / "inputs-emulator.yaml").read_text())
    inputs["image_id"] = "ami-00000000000000000"
    bad = tmp_path / "bad-inputs.yaml"
    bad.write_text(yaml.safe_dump(inputs))
    result = run_demo("--workdir", str(tmp_path / "work"), "--inputs", str(bad), "--task-retries", "0")
    assert result.returncode == 1
    assert "demo FAILED: `cfy install" in result.stderr
    # The failed task's reason, which cfy's own error leaves out, is shown.
    assert "because:" in result.stderr and "image_id" in result.stderr
    assert "Stopping the EC2 emulator" in result.stdout
    assert_gone(emulator_pid(result.stdout))


def test_demo_cleans_up_when_interrupted(tmp_path):
    process = subprocess.Popen(
        [sys.executable, str(DEMO), "--workdir", str(tmp_path / "work")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=demo_environment(),
    )
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if "Installing the example blueprint" in line:
                process.send_signal(signal.SIGINT)
                break
        rest, errors = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(seen) + rest
    assert process.returncode in (0, 130), output + errors
    if process.returncode == 130:
        assert "demo INTERRUPTED" in errors
    assert "Stopping the EC2 emulator" in output
    assert_gone(emulator_pid(output))


def test_real_aws_needs_explicit_inputs_without_placeholders():
    result = run_demo("--target", "aws")
    assert result.returncode == 1
    assert "real AWS needs an inputs file" in result.stderr
    result = run_demo("--target", "aws", "--inputs", str(ROOT / "examples" / "inputs-aws.yaml"))
    assert result.returncode == 1
    assert "placeholder" in result.stderr
    assert "cfy install" not in result.stdout


def test_demo_workdir_can_be_prepared_again(tmp_path, monkeypatch):
    """A kept working folder (the real-AWS one) is reused on the next run."""
    spec = importlib.util.spec_from_file_location("demo_driver", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    monkeypatch.setenv("CFY_WORKDIR", str(tmp_path))
    demo.prepare_workdir(tmp_path / "work")
    demo.prepare_workdir(tmp_path / "work")
    config = yaml.safe_load((tmp_path / "work" / ".cloudify" / "config.yaml").read_text())
    assert "logging" in config
    assert config["import_resolver"]["parameters"]["rules"] == [{TYPES_URL: (ROOT / "offline" / "types.yaml").as_uri()}]
