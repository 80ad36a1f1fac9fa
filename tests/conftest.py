from __future__ import annotations

import json

import pytest
from cloudify.mocks import MockCloudifyContext
from cloudify.state import current_ctx

from ec2 import connection
from tests.support import (
    IMAGE_ID,
    CallRecorder,
    LocalDeployment,
    MotoServer,
    client_for,
    moto_images,
    quiet_logs,
    write_blueprint,
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


@pytest.fixture(autouse=True)
def aws_environment(moto_server, monkeypatch):
    """Every test talks to a freshly reset moto server through the standard
    boto3 chain, with fake credentials and nothing from the real home folder."""
    moto_server.reset()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    connection.clear_cache()
    yield
    connection.clear_cache()


@pytest.fixture
def ec2(moto_server):
    """A boto3 client for checking what exists in the emulator."""
    return client_for(moto_server.url)


@pytest.fixture
def calls(monkeypatch):
    """Records every EC2 operation that the plugin's clients send."""
    recorder = CallRecorder()
    create = connection._create_client

    def recording_client(settings):
        client = create(settings)
        client.meta.events.register("before-call.ec2", recorder.record)
        return client

    monkeypatch.setattr(connection, "_create_client", recording_client)
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

    def build(node_templates, dsl: str = "cloudify_dsl_1_3", inputs=None, resolver=None, **sections):
        path = write_blueprint(tmp_path, node_templates, dsl=dsl, **sections)
        return LocalDeployment(path, inputs=inputs, resolver=resolver)

    return build
