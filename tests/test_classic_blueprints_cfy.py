"""Blueprints of the shapes the classic era wrote, run through the real `cfy`
CLI on the emulator with the offline import rules of `python -m
tools.offline write-cfy-config`: each installs, uninstalls and leaves nothing
behind. A blueprint that writes `use_external_resource: {get_input: ...}` is
refused by cfy as written, and installs after `python -m tools.migrate`.

(The cloudify_dsl_1_1 blueprint with classic imports is run through cfy in
tests/test_offline_imports.py; the two-host blueprint here is one too.)
Skipped without cfy (`make demo` installs it); failed instead when CI=true.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import IMAGE_ID, ROOT, cfy, cfy_workdir, live_instances, run_cfy

RETRIES = ("--task-retries", "10", "--task-retry-interval", "1")

# A manager blueprint of the 3.2 era (cloudify_dsl_1_0): two key pairs, a
# manager group and an agents group, an elastic IP and the manager's host.
# The manager group's rules name the agents group through get_property, as
# the classic manager blueprints did. A group's rules are authorised when it
# is created, so the group a rule names must exist by then: the reference
# goes one way, and depends_on creates the agents group first (and deletes it
# last). The agents group opens SSH to the world, as classic ones did.
MANAGER_BLUEPRINT = """\
tosca_definitions_version: cloudify_dsl_1_0

imports:
  - http://www.getcloudify.org/spec/cloudify/3.2/types.yaml
  - http://www.getcloudify.org/spec/aws-plugin/1.2/plugin.yaml

inputs:
  image_id: {}
  instance_type:
    default: m3.medium
  manager_keypair_name:
    default: classic-manager-key
  agent_keypair_name:
    default: classic-agent-key
  manager_key_path: {}
  agent_key_path: {}
  manager_security_group_name:
    default: classic-manager-group
  agents_security_group_name:
    default: classic-agents-group

node_templates:
  manager_keypair:
    type: cloudify.aws.nodes.KeyPair
    properties:
      use_external_resource: false
      resource_id: { get_input: manager_keypair_name }
      private_key_path: { get_input: manager_key_path }

  agent_keypair:
    type: cloudify.aws.nodes.KeyPair
    properties:
      use_external_resource: false
      resource_id: { get_input: agent_keypair_name }
      private_key_path: { get_input: agent_key_path }

  agents_security_group:
    type: cloudify.aws.nodes.SecurityGroup
    properties:
      use_external_resource: false
      resource_id: { get_input: agents_security_group_name }
      description: Cloudify agents
      rules:
        - ip_protocol: tcp
          from_port: 22
          to_port: 22
          cidr_ip: 0.0.0.0/0

  management_security_group:
    type: cloudify.aws.nodes.SecurityGroup
    properties:
      use_external_resource: false
      resource_id: { get_input: manager_security_group_name }
      description: Cloudify manager
      rules:
        - ip_protocol: tcp
          from_port: 22
          to_port: 22
          cidr_ip: 0.0.0.0/0
        - ip_protocol: tcp
          from_port: 80
          to_port: 80
          cidr_ip: 0.0.0.0/0
        - ip_protocol: tcp
          from_port: 5672
          to_port: 5672
          src_group_id: { get_property: [agents_security_group, resource_id] }
        - ip_protocol: tcp
          from_port: 8101
          to_port: 8101
          src_group_id: { get_property: [agents_security_group, resource_id] }
        - ip_protocol: tcp
          from_port: 53229
          to_port: 53229
          src_group_id: { get_property: [agents_security_group, resource_id] }
    relationships:
      - type: cloudify.relationships.depends_on
        target: agents_security_group

  manager_ip:
    type: cloudify.aws.nodes.ElasticIP
    properties:
      use_external_resource: false

  manager_host:
    type: cloudify.aws.nodes.Instance
    properties:
      use_external_resource: false
      install_agent: false
      image_id: { get_input: image_id }
      instance_type: { get_input: instance_type }
    relationships:
      - type: cloudify.aws.relationships.instance_connected_to_keypair
        target: manager_keypair
      - type: cloudify.aws.relationships.instance_connected_to_security_group
        target: management_security_group
      - type: cloudify.aws.relationships.instance_connected_to_elastic_ip
        target: manager_ip

outputs:
  manager_ip:
    value: { get_attribute: [manager_host, public_ip_address] }
"""

# An application blueprint of the 3.3 era (cloudify_dsl_1_1): a web host
# with its group and the elastic IP, a database host with its own group,
# which admits the web group by name. The web host is connected to its group
# by relationship; the database host names its group in
# parameters.security_groups, the classic boto 2 key, ordered by depends_on.
TWO_HOST_BLUEPRINT = """\
tosca_definitions_version: cloudify_dsl_1_1

imports:
  - http://getcloudify.org/spec/cloudify/3.3.1/types.yaml
  - http://www.getcloudify.org/spec/aws-plugin/1.3.1/plugin.yaml

inputs:
  image: {}
  size:
    default: m3.medium

node_templates:
  web_security_group:
    type: cloudify.aws.nodes.SecurityGroup
    properties:
      resource_id: classic-web-group
      description: web servers
      rules:
        - ip_protocol: tcp
          from_port: 8080
          to_port: 8080
          cidr_ip: 0.0.0.0/0

  db_security_group:
    type: cloudify.aws.nodes.SecurityGroup
    properties:
      resource_id: classic-db-group
      description: database servers
      rules:
        - ip_protocol: tcp
          from_port: 27017
          to_port: 27017
          src_group_id: { get_property: [web_security_group, resource_id] }
    relationships:
      - type: cloudify.relationships.depends_on
        target: web_security_group

  web_ip:
    type: cloudify.aws.nodes.ElasticIP

  web_host:
    type: cloudify.aws.nodes.Instance
    properties:
      install_agent: false
      image_id: { get_input: image }
      instance_type: { get_input: size }
    relationships:
      - type: cloudify.aws.relationships.instance_connected_to_security_group
        target: web_security_group
      - type: cloudify.aws.relationships.instance_connected_to_elastic_ip
        target: web_ip

  db_host:
    type: cloudify.aws.nodes.Instance
    properties:
      install_agent: false
      image_id: { get_input: image }
      instance_type: { get_input: size }
      parameters:
        security_groups: [{ get_property: [db_security_group, resource_id] }]
    relationships:
      - type: cloudify.relationships.depends_on
        target: db_security_group

outputs:
  endpoint:
    value: { get_attribute: [web_host, public_ip_address] }
"""

# A system-test shaped blueprint that takes use_external_resource from the
# inputs, as every classic manager blueprint and system test did.
FROM_INPUTS_BLUEPRINT = """\
tosca_definitions_version: cloudify_dsl_1_1

imports:
  - http://www.getcloudify.org/spec/cloudify/3.2/types.yaml
  - http://www.getcloudify.org/spec/aws-plugin/1.2/plugin.yaml

inputs:
  use_existing_group:
    default: false
  group_name:
    default: classic-existing-group
  use_existing_keypair:
    default: false
  key_path: {}

node_templates:
  keypair:
    type: cloudify.aws.nodes.KeyPair
    properties:
      use_external_resource: { get_input: use_existing_keypair }
      resource_id: classic-system-test-key
      private_key_path: { get_input: key_path }

  group:
    type: cloudify.aws.nodes.SecurityGroup
    properties:
      use_external_resource: { get_input: use_existing_group }
      resource_id: { get_input: group_name }
      description: system test

  host:
    type: cloudify.aws.nodes.Instance
    properties:
      install_agent: false
      image_id: IMAGE
      instance_type: m3.medium
    relationships:
      - type: cloudify.aws.relationships.instance_connected_to_keypair
        target: keypair
      - type: cloudify.aws.relationships.instance_connected_to_security_group
        target: group
""".replace("IMAGE", IMAGE_ID)


# --- running cfy ------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A cfy working directory holding the offline import rules."""
    return cfy_workdir(tmp_path / "cfy")


def write(folder: Path, name: str, text: str) -> Path:
    """A file in its own folder: cfy copies a blueprint's whole folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def outputs(workdir: Path, name: str) -> dict:
    """The deployment's outputs: local cfy prints them as JSON (and prints nothing with --json)."""
    return json.loads(cfy(workdir, "deployments", "outputs", "-b", name))


# --- what exists in the emulator ------------------------------------------------------


def groups_by_name(ec2) -> dict[str, dict]:
    return {group["GroupName"]: group for group in ec2.describe_security_groups()["SecurityGroups"]}


def assert_nothing_left(ec2, *key_files: Path, kept_groups: tuple[str, ...] = ()) -> None:
    assert live_instances(ec2) == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert sorted(groups_by_name(ec2)) == sorted(["default", *kept_groups])
    assert [path for path in key_files if path.exists()] == []


def source_groups(group: dict, port: int) -> list[str]:
    (permission,) = [p for p in group["IpPermissions"] if p.get("FromPort") == port]
    return [pair["GroupId"] for pair in permission["UserIdGroupPairs"]]


# --- the blueprints ---------------------------------------------------------------------


def test_a_manager_style_blueprint_installs_and_uninstalls_through_cfy(tmp_path, workdir, ec2):
    blueprint = write(tmp_path / "manager", "manager-blueprint.yaml", MANAGER_BLUEPRINT)
    manager_key, agent_key = tmp_path / "keys" / "manager.pem", tmp_path / "keys" / "agent.pem"
    inputs = write(
        tmp_path / "inputs",
        "inputs.yaml",
        yaml.safe_dump({"image_id": IMAGE_ID, "manager_key_path": str(manager_key), "agent_key_path": str(agent_key)}),
    )
    cfy(workdir, "install", str(blueprint), "-b", "manager", "-i", str(inputs), *RETRIES)

    (host,) = live_instances(ec2)
    groups = groups_by_name(ec2)
    manager_group, agents_group = groups["classic-manager-group"], groups["classic-agents-group"]
    assert host["KeyName"] == "classic-manager-key"
    assert [group["GroupId"] for group in host["SecurityGroups"]] == [manager_group["GroupId"]]
    for port in (5672, 8101, 53229):
        assert source_groups(manager_group, port) == [agents_group["GroupId"]]
    assert sorted(key["KeyName"] for key in ec2.describe_key_pairs()["KeyPairs"]) == [
        "classic-agent-key",
        "classic-manager-key",
    ]
    (address,) = ec2.describe_addresses()["Addresses"]
    assert address["InstanceId"] == host["InstanceId"]
    assert outputs(workdir, "manager")["manager_ip"] == address["PublicIp"]

    cfy(workdir, "uninstall", "-b", "manager", *RETRIES)
    assert_nothing_left(ec2, manager_key, agent_key)


def test_a_two_host_blueprint_with_one_elastic_ip_and_a_group_per_host_installs_and_uninstalls_through_cfy(
    tmp_path, workdir, ec2
):
    blueprint = write(tmp_path / "app", "two-hosts.yaml", TWO_HOST_BLUEPRINT)
    cfy(workdir, "install", str(blueprint), "-b", "app", "-i", f"image={IMAGE_ID}", *RETRIES)

    groups = groups_by_name(ec2)
    web_group, db_group = groups["classic-web-group"]["GroupId"], groups["classic-db-group"]["GroupId"]
    hosts = {tuple(group["GroupId"] for group in host["SecurityGroups"]): host for host in live_instances(ec2)}
    assert sorted(hosts) == sorted([(web_group,), (db_group,)])
    assert source_groups(groups["classic-db-group"], 27017) == [web_group]
    (address,) = ec2.describe_addresses()["Addresses"]
    assert address["InstanceId"] == hosts[(web_group,)]["InstanceId"]
    assert outputs(workdir, "app")["endpoint"] == address["PublicIp"]

    cfy(workdir, "uninstall", "-b", "app", *RETRIES)
    assert_nothing_left(ec2)


def test_cfy_refuses_use_external_resource_from_an_input_as_written(tmp_path, workdir):
    blueprint = write(tmp_path / "classic", "system-test.yaml", FROM_INPUTS_BLUEPRINT)
    result = run_cfy(workdir, "install", str(blueprint), "-b", "refused", "-i", f"key_path={tmp_path / 'k.pem'}")
    assert result.returncode != 0
    assert "Only boolean values are allowed for `use_external_resource`" in result.stdout + result.stderr


def test_a_blueprint_with_use_external_resource_from_inputs_installs_after_migration(tmp_path, workdir, ec2):
    existing = ec2.create_security_group(GroupName="classic-existing-group", Description="made beforehand")
    blueprint = write(tmp_path / "classic", "system-test.yaml", FROM_INPUTS_BLUEPRINT)
    migrated = tmp_path / "migrated" / "system-test.yaml"
    migrated.parent.mkdir()
    migration = subprocess.run(
        [sys.executable, "-m", "tools.migrate", str(blueprint), "-i", "use_existing_group=true", "-o", str(migrated)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migration.returncode == 0, migration.stderr
    assert "use_external_resource" in migration.stdout
    properties = {
        node: template["properties"]["use_external_resource"]
        for node, template in yaml.safe_load(migrated.read_text())["node_templates"].items()
        if node != "host"
    }
    assert properties == {"keypair": False, "group": True}

    key_path = tmp_path / "keys" / "system-test.pem"
    cfy(workdir, "install", str(migrated), "-b", "migrated", "-i", f"key_path={key_path}", *RETRIES)
    (host,) = live_instances(ec2)
    assert [group["GroupId"] for group in host["SecurityGroups"]] == [existing["GroupId"]]
    assert host["KeyName"] == "classic-system-test-key"

    cfy(workdir, "uninstall", "-b", "migrated", *RETRIES)
    assert_nothing_left(ec2, key_path, kept_groups=("classic-existing-group",))
