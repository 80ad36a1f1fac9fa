"""plugin.yaml: the classic names, parsed and installed under DSL 1_3, 1_4 and
1_5, with the project's offline types and, when present, the official ones."""

import re

import pytest
import yaml
from dsl_parser.parser import parse_from_path

from tests.support import (
    OFFLINE_TYPES,
    PLUGIN_YAML,
    REFERENCE_TYPES,
    ROOT,
    LocalDeployment,
    types_resolver,
    write_blueprint,
)

DSL_VERSIONS = ["cloudify_dsl_1_3", "cloudify_dsl_1_4", "cloudify_dsl_1_5"]
OFFICIAL_FILES = {
    "cloudify_dsl_1_3": "types_1_3.yaml",
    "cloudify_dsl_1_4": "types_1_4.yaml",
    "cloudify_dsl_1_5": "types.yaml",
}


def type_sources():
    yield pytest.param(lambda dsl: OFFLINE_TYPES, id="offline-types")
    yield pytest.param(
        lambda dsl: REFERENCE_TYPES / OFFICIAL_FILES[dsl],
        id="official-types",
        marks=pytest.mark.skipif(not REFERENCE_TYPES.is_dir(), reason="no ../shared/reference/cloudify-types here"),
    )


@pytest.fixture(scope="module")
def plugin():
    return yaml.safe_load(PLUGIN_YAML.read_text())


def test_the_plugin_is_named_aws_and_runs_on_the_central_deployment_agent(plugin):
    assert plugin["plugins"]["aws"]["executor"] == "central_deployment_agent"
    assert plugin["plugins"]["aws"]["package_name"] == "cloudify-aws-ec2-plugin"


def test_the_plugin_version_matches_setup_py(plugin):
    version = re.search(r'version="([^"]+)"', (ROOT / "setup.py").read_text()).group(1)
    assert plugin["plugins"]["aws"]["package_version"] == version


def test_all_four_node_types_are_declared_with_their_classic_bases(plugin):
    bases = {name: spec["derived_from"] for name, spec in plugin["node_types"].items()}
    assert bases == {
        "cloudify.aws.nodes.Instance": "cloudify.nodes.Compute",
        "cloudify.aws.nodes.KeyPair": "cloudify.nodes.Root",
        "cloudify.aws.nodes.SecurityGroup": "cloudify.nodes.SecurityGroup",
        "cloudify.aws.nodes.ElasticIP": "cloudify.nodes.Root",
    }


def test_the_three_relationships_are_declared(plugin):
    assert set(plugin["relationships"]) == {
        "cloudify.aws.relationships.instance_connected_to_elastic_ip",
        "cloudify.aws.relationships.instance_connected_to_keypair",
        "cloudify.aws.relationships.instance_connected_to_security_group",
    }
    for spec in plugin["relationships"].values():
        assert spec["derived_from"] == "cloudify.relationships.connected_to"


def test_every_node_type_has_the_common_properties_with_classic_defaults(plugin):
    for name, spec in plugin["node_types"].items():
        properties = spec["properties"]
        assert properties["use_external_resource"]["default"] is False, name
        assert properties["resource_id"]["default"] == "", name
        assert properties["aws_config"]["default"] == {}, name
        assert properties["tags"]["default"] == {}, name


def test_the_key_pair_requires_private_key_path(plugin):
    assert "default" not in plugin["node_types"]["cloudify.aws.nodes.KeyPair"]["properties"]["private_key_path"]


def test_the_security_group_rules_default_to_an_empty_list(plugin):
    assert plugin["node_types"]["cloudify.aws.nodes.SecurityGroup"]["properties"]["rules"]["default"] == []


@pytest.mark.parametrize(
    "node_type, operations",
    [
        (
            "cloudify.aws.nodes.KeyPair",
            {
                "cloudify.interfaces.lifecycle": {
                    "create": "aws.ec2.keypair.create",
                    "delete": "aws.ec2.keypair.delete",
                },
                "cloudify.interfaces.validation": {
                    "create": "aws.ec2.keypair.creation_validation",
                    "creation": "aws.ec2.keypair.creation_validation",
                },
            },
        ),
        (
            "cloudify.aws.nodes.SecurityGroup",
            {
                "cloudify.interfaces.lifecycle": {
                    "create": "aws.ec2.securitygroup.create",
                    "delete": "aws.ec2.securitygroup.delete",
                },
                "cloudify.interfaces.validation": {
                    "create": "aws.ec2.securitygroup.creation_validation",
                    "creation": "aws.ec2.securitygroup.creation_validation",
                },
            },
        ),
        (
            "cloudify.aws.nodes.Instance",
            {
                "cloudify.interfaces.lifecycle": {
                    "create": "aws.ec2.instance.run_instances",
                    "start": "aws.ec2.instance.start",
                    "stop": "aws.ec2.instance.stop",
                    "delete": "aws.ec2.instance.terminate",
                },
                "cloudify.interfaces.validation": {
                    "create": "aws.ec2.instance.creation_validation",
                    "creation": "aws.ec2.instance.creation_validation",
                    "check_status": "aws.ec2.instance.check_status",
                },
            },
        ),
        (
            "cloudify.aws.nodes.ElasticIP",
            {
                "cloudify.interfaces.lifecycle": {
                    "create": "aws.ec2.elasticip.allocate",
                    "delete": "aws.ec2.elasticip.release",
                },
                "cloudify.interfaces.validation": {
                    "create": "aws.ec2.elasticip.creation_validation",
                    "creation": "aws.ec2.elasticip.creation_validation",
                },
            },
        ),
    ],
)
def test_operations_keep_the_classic_paths(plugin, node_type, operations):
    interfaces = plugin["node_types"][node_type]["interfaces"]
    assert {name: {op: interfaces[name].get(op) for op in ops} for name, ops in operations.items()} == operations


@pytest.mark.parametrize("dsl", DSL_VERSIONS)
@pytest.mark.parametrize("types_file", type_sources())
def test_plugin_yaml_parses(tmp_path, dsl, types_file):
    nodes = {
        "key": {"type": "cloudify.aws.nodes.KeyPair", "properties": {"private_key_path": "/tmp/k.pem"}},
        "group": {"type": "cloudify.aws.nodes.SecurityGroup"},
        "vm": {
            "type": "cloudify.aws.nodes.Instance",
            "properties": {"image_id": "ami-12c6146b", "instance_type": "t2.micro"},
            "relationships": [
                {"type": "cloudify.aws.relationships.instance_connected_to_keypair", "target": "key"},
                {"type": "cloudify.aws.relationships.instance_connected_to_security_group", "target": "group"},
                {"type": "cloudify.aws.relationships.instance_connected_to_elastic_ip", "target": "ip"},
            ],
        },
        "ip": {"type": "cloudify.aws.nodes.ElasticIP"},
    }
    plan = parse_from_path(str(write_blueprint(tmp_path, nodes, dsl=dsl)), resolver=types_resolver(types_file(dsl)))
    assert {node["type"] for node in plan["nodes"]} == {
        "cloudify.aws.nodes.KeyPair",
        "cloudify.aws.nodes.SecurityGroup",
        "cloudify.aws.nodes.Instance",
        "cloudify.aws.nodes.ElasticIP",
    }


@pytest.mark.parametrize("dsl", DSL_VERSIONS)
@pytest.mark.parametrize("types_file", type_sources())
def test_a_key_pair_and_security_group_blueprint_installs_and_uninstalls(tmp_path, ec2, dsl, types_file):
    nodes = {
        "key": {"type": "cloudify.aws.nodes.KeyPair", "properties": {"private_key_path": str(tmp_path / "k.pem")}},
        "group": {
            "type": "cloudify.aws.nodes.SecurityGroup",
            "properties": {"rules": [{"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ip": "0.0.0.0/0"}]},
        },
    }
    deployment = LocalDeployment(write_blueprint(tmp_path, nodes, dsl=dsl), resolver=types_resolver(types_file(dsl)))
    deployment.install()
    assert len(ec2.describe_key_pairs()["KeyPairs"]) == 1
    deployment.uninstall()
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]


def test_plugin_yaml_parses_under_dsl_1_2_with_the_offline_types(tmp_path):
    nodes = {"key": {"type": "cloudify.aws.nodes.KeyPair", "properties": {"private_key_path": "/tmp/k.pem"}}}
    plan = parse_from_path(str(write_blueprint(tmp_path, nodes, dsl="cloudify_dsl_1_2")), resolver=types_resolver())
    assert [node["type"] for node in plan["nodes"]] == ["cloudify.aws.nodes.KeyPair"]


def test_the_elastic_ip_relationship_maps_establish_and_unlink_on_the_source(plugin):
    relationship = plugin["relationships"]["cloudify.aws.relationships.instance_connected_to_elastic_ip"]
    assert relationship["source_interfaces"] == {
        "cloudify.interfaces.relationship_lifecycle": {
            "establish": "aws.ec2.elasticip.associate",
            "unlink": "aws.ec2.elasticip.disassociate",
            "check_drift": "aws.ec2.drift.elastic_ip_association",
        }
    }


@pytest.mark.parametrize(
    "name",
    [
        "cloudify.aws.relationships.instance_connected_to_keypair",
        "cloudify.aws.relationships.instance_connected_to_security_group",
    ],
)
def test_the_keypair_and_security_group_relationships_map_no_operations(plugin, name):
    assert set(plugin["relationships"][name]) == {"derived_from"}
