from __future__ import annotations

import json
import os

import pytest
from cloudify.mocks import MockCloudifyContext
from cloudify.state import current_ctx

from ec2 import connection
from tests.support import (
    IMAGE_ID,
    CallRecorder,
    Deployer,
    MotoServer,
    client_for,
    hook_clients,
    moto_images,
    quiet_logs,
)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """The session's EC2 emulator. It knows one image, IMAGE_ID (the one the
    tests launch, as moto describes it), not moto's 1300: building those again
    after every reset took about 0.2 s per test."""
    quiet_logs()
    images = tmp_path_factory.mktemp("moto") / "images.json"
    images.write_text(json.dumps(moto_images(IMAGE_ID)))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MOTO_AMIS_PATH", str(images))
        server = MotoServer()
    yield server
    # Its state is in memory only: no need to wait for moto's own slow exit.
    server.process.kill()
    server.process.wait()
    server.stop()


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "shared_deployment: the tests of this class only read what a class-scoped fixture installed once "
        "with deploy_once; the emulator is not reset between them",
    )
    config.addinivalue_line(
        "markers",
        "waits: the test spends most of its time waiting out a simulated EC2 lag, with little CPU",
    )


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, starts the tests marked ``waits`` first, in half of the
    workers (at least one). ``--dist worksteal`` (make test's; a worker's own
    options do not say) gives each worker a contiguous share of this order, so
    they go to the heads of the first shares, and the other workers have the CPU
    meanwhile. Left in file order they ran last and drew out the run."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    waiting = [item for item in items if item.get_closest_marker("waits")]
    if workers < 2 or not waiting:
        return
    others = iter([item for item in items if not item.get_closest_marker("waits")])
    lanes = max(1, workers // 2)
    ordered: list = []
    left = len(items)
    for worker in range(workers):
        share = left // (workers - worker)  # how worksteal sizes the shares, in turn
        left -= share
        head = waiting[worker::lanes] if worker < lanes else []
        ordered += head + [item for _, item in zip(range(share - len(head)), others, strict=False)]
    ordered += list(others)
    assert len(ordered) == len(items)
    items[:] = ordered


# The tests skipped in this session, with their reasons.
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        _SKIPPED.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    """Under CI=true a skipped test fails the run: everything a test needs is
    installed there, and ../shared is beside the clone."""
    if os.environ.get("CI") == "true" and _SKIPPED and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if os.environ.get("CI") == "true" and _SKIPPED:
        terminalreporter.section("CI=true: skipped tests fail the run")
        for line in _SKIPPED:
            terminalreporter.line(line)


def use_the_emulator(env: pytest.MonkeyPatch, url: str) -> None:
    """The standard boto3 chain's settings: the emulator's URL, fake
    credentials, and nothing from the real home folder."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        env.delenv(name, raising=False)
    env.setenv("AWS_ENDPOINT_URL", url)
    env.setenv("AWS_ACCESS_KEY_ID", "testing")
    env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    env.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")


@pytest.fixture(scope="session")
def session_environment(moto_server):
    """The emulator's settings for fixtures wider than a test (deploy_once)."""
    with pytest.MonkeyPatch.context() as env:
        use_the_emulator(env, moto_server.url)
        yield


@pytest.fixture(autouse=True)
def aws_environment(session_environment, moto_server, monkeypatch, request):
    """Every test talks to a freshly reset moto server through the standard
    boto3 chain. The tests of a class marked shared_deployment find instead
    what its fixture installed (deploy_once reset the emulator for them)."""
    if request.node.get_closest_marker("shared_deployment") is None:
        moto_server.reset()
    use_the_emulator(monkeypatch, moto_server.url)
    connection.clear_cache()
    yield
    connection.clear_cache()


@pytest.fixture(scope="session")
def ec2(moto_server):
    """A boto3 client for checking what exists in the emulator (one for the
    session: a client holds no state, and each costs thousands of objects)."""
    return client_for(moto_server.url)


@pytest.fixture
def calls(monkeypatch):
    """Records every EC2 operation that the plugin's clients send."""
    recorder = CallRecorder()
    hook_clients(monkeypatch, "before-call.ec2", recorder.record)
    return recorder


class RoleSessions:
    """Every AssumeRole the plugin's STS clients make: what was asked, and the
    role sessions (Credentials) STS answered, in order."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.sessions: list[dict] = []

    def record_request(self, params, **_) -> None:
        self.requests.append(dict(params))

    def record_answer(self, parsed, **_) -> None:
        if "Credentials" in parsed:
            self.sessions.append(parsed["Credentials"])

    @property
    def access_key_ids(self) -> list[str]:
        return [session["AccessKeyId"] for session in self.sessions]


@pytest.fixture
def role_sessions(monkeypatch):
    """Records the AssumeRole calls of the plugin's STS clients."""
    recorder = RoleSessions()
    create = connection._create_sts_client

    def recording_client(settings, **credentials):
        client = create(settings, **credentials)
        client.meta.events.register("provide-client-params.sts.AssumeRole", recorder.record_request)
        client.meta.events.register("after-call.sts.AssumeRole", recorder.record_answer)
        return client

    monkeypatch.setattr(connection, "_create_sts_client", recording_client)
    connection.clear_cache()
    return recorder


@pytest.fixture
def make_ctx():
    """Builds a MockCloudifyContext for a node and makes it the current ctx."""

    def build(properties: dict, node_id: str = "node", instance_id: str = "node_abc123", **kwargs):
        defaults = {"use_external_resource": False, "resource_id": "", "aws_config": {}, "tags": {}}
        ctx = MockCloudifyContext(
            node_id=instance_id,
            node_name=node_id,
            deployment_id=kwargs.pop("deployment_id", "dep"),
            properties={**defaults, **properties},
            **kwargs,
        )
        current_ctx.set(ctx)
        return ctx

    yield build
    current_ctx.clear()


@pytest.fixture
def deploy(tmp_path):
    """Deploys blueprint node templates with the local workflow engine."""
    return Deployer(tmp_path)


@pytest.fixture(scope="class")
def deploy_once(request, moto_server, session_environment, tmp_path_factory):
    """``deploy`` for the class-scoped fixture of a class marked
    shared_deployment, which installs one deployment for all its tests to
    read: the emulator is reset here, once for the class."""
    assert request.node.get_closest_marker("shared_deployment"), "deploy_once serves a class marked shared_deployment"
    moto_server.reset()
    connection.clear_cache()
    return Deployer(tmp_path_factory.mktemp(request.node.name))
