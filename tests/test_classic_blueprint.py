"""A blueprint written for the classic plugin runs unchanged: its old import
URLs (pointed at this project's files by resolver rules, as a manager or a
cfy config would), install_agent: false, boto 2 connection keys, classic rules
and boto 2 run_instances parameters."""

from urllib.parse import urlparse

import pytest
from dsl_parser.import_resolver.default_import_resolver import DefaultImportResolver

from tests.support import IMAGE_ID, OFFLINE_TYPES, PLUGIN_YAML, LocalDeployment, assert_nothing_left, live_instances

CLASSIC_TYPES_URL = "http://www.getcloudify.org/spec/cloudify/3.4/types.yaml"
CLASSIC_PLUGIN_URL = "http://www.getcloudify.org/spec/aws-plugin/1.4/plugin.yaml"

CLASSIC_BLUEPRINT = """
tosca_definitions_version: cloudify_dsl_1_2

imports:
  - {types}
  - {plugin}

inputs:
  aws_config: {{}}
  key_path: {{}}

node_templates:
  keypair:
    type: cloudify.aws.nodes.KeyPair
    properties:
      resource_id: classic-key
      private_key_path: {{ get_input: key_path }}
      aws_config: {{ get_input: aws_config }}

  security_group:
    type: cloudify.aws.nodes.SecurityGroup
    properties:
      resource_id: classic-group
      description: classic rules
      rules:
        - ip_protocol: tcp
          from_port: 22
          to_port: 22
          cidr_ip: 0.0.0.0/0
      aws_config: {{ get_input: aws_config }}

  elasticip:
    type: cloudify.aws.nodes.ElasticIP
    properties:
      aws_config: {{ get_input: aws_config }}

  server:
    type: cloudify.aws.nodes.Instance
    properties:
      install_agent: false
      image_id: {image}
      instance_type: m3.medium
      parameters:
        placement: us-east-1b
        user_data: "#!/bin/bash\\necho hello"
        instance_initiated_shutdown_behavior: stop
      aws_config: {{ get_input: aws_config }}
    relationships:
      - type: cloudify.aws.relationships.instance_connected_to_keypair
        target: keypair
      - type: cloudify.aws.relationships.instance_connected_to_security_group
        target: security_group
      - type: cloudify.aws.relationships.instance_connected_to_elastic_ip
        target: elasticip

outputs:
  endpoint:
    value: {{ get_attribute: [server, public_ip_address] }}
"""


@pytest.fixture
def classic(tmp_path, moto_server):
    path = tmp_path / "classic.yaml"
    path.write_text(CLASSIC_BLUEPRINT.format(types=CLASSIC_TYPES_URL, plugin=CLASSIC_PLUGIN_URL, image=IMAGE_ID))
    resolver = DefaultImportResolver(
        rules=[{CLASSIC_TYPES_URL: OFFLINE_TYPES.as_uri()}, {CLASSIC_PLUGIN_URL: PLUGIN_YAML.as_uri()}]
    )
    endpoint = urlparse(moto_server.url)
    inputs = {
        "aws_config": {
            "aws_access_key_id": "classic",
            "aws_secret_access_key": "classic",
            "ec2_region_name": "us-east-1",
            "ec2_region_endpoint": endpoint.hostname,
            "port": endpoint.port,
            "is_secure": False,
        },
        "key_path": str(tmp_path / "classic-key.pem"),
    }
    return LocalDeployment(path, inputs=inputs, resolver=resolver)


def test_a_classic_blueprint_installs_unchanged(classic, ec2, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the boto 2 keys alone must reach the emulator
    classic.install()
    (server,) = live_instances(ec2)
    assert server["KeyName"] == "classic-key"
    assert server["Placement"]["AvailabilityZone"] == "us-east-1b"
    assert [group["GroupName"] for group in server["SecurityGroups"]] == ["classic-group"]
    (address,) = ec2.describe_addresses()["Addresses"]
    assert classic.env.outputs()["endpoint"] == address["PublicIp"] == classic.runtime("elasticip")["aws_resource_id"]


def test_a_classic_blueprint_uninstalls_leaving_nothing(classic, ec2, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    classic.install()
    classic.uninstall()
    assert_nothing_left(ec2)
