"""The agent's init script goes into the instance's user data for every
install method in cloudify.constants.AGENT_INSTALL_METHODS_SCRIPTS, alone or
with the user's own user data as multipart MIME; other methods add nothing."""

from __future__ import annotations

import base64
import email

import pytest
from cloudify import constants as cloudify_constants
from cloudify.mocks import MockCloudifyContext

from ec2 import instance, instance_request
from tests.support import IMAGE_ID

SCRIPT = "#!/bin/sh\necho installing the agent\n"
USER_DATA = "#cloud-config\npackages: [git]\n"
SCRIPT_METHODS = list(cloudify_constants.AGENT_INSTALL_METHODS_SCRIPTS)
OTHER_METHODS = [m for m in cloudify_constants.AGENT_INSTALL_METHODS if m not in SCRIPT_METHODS]


class FakeAgent:
    """ctx.agent as the manager gives it: hands out the init script, counting the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def init_script(self) -> str:
        self.calls += 1
        return SCRIPT


@pytest.fixture
def agent(monkeypatch):
    fake = FakeAgent()
    monkeypatch.setattr(MockCloudifyContext, "agent", property(lambda _: fake), raising=False)
    return fake


@pytest.fixture
def server_ctx(make_ctx):
    def build(install_method: str, **parameters):
        return make_ctx(
            {
                "image_id": IMAGE_ID,
                "instance_type": "t3.micro",
                "parameters": parameters,
                "agent_config": {"install_method": install_method},
                "wait_timeout": 30,
                "wait_interval": 0,
            },
            node_id="server",
            instance_id="server_abc123",
        )

    return build


def user_data_of(ctx) -> str | None:
    known = instance_request.read(ctx)
    return instance_request.build_request(known, instance_request.parse(ctx.node.properties)).get("UserData")


def parts_of(document: str) -> list[tuple[str, str]]:
    """(content type, text) of each part of a multipart MIME document."""
    message = email.message_from_string(document)
    assert message.is_multipart()
    return [(part.get_content_type(), part.get_payload(decode=True).decode()) for part in message.get_payload()]


def launched_user_data(ec2, ctx) -> str:
    instance.run_instances(ctx=ctx)
    instance_id = ctx.instance.runtime_properties["aws_resource_id"]
    value = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    return base64.b64decode(value).decode()


def test_every_install_method_that_has_a_script_is_tested():
    assert SCRIPT_METHODS == ["init_script", "provided", "plugin"]


@pytest.mark.parametrize("method", SCRIPT_METHODS)
def test_the_init_script_is_the_user_data_when_there_is_no_other(server_ctx, agent, method):
    assert user_data_of(server_ctx(method)) == SCRIPT
    assert agent.calls == 1


@pytest.mark.parametrize("method", SCRIPT_METHODS)
def test_the_init_script_follows_the_users_user_data_as_multipart_mime(server_ctx, agent, method):
    document = user_data_of(server_ctx(method, user_data=USER_DATA))
    assert parts_of(document) == [("text/cloud-config", USER_DATA), ("text/x-shellscript", SCRIPT)]


@pytest.mark.parametrize("method", SCRIPT_METHODS)
def test_the_init_script_lands_in_the_launched_instances_user_data(server_ctx, agent, ec2, method):
    document = launched_user_data(ec2, server_ctx(method, user_data=USER_DATA))
    assert [text for _, text in parts_of(document)] == [USER_DATA, SCRIPT]


@pytest.mark.parametrize("method", OTHER_METHODS)
def test_an_install_method_without_a_script_leaves_the_user_data_alone(server_ctx, agent, method):
    assert user_data_of(server_ctx(method, user_data=USER_DATA)) == USER_DATA
    assert agent.calls == 0


def test_install_agent_false_asks_for_no_script(make_ctx, agent):
    ctx = make_ctx(
        {"image_id": IMAGE_ID, "instance_type": "t3.micro", "parameters": {}, "install_agent": False},
        node_id="server",
        instance_id="server_abc123",
    )
    assert user_data_of(ctx) is None
    assert agent.calls == 0
