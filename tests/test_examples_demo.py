"""examples/demo.py, the driver behind `make demo`: it succeeds, fails
clearly, and stops its emulator on success, failure and Ctrl-C.

These need the Cloudify CLI, which `make demo` installs into the venv; they
are skipped when `cfy` is missing (CI runs `make demo` before `make test`)."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dsl_parser.import_resolver.default_import_resolver import DefaultImportResolver

from tests.support import CFY, ROOT, TYPES_URL
from tools import offline

DEMO = ROOT / "examples" / "demo.py"

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
    assert stat.S_IMODE((tmp_path / "work" / "inputs.yaml").stat().st_mode) == 0o600
    config = yaml.safe_load((tmp_path / "work" / ".cloudify" / "config.yaml").read_text())
    # one step serves the standard URL and every classic one (tools.offline)
    # (served from copies in the workdir, so the clone may move)
    copies = tmp_path / "work" / ".cloudify" / "offline"
    rules = config["import_resolver"]["parameters"]["rules"]
    assert rules == offline.cfy_rules(copies)
    assert DefaultImportResolver(rules=rules, fallback=False).resolve(TYPES_URL) == (copies / "types.yaml").read_text()


def test_demo_fails_clearly_and_still_stops_its_emulator(tmp_path):
    inputs = yaml.safe_load((ROOT / "examples" / "inputs-emulator.yaml").read_text())
    inputs["image_id"] = "ami-00000000000000000"
    bad = tmp_path / "bad-inputs.yaml"
    bad.write_text(yaml.safe_dump(inputs))
    result = run_demo("--workdir", str(tmp_path / "work"), "--inputs", str(bad), "--task-retries", "0")
    assert result.returncode == 1
    # aws_preflight, run before install, refuses the AMI: nothing is created.
    assert "demo FAILED: `cfy executions start aws_preflight" in result.stderr
    # The failed task's reason, which cfy's own error leaves out, is shown.
    assert "because:" in result.stderr and "image_id" in result.stderr
    assert "Stopping the EC2 emulator" in result.stdout
    assert_gone(emulator_pid(result.stdout))


# A line the demo prints while `cfy install` is running.
INSTALL_MARKER = b"Task started 'ec2.instance.run_instances'"
on_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs /proc and F_SETPIPE_SZ to watch the demo's processes"
)


def proc_table() -> dict[int, tuple[int, str, list[str]]]:
    """Every live (not zombie) process: pid -> (parent pid, start time, argv)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # it ended meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), fields[19], argv)
    return table


def descendants(pid: int) -> dict[int, str]:
    """The processes below pid: pid -> start time (to tell a reused pid)."""
    table = proc_table()
    found: dict[int, str] = {}
    parents = {pid}
    while True:
        more = {p: t for p, (ppid, t, _) in table.items() if ppid in parents and p not in found}
        if not more:
            return found
        found.update(more)
        parents = set(more)


def survivors(children: dict[int, str], workdir: Path, port: int | None) -> list[str]:
    """What is still running of the demo, killed once found: its former
    children, and anything whose command line names its working folder or its
    emulator's port."""
    left = []
    for pid, (_, started, argv) in proc_table().items():
        if children.get(pid) == started or any(str(workdir) in arg for arg in argv) or str(port) in argv:
            left.append(f"{pid}: {' '.join(argv)[:200]}")
            os.kill(pid, signal.SIGKILL)  # not this test's leak, whatever happens
    return left


class DemoProcess:
    """The demo behind a one-page stdout pipe. Once the test stops reading at
    the marker, the demo can print at most 4 KiB more, far less than what
    is left of its run, so it cannot finish before the test's signal arrives:
    the signal always lands mid-run, whatever the machine's speed."""

    def __init__(self, workdir: Path, sigint: signal.Handlers = signal.SIG_DFL) -> None:
        self.workdir = workdir
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
        self.stdout = os.fdopen(read_end, "rb", buffering=0)
        self.process = subprocess.Popen(
            [sys.executable, str(DEMO), "--workdir", str(workdir)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=demo_environment(),
            # The disposition of SIGINT the demo inherits: default, or ignored
            # as in a background job of a non-interactive shell.
            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
        )
        os.close(write_end)
        self.output = b""
        self.children: dict[int, str] = {}

    def read_until(self, marker: bytes) -> None:
        """Reads byte by byte, so that nothing beyond the marker's line is
        taken out of the pipe."""
        line = b""
        while not (line.endswith(b"\n") and marker in line):
            if line.endswith(b"\n"):
                line = b""
            byte = self.stdout.read(1)
            assert byte, f"the demo ended before printing {marker!r}:\n{self.output.decode()}"
            self.output += byte
            line += byte
        self.children = descendants(self.process.pid)

    def port(self) -> int | None:
        match = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", self.output)
        return int(match.group(1)) if match else None

    def survivors(self) -> list[str]:
        return survivors(self.children, self.workdir, self.port())

    def finish(self) -> tuple[str, str]:
        """Reads the rest of the output and waits for the demo to exit."""
        self.output += self.stdout.read()
        errors = self.process.stderr.read()
        self.process.wait(timeout=300)
        return self.output.decode(), errors.decode()

    def close(self) -> None:
        """Whatever the test's outcome: no demo, emulator or cfy stays."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.survivors()
        self.stdout.close()
        self.process.stderr.close()


@pytest.fixture
def demo_process(tmp_path):
    started: list[DemoProcess] = []

    def start(**kwargs) -> DemoProcess:
        started.append(DemoProcess(tmp_path / "work", **kwargs))
        return started[-1]

    yield start
    for demo in started:
        demo.close()


@on_linux
@pytest.mark.parametrize(
    ("signum", "inherited_sigint"),
    [
        (signal.SIGINT, signal.SIG_DFL),
        (signal.SIGINT, signal.SIG_IGN),
        (signal.SIGHUP, signal.SIG_DFL),
        (signal.SIGTERM, signal.SIG_DFL),
    ],
    ids=["sigint", "sigint-inherited-ignored", "sighup", "sigterm"],
)
def test_demo_cleans_up_when_interrupted_during_install(demo_process, signum, inherited_sigint):
    demo = demo_process(sigint=inherited_sigint)
    demo.read_until(INSTALL_MARKER)
    assert len(demo.children) >= 2, "expected the emulator and cfy below the demo"
    demo.process.send_signal(signum)
    output, errors = demo.finish()

    assert demo.process.returncode == 128 + signum, output + errors
    assert f"demo INTERRUPTED ({signal.Signals(signum).name})" in errors
    assert "Stopping the EC2 emulator" in output
    assert "Demo finished" not in output
    assert demo.survivors() == []


@on_linux
def test_emulator_and_cfy_die_with_a_killed_demo(demo_process):
    """SIGKILL leaves the demo no cleanup: the emulator's watchdog pipe and
    PR_SET_PDEATHSIG end its children anyway."""
    demo = demo_process()
    demo.read_until(INSTALL_MARKER)
    assert len(demo.children) >= 2, "expected the emulator and cfy below the demo"
    demo.process.kill()
    demo.finish()
    # They go at once, but asynchronously: wait (generously) until they have.
    deadline = time.monotonic() + 60
    while any(demo.children.get(pid) == started for pid, (_, started, _) in proc_table().items()):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert demo.survivors() == []


def test_real_aws_needs_explicit_inputs_without_placeholders():
    result = run_demo("--target", "aws")
    assert result.returncode == 1
    assert "real AWS needs an inputs file" in result.stderr
    result = run_demo("--target", "aws", "--inputs", str(ROOT / "examples" / "inputs-aws.yaml"))
    assert result.returncode == 1
    assert "placeholder" in result.stderr
    assert "cfy install" not in result.stdout


@pytest.mark.parametrize("key", ["aws_secret_access_key", "aws_session_token", "security_token"])
def test_real_aws_refuses_credentials_in_the_inputs(tmp_path, key):
    inputs = yaml.safe_load((ROOT / "examples" / "inputs-aws.yaml").read_text())
    inputs["aws_config"] = {"region_name": "eu-west-1", "aws_access_key_id": "AKIAEXAMPLE", key: "s3cr3t"}
    inputs["image_id"] = "ami-0123456789abcdef0"
    path = tmp_path / "inputs.yaml"
    path.write_text(yaml.safe_dump(inputs))
    workdir = tmp_path / "work"
    result = run_demo("--target", "aws", "--inputs", str(path), "--workdir", str(workdir))
    assert result.returncode == 1
    assert f"holds credentials in aws_config ({key})" in result.stderr
    assert "boto3" in result.stderr and "s3cr3t" not in result.stderr
    assert "cfy install" not in result.stdout
    assert not workdir.exists()


def load_demo():
    spec = importlib.util.spec_from_file_location("demo_driver", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def test_resolved_inputs_are_written_private_even_with_umask_0(tmp_path):
    demo = load_demo()
    target = tmp_path / "inputs.yaml"
    target.write_text("old")
    target.chmod(0o644)
    previous = os.umask(0)
    try:
        demo.write_private(target, "aws_config: {}\n")
    finally:
        os.umask(previous)
    assert target.read_text() == "aws_config: {}\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["inputs.yaml"]


def test_demo_workdir_can_be_prepared_again(tmp_path, monkeypatch):
    """A kept working folder (the real-AWS one) is reused on the next run."""
    demo = load_demo()
    monkeypatch.setenv("CFY_WORKDIR", str(tmp_path))
    ran = []
    monkeypatch.setattr(demo, "cfy", lambda *args, **_: ran.append(args))
    demo.prepare_workdir(tmp_path / "work")
    demo.prepare_workdir(tmp_path / "work")
    assert ran == []  # write-cfy-config writes what cfy needs: no bare `cfy init`
    config = yaml.safe_load((tmp_path / "work" / ".cloudify" / "config.yaml").read_text())
    assert "logging" in config
    copies = tmp_path / "work" / ".cloudify" / "offline"
    assert config["import_resolver"]["parameters"]["rules"] == offline.cfy_rules(copies)
