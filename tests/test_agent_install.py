"""An agent install that cannot succeed is caught before the instance launches
(ec2/agent.py): refused by aws_preflight and by install's validation in the
local engine, a warning elsewhere; and on a manager, a warning for a remote
install with no key pair."""

from __future__ import annotations

import pytest
from cloudify.exceptions import NonRecoverableError

from ec2 import agent
from tests.support import (
    IMAGE_ID,
    PLUGIN_YAML,
    assert_nothing_left,
    cfy,
    cfy_workdir,
    instance_node,
    live_instances,
    run_cfy,
)

DEFAULT_AGENT = {"port": 22}  # an agent_config without install_method: the engine installs remotely
KEYPAIR = "cloudify.aws.relationships.instance_connected_to_keypair"


def with_default_agent(**properties) -> dict:
    node = instance_node(**properties)
    node["properties"]["agent_config"] = DEFAULT_AGENT
    return node


def without_agent_config(**properties) -> dict:
    node = instance_node(**properties)
    del node["properties"]["agent_config"]  # the Compute type's default: install_method remote
    return node


# --- the verdict, without AWS --------------------------------------------------


def test_an_unset_install_method_is_read_as_remote():
    assert agent.install_method({"agent_config": {}}) == "remote"
    assert agent.install_method({"install_agent": False, "agent_config": {"install_method": "remote"}}) == "none"


@pytest.mark.parametrize("method", ["remote", "init_script", "plugin", "provided"])
def test_every_install_method_but_none_is_refused_by_install_in_the_local_engine(method):
    refusal, warning = agent.verdict(
        {"agent_config": {"install_method": method}},
        local=True,
        workflow="install",
        installs_agent=True,
        has_key_pair=True,
    )
    assert warning is None
    assert f"'agent_config.install_method' is '{method}'" in refusal
    assert "install_method: none" in refusal  # the fix


def test_install_method_none_is_fine_in_the_local_engine():
    assert agent.verdict(
        {"agent_config": {"install_method": "none"}},
        local=True,
        workflow="install",
        installs_agent=True,
        has_key_pair=False,
    ) == (None, None)


def test_a_workflow_that_installs_no_agent_only_warns_in_the_local_engine():
    refusal, warning = agent.verdict(
        {"agent_config": {}}, local=True, workflow="execute_operation", installs_agent=True, has_key_pair=True
    )
    assert refusal is None
    assert "execute_operation workflow installs no agent" in warning


def test_a_node_type_that_maps_no_agent_operation_is_left_alone():
    assert agent.verdict(
        {"agent_config": {}}, local=True, workflow="install", installs_agent=False, has_key_pair=False
    ) == (
        None,
        None,
    )


def test_on_a_manager_a_remote_install_without_a_key_pair_is_a_warning():
    refusal, warning = agent.verdict(
        {"agent_config": {"install_method": "remote"}},
        local=False,
        workflow="install",
        installs_agent=True,
        has_key_pair=False,
    )
    assert refusal is None
    assert "has no key pair" in warning and "KeyPair node" in warning


@pytest.mark.parametrize(("method", "has_key_pair"), [("remote", True), ("init_script", False), ("none", False)])
def test_on_a_manager_a_key_pair_or_another_install_method_needs_no_warning(method, has_key_pair):
    assert agent.verdict(
        {"agent_config": {"install_method": method}},
        local=False,
        workflow="install",
        installs_agent=True,
        has_key_pair=has_key_pair,
    ) == (None, None)


# --- in the local engine, on the moto server --------------------------------------


def test_aws_preflight_refuses_an_instance_whose_agent_would_install_and_creates_nothing(deploy, ec2):
    deployment = deploy({"server": without_agent_config(), "other": instance_node()})
    with pytest.raises(Exception, match="aws_preflight found 1 problem") as raised:
        deployment.execute("aws_preflight")
    message = str(raised.value)
    assert "node 'server'" in message and "node 'other'" not in message
    assert "'agent_config.install_method' is 'remote'" in message
    assert_nothing_left(ec2)


def test_install_refuses_it_in_validation_before_the_instance_launches(deploy, ec2, capsys):
    deployment = deploy({"server": with_default_agent()})
    with pytest.raises(Exception, match="creation_validation"):
        deployment.install()
    assert "node 'server': property 'agent_config.install_method' is 'remote'" in capsys.readouterr().out
    assert live_instances(ec2) == []
    assert ec2.describe_instances()["Reservations"] == []  # not even a terminated one


def test_a_validation_run_by_execute_operation_warns_and_passes(deploy, ec2, capsys):
    deployment = deploy({"server": with_default_agent()})
    deployment.execute_operation("cloudify.interfaces.validation.create", ["server"])
    assert "installs no agent itself" in capsys.readouterr().out
    assert ec2.describe_instances()["Reservations"] == []


def test_install_method_none_installs_as_before(deploy, ec2):
    deployment = deploy({"server": instance_node()})
    deployment.install()
    assert len(live_instances(ec2)) == 1
    deployment.uninstall()


def test_the_refusal_is_a_non_recoverable_error(deploy):
    deployment = deploy({"server": with_default_agent()})
    with pytest.raises(Exception) as raised:
        deployment.execute("aws_preflight")
    assert isinstance(raised.value, NonRecoverableError) or "NonRecoverableError" in repr(raised.value)


# --- through cfy -----------------------------------------------------------------------

BLUEPRINT = """\
tosca_definitions_version: cloudify_dsl_1_3
imports:
  - http://www.getcloudify.org/spec/cloudify/7.0.0/types.yaml
  - PLUGIN
node_templates:
  server:
    type: cloudify.aws.nodes.Instance
    properties:
      image_id: IMAGE
      instance_type: t3.micro
"""


def test_cfy_preflight_refuses_the_default_install_method_before_any_instance_exists(tmp_path, ec2):
    workdir = cfy_workdir(tmp_path / "cfy")
    folder = tmp_path / "bp"
    folder.mkdir()
    blueprint = folder / "blueprint.yaml"
    blueprint.write_text(BLUEPRINT.replace("PLUGIN", PLUGIN_YAML.as_uri()).replace("IMAGE", IMAGE_ID))
    cfy(workdir, "init", str(blueprint), "-b", "agentless")
    result = run_cfy(workdir, "executions", "start", "aws_preflight", "-b", "agentless")
    assert result.returncode != 0
    assert "'agent_config.install_method' is 'remote'" in result.stdout + result.stderr
    assert ec2.describe_instances()["Reservations"] == []
