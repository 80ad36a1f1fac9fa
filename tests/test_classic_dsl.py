"""The plugin file for cloudify_dsl_1_0 and 1_1 blueprints
(offline/plugin-classic-dsl.yaml): generated from plugin.yaml, never drifting
from it, and importable where plugin.yaml is not."""

from __future__ import annotations

import pytest
import yaml
from dsl_parser.exceptions import DSLParsingLogicException
from dsl_parser.import_resolver.default_import_resolver import DefaultImportResolver
from dsl_parser.parser import parse_from_path

from tests.support import CLASSIC_PLUGIN_URL, CLASSIC_TYPES_URL, write_classic_blueprint
from tools import offline


def parse(tmp_path, dsl: str, plugin_file):
    """Parses the classic blueprint, its plugin URL served by ``plugin_file``."""
    resolver = DefaultImportResolver(
        rules=[
            {CLASSIC_TYPES_URL: offline.file_url(offline.TYPES_FILE)},
            {CLASSIC_PLUGIN_URL: offline.file_url(plugin_file)},
        ]
    )
    return parse_from_path(str(write_classic_blueprint(tmp_path, dsl)), resolver=resolver)


def test_the_committed_file_is_what_generate_writes():
    """Fails when plugin.yaml changed and `python -m tools.offline generate` was not run."""
    committed = offline.CLASSIC_PLUGIN_FILE.read_text()
    assert committed == offline.classic_plugin_text(offline.PLUGIN_YAML.read_text())


def test_the_file_is_plugin_yaml_with_install_false_instead_of_the_package_keys():
    plugin = yaml.safe_load(offline.PLUGIN_YAML.read_text())
    classic = yaml.safe_load(offline.CLASSIC_PLUGIN_FILE.read_text())
    assert classic["plugins"]["aws"] == {"executor": "central_deployment_agent", "install": False}
    del plugin["plugins"], classic["plugins"]
    assert classic == plugin


def test_plugin_yaml_keeps_its_package_keys_for_the_manager():
    aws = yaml.safe_load(offline.PLUGIN_YAML.read_text())["plugins"]["aws"]
    assert set(offline.PACKAGE_KEYS) <= set(aws)
    assert "install" not in aws


@pytest.mark.parametrize("dsl", ["cloudify_dsl_1_0", "cloudify_dsl_1_1"])
def test_an_old_dsl_blueprint_imports_the_file(tmp_path, dsl):
    plan = parse(tmp_path, dsl, offline.CLASSIC_PLUGIN_FILE)
    server = next(node for node in plan["nodes"] if node["id"] == "server")
    assert server["operations"]["cloudify.interfaces.lifecycle.create"]["operation"] == "ec2.instance.run_instances"
    assert server["operations"]["cloudify.interfaces.lifecycle.create"]["plugin"] == "aws"
    assert {node["type"] for node in plan["nodes"]} == {
        "cloudify.aws.nodes.KeyPair",
        "cloudify.aws.nodes.SecurityGroup",
        "cloudify.aws.nodes.ElasticIP",
        "cloudify.aws.nodes.Instance",
    }


def test_an_old_dsl_blueprint_cannot_import_plugin_yaml_itself(tmp_path):
    """Why the file exists: dsl_parser refuses package_name below cloudify_dsl_1_2."""
    refused = "package_(name|version) not supported in version cloudify_dsl_1_1"
    with pytest.raises(DSLParsingLogicException, match=refused):
        parse(tmp_path, "cloudify_dsl_1_1", offline.PLUGIN_YAML)


def test_generate_writes_the_file_and_then_finds_it_up_to_date(tmp_path):
    target = tmp_path / "plugin-classic-dsl.yaml"
    assert offline.generate(offline.PLUGIN_YAML, target) is True
    assert offline.generate(offline.PLUGIN_YAML, target) is False
    assert target.read_text() == offline.CLASSIC_PLUGIN_FILE.read_text()


def test_generate_check_fails_on_a_stale_file(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "plugin-classic-dsl.yaml"
    stale.write_text(offline.CLASSIC_PLUGIN_FILE.read_text().replace("default: 30", "default: 31"))
    monkeypatch.setattr(offline, "CLASSIC_PLUGIN_FILE", stale)
    assert offline.main(["generate", "--check"]) == 1
    assert "out of date" in capsys.readouterr().err


def test_generate_refuses_package_keys_it_cannot_drop_line_by_line():
    source = "plugins:\n  aws: {executor: central_deployment_agent, package_name: x, package_version: '1'}\n"
    with pytest.raises(ValueError, match="changed more than those keys"):
        offline.classic_plugin_text(source)
