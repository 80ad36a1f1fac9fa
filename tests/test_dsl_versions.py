"""The example blueprints parse as shipped (cloudify_dsl_1_5), and under
cloudify_dsl_1_3, 1_4 and 1_5, with the project's offline base types and, when
the reference copies exist, with the official ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dsl_parser.parser import parse_from_path

from tests.support import OFFLINE_TYPES, PLUGIN_YAML, REFERENCE_TYPES, ROOT, TYPES_URL, types_resolver

EXAMPLES = ROOT / "examples"
BLUEPRINTS = ["blueprint.yaml", "external-resources.yaml"]
DSL_VERSIONS = ["cloudify_dsl_1_3", "cloudify_dsl_1_4", "cloudify_dsl_1_5"]
# The official types file that goes with each DSL version.
OFFICIAL_TYPES = {
    "cloudify_dsl_1_3": "types_1_3.yaml",
    "cloudify_dsl_1_4": "types_1_4.yaml",
    "cloudify_dsl_1_5": "types.yaml",
}
PLUGIN_TYPES = {
    "keypair": "cloudify.aws.nodes.KeyPair",
    "security_group": "cloudify.aws.nodes.SecurityGroup",
    "elastic_ip": "cloudify.aws.nodes.ElasticIP",
    "vm": "cloudify.aws.nodes.Instance",
}


def as_version(tmp_path: Path, name: str, dsl: str) -> Path:
    """A copy of an example blueprint declaring another DSL version, with the
    plugin imported by absolute URI so that the copy can live anywhere."""
    blueprint = yaml.safe_load((EXAMPLES / name).read_text())
    assert blueprint["imports"] == [TYPES_URL, "../plugin.yaml"]
    blueprint["tosca_definitions_version"] = dsl
    blueprint["imports"] = [TYPES_URL, PLUGIN_YAML.as_uri()]
    path = tmp_path / name
    path.write_text(yaml.safe_dump(blueprint, sort_keys=False))
    return path


def check_parsed(plan: dict) -> None:
    nodes = {node["id"]: node for node in plan["nodes"]}
    assert set(nodes) == set(PLUGIN_TYPES)
    for node_id, type_name in PLUGIN_TYPES.items():
        assert nodes[node_id]["type"] == type_name
        create = nodes[node_id]["operations"]["cloudify.interfaces.lifecycle.create"]
        assert create["plugin"] == "aws", f"{node_id}'s create is not mapped to the aws plugin"
        assert create["operation"].startswith("ec2."), create["operation"]
    vm = nodes["vm"]
    assert "cloudify.nodes.Compute" in vm["type_hierarchy"]
    assert vm["properties"]["agent_config"]["install_method"] == "none"
    assert {r["type"] for r in vm["relationships"]} == {
        "cloudify.aws.relationships.instance_connected_to_keypair",
        "cloudify.aws.relationships.instance_connected_to_security_group",
        "cloudify.aws.relationships.instance_connected_to_elastic_ip",
    }
    assert {"instance_id", "private_ip", "elastic_ip"} <= set(plan["outputs"])


@pytest.mark.parametrize("name", BLUEPRINTS)
def test_example_declares_the_dsl_version_of_the_official_types(name):
    """The official 7.x types.yaml behind the imported URL needs 1_5."""
    blueprint = yaml.safe_load((EXAMPLES / name).read_text())
    assert blueprint["tosca_definitions_version"] == "cloudify_dsl_1_5"
    assert blueprint["imports"] == [TYPES_URL, "../plugin.yaml"]


@pytest.mark.parametrize("name", BLUEPRINTS)
def test_example_parses_as_it_is(name):
    check_parsed(parse_from_path(str(EXAMPLES / name), resolver=types_resolver()))


@pytest.mark.skipif(not REFERENCE_TYPES.is_dir(), reason=f"no reference types at {REFERENCE_TYPES}")
@pytest.mark.parametrize("name", BLUEPRINTS)
def test_example_as_shipped_parses_with_the_official_types(name):
    """What a manager (or an online cfy) does: the example file itself, its
    types URL served by the official types.yaml."""
    plan = parse_from_path(str(EXAMPLES / name), resolver=types_resolver(REFERENCE_TYPES / "types.yaml"))
    check_parsed(plan)


@pytest.mark.parametrize("dsl", DSL_VERSIONS)
@pytest.mark.parametrize("name", BLUEPRINTS)
def test_example_parses_with_the_offline_types(tmp_path, name, dsl):
    plan = parse_from_path(str(as_version(tmp_path, name, dsl)), resolver=types_resolver(OFFLINE_TYPES))
    check_parsed(plan)


@pytest.mark.skipif(not REFERENCE_TYPES.is_dir(), reason=f"no reference types at {REFERENCE_TYPES}")
@pytest.mark.parametrize("dsl", DSL_VERSIONS)
@pytest.mark.parametrize("name", BLUEPRINTS)
def test_example_parses_with_the_official_types(tmp_path, name, dsl):
    types_file = REFERENCE_TYPES / OFFICIAL_TYPES[dsl]
    plan = parse_from_path(str(as_version(tmp_path, name, dsl)), resolver=types_resolver(types_file))
    check_parsed(plan)
