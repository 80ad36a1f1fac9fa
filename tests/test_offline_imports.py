"""One step resolves every classic import URL offline: tools.offline's rules,
its resolver for the Python API, and the cfy config it writes; a classic
cloudify_dsl_1_1 blueprint installs and uninstalls through both."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from dsl_parser.import_resolver.default_import_resolver import DefaultImportResolver
from dsl_parser.parser import parse_from_path
from dsl_parser.version import SUPPORTED_VERSIONS

from tests.support import (
    LocalDeployment,
    assert_nothing_left,
    cfy,
    cfy_workdir,
    live_instances,
    write_classic_blueprint,
)
from tools import offline

# Import URLs found in real classic-era blueprints and docs, and later ones.
TYPES_URLS = [
    "http://www.getcloudify.org/spec/cloudify/3.2/types.yaml",
    "http://www.getcloudify.org/spec/cloudify/3.2m8/types.yaml",
    "http://www.getcloudify.org/spec/cloudify/3.3m5/types.yaml",
    "http://www.getcloudify.org/spec/cloudify/3.3rc1/types.yaml",
    "http://getcloudify.org/spec/cloudify/3.3.1/types.yaml",
    "http://www.getcloudify.org/spec/cloudify/3.4/types.yaml",
    "http://www.getcloudify.org/spec/cloudify/3.4.1/types.yaml",
    "http://www.getcloudify.org/spec/cloudify/3.5m1/types.yaml",
    "http://getcloudify.org/spec/cloudify/4.0m4/types.yaml",
    "http://www.getcloudify.org/spec/cloudify/4.3.1/types.yaml",
    "https://www.getcloudify.org/spec/cloudify/4.5.5/types.yaml",
    "http://cloudify.co/spec/cloudify/4.5.5/types.yaml",
    "http://cloudify.co/spec/cloudify/5.0.5/types.yaml",
    "https://www.getcloudify.org/spec/cloudify/5.1.0/types.yaml",
    "https://cloudify.co/spec/cloudify/6.3.0/types.yaml",
    "http://www.getcloudify.org/spec/cloudify/6.4.0/types.yaml",
    "http://www.getcloudify.org/spec/cloudify/7.0.0/types.yaml",
]
PLUGIN_URLS = [
    "http://www.getcloudify.org/spec/aws-plugin/1.2/plugin.yaml",
    "http://www.getcloudify.org/spec/aws-plugin/1.2m8/plugin.yaml",
    "http://www.getcloudify.org/spec/aws-plugin/1.3/plugin.yaml",
    "http://www.getcloudify.org/spec/aws-plugin/1.3m5/plugin.yaml",
    "http://www.getcloudify.org/spec/aws-plugin/1.3rc1/plugin.yaml",
    "http://www.getcloudify.org/spec/aws-plugin/1.3.1/plugin.yaml",
    "http://www.getcloudify.org/spec/aws-plugin/1.4/plugin.yaml",
    "http://www.getcloudify.org/spec/aws-plugin/1.4.1/plugin.yaml",
    "http://cloudify.co/spec/aws-plugin/1.4.10/plugin.yaml",
    "https://raw.githubusercontent.com/cloudify-cosmo/cloudify-aws-plugin/1.4.4/plugin.yaml",
    "http://www.getcloudify.org/spec/aws-plugin/1.5/plugin.yaml",
]


def read_target(target: str) -> str:
    """Opens a rule's target the way dsl_parser's read_import does."""
    assert target.startswith("file:")
    return Path(target[len("file:") :]).read_text()


def assert_installed(ec2) -> None:
    (server,) = live_instances(ec2)
    assert server["KeyName"] == "offline-classic-key"
    assert [group["GroupName"] for group in server["SecurityGroups"]] == ["offline-classic-group"]
    (address,) = ec2.describe_addresses()["Addresses"]
    assert address["InstanceId"] == server["InstanceId"]


# -- the rules ----------------------------------------------------------------


def test_every_rule_target_exists():
    for rule in offline.rules():
        ((url, target),) = rule.items()
        assert read_target(target), url


def test_every_rule_is_one_whole_url_so_nothing_is_appended_to_its_target():
    urls = [url for rule in offline.rules() for url in rule]
    assert len(urls) == len(set(urls))
    assert all(url.endswith(("/types.yaml", "/plugin.yaml")) for url in urls if url != offline.MANAGER_PLUGIN_IMPORT)


def test_the_manager_form_of_the_plugin_import_is_served_locally_too(tmp_path, ec2):
    blueprint = tmp_path / "blueprint.yaml"
    blueprint.write_text(
        "tosca_definitions_version: cloudify_dsl_1_5\n"
        "imports:\n"
        "  - http://www.getcloudify.org/spec/cloudify/7.0.0/types.yaml\n"
        "  - plugin:cloudify-aws-ec2-plugin\n"
        "node_templates:\n"
        "  key: {type: cloudify.aws.nodes.KeyPair, properties: {private_key_path: KEY}}\n".replace(
            "KEY", str(tmp_path / "k.pem")
        )
    )
    deployment = LocalDeployment(blueprint, resolver=offline.import_resolver())
    deployment.install()
    assert [key["KeyName"] for key in ec2.describe_key_pairs()["KeyPairs"]] == [
        deployment.runtime("key")["aws_resource_id"]
    ]
    deployment.uninstall()
    assert_nothing_left(ec2)


def resolve(url: str) -> str:
    """What the resolver serves for ``url``; a URL without a rule fails here
    first, so that the resolver never goes to the network."""
    assert any(url in rule for rule in offline.rules()), f"no rule for {url}"
    return offline.import_resolver().resolve(url)


@pytest.mark.parametrize("url", TYPES_URLS)
def test_a_types_url_resolves_to_the_offline_types(url):
    assert resolve(url) == offline.TYPES_FILE.read_text()


@pytest.mark.parametrize("url", PLUGIN_URLS)
def test_a_classic_plugin_url_resolves_to_the_old_dsl_plugin_file(url):
    assert resolve(url) == offline.CLASSIC_PLUGIN_FILE.read_text()


def test_every_listed_url_looks_classic():
    listed = [url for rule in offline.rules() for url in rule if url != offline.MANAGER_PLUGIN_IMPORT]
    assert all(offline.is_classic_url(url) for url in listed)


def test_a_target_path_with_a_space_is_written_as_dsl_parser_opens_it(tmp_path):
    types_file = tmp_path / "with space" / "types.yaml"
    types_file.parent.mkdir()
    types_file.write_text("tosca_definitions_version: cloudify_dsl_1_0\n")
    ((_, target),) = offline.rules(types_file=types_file)[0].items()
    assert read_target(target) == types_file.read_text()


@pytest.mark.parametrize("dsl", SUPPORTED_VERSIONS)
def test_the_offline_files_import_into_every_dsl_version(tmp_path, dsl):
    plan = parse_from_path(str(write_classic_blueprint(tmp_path, dsl)), resolver=offline.import_resolver())
    assert {node["id"] for node in plan["nodes"]} == {"key", "group", "address", "server"}


def test_a_dsl_1_1_blueprint_with_classic_imports_parses_through_the_resolver(tmp_path):
    plan = parse_from_path(str(write_classic_blueprint(tmp_path)), resolver=offline.import_resolver())
    server = next(node for node in plan["nodes"] if node["id"] == "server")
    assert server["properties"]["install_agent"] is False
    assert {relationship["type"] for relationship in server["relationships"]} == {
        "cloudify.aws.relationships.instance_connected_to_keypair",
        "cloudify.aws.relationships.instance_connected_to_security_group",
        "cloudify.aws.relationships.instance_connected_to_elastic_ip",
    }


# -- cfy's config.yaml --------------------------------------------------------

CFY_INIT_CONFIG = """\
---
colors: False

logging:

    # path to a file where cli logs will be saved.
    filename: {workdir}/.cloudify/logs/cli.log

    # configuring level per logger
    loggers:

        # main logger of the cli. provides basic descriptions for executed operations.
        cloudify.cli.main: info
"""


def config_text(workdir: Path) -> str:
    return offline.cfy_config_path(workdir).read_text()


def workdir_rules(workdir: Path) -> list[dict[str, str]]:
    """The rules write-cfy-config writes: they serve its copies in the workdir."""
    return offline.cfy_rules(offline.workdir_files(workdir)[0].parent)


def config_rules(workdir: Path) -> list[dict[str, str]]:
    return yaml.safe_load(config_text(workdir))["import_resolver"]["parameters"]["rules"]


def test_the_cfy_config_is_created_with_what_cfy_needs_to_read_it(tmp_path):
    offline.write_cfy_config(tmp_path)
    settings = yaml.safe_load(config_text(tmp_path))
    assert settings["logging"]["filename"] == str(tmp_path.resolve() / ".cloudify" / "logs" / "cli.log")
    assert settings["import_resolver"] == {"parameters": {"rules": workdir_rules(tmp_path)}}


def test_the_cfy_config_rules_serve_copies_in_the_workdir(tmp_path):
    offline.write_cfy_config(tmp_path)
    types_copy, plugin_copy = (
        tmp_path / ".cloudify" / "offline" / "types.yaml",
        tmp_path / ".cloudify" / "offline" / "plugin-classic-dsl.yaml",
    )
    assert types_copy.read_bytes() == offline.TYPES_FILE.read_bytes()
    assert plugin_copy.read_bytes() == offline.CLASSIC_PLUGIN_FILE.read_bytes()
    targets = {target for rule in workdir_rules(tmp_path) for target in rule.values()}
    assert targets == {
        offline.file_url(types_copy.parent / "cloudify") + "/",
        offline.file_url(types_copy.parent / "aws-plugin") + "/",
        offline.file_url(plugin_copy),
    }


def test_the_cfy_config_rules_serve_every_listed_url_from_the_workdir_copies(tmp_path):
    offline.write_cfy_config(tmp_path)
    # No fallback: a URL its rules do not serve fails here instead of going to the network.
    resolver = DefaultImportResolver(rules=config_rules(tmp_path), fallback=False)
    for rule in offline.rules():
        ((url, target),) = rule.items()
        assert resolver.resolve(url) == read_target(target), url


def test_the_cfy_config_is_short_two_prefix_rules_per_host(tmp_path):
    """cfy parses its config.yaml twice at every start: a rule per URL made it 93 KB."""
    offline.write_cfy_config(tmp_path)
    assert len(config_rules(tmp_path)) == 2 * len(offline.HOSTS) + 2
    assert len(config_text(tmp_path)) < 4096


def test_writing_the_cfy_config_replaces_the_whole_url_rules_of_earlier_versions(tmp_path):
    offline.write_cfy_config(tmp_path, offline.rules(*offline.copy_offline_files(tmp_path)))
    offline.write_cfy_config(tmp_path)
    assert config_rules(tmp_path) == workdir_rules(tmp_path)


def test_the_cfy_config_survives_a_moved_clone(tmp_path, monkeypatch):
    """The files of a clone (here copies of them) are gone after
    write-cfy-config: a classic blueprint still parses with its rules."""
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("TYPES_FILE", "CLASSIC_PLUGIN_FILE"):
        copy = clone / getattr(offline, name).name
        copy.write_bytes(getattr(offline, name).read_bytes())
        monkeypatch.setattr(offline, name, copy)
    offline.write_cfy_config(tmp_path / "cfy")
    clone.rename(tmp_path / "moved")
    resolver = DefaultImportResolver(rules=config_rules(tmp_path / "cfy"), fallback=False)
    plan = parse_from_path(str(write_classic_blueprint(tmp_path / "blueprint")), resolver=resolver)
    assert {node["id"] for node in plan["nodes"]} == {"key", "group", "address", "server"}


def test_the_cfy_config_holds_the_rules_in_the_import_resolver_parameters_form(tmp_path):
    rules = [{"http://example.invalid/types.yaml": "file:///offline/types.yaml"}]
    offline.write_cfy_config(tmp_path, rules)
    assert config_text(tmp_path).endswith(
        "import_resolver:\n"
        "  parameters:\n"
        "    rules:\n"
        "    - http://example.invalid/types.yaml: file:///offline/types.yaml\n"
    )


def test_the_cfy_config_keeps_what_cfy_init_wrote_and_appends_the_rules(tmp_path):
    original = CFY_INIT_CONFIG.format(workdir=tmp_path)
    offline.cfy_config_path(tmp_path).parent.mkdir()
    offline.cfy_config_path(tmp_path).write_text(original)
    offline.write_cfy_config(tmp_path)
    text = config_text(tmp_path)
    assert text.startswith(original)
    assert yaml.safe_load(text)["import_resolver"]["parameters"]["rules"] == workdir_rules(tmp_path)


def test_the_cfy_config_merge_keeps_other_rules_and_settings_and_replaces_its_own(tmp_path):
    mirror = {"http://mirror.example.invalid/": "file:///srv/mirror/"}
    standard = {"http://www.getcloudify.org/spec/cloudify/7.0.0/types.yaml": "file:///old/clone/offline/types.yaml"}
    original = (
        CFY_INIT_CONFIG.format(workdir=tmp_path)
        + "import_resolver:\n"
        + "  implementation: dsl_parser.import_resolver.default_import_resolver:DefaultImportResolver\n"
        + "  parameters:\n"
        + "    fallback: true\n"
        + "    rules:\n"
        + f"      - {yaml.safe_dump(mirror, default_flow_style=True).strip()}\n"
        + f"      - {yaml.safe_dump(standard, default_flow_style=True).strip()}\n"
        + "\n# kept: the comment of the next setting\n"
        + "validate_definitions_version: false\n"
    )
    offline.cfy_config_path(tmp_path).parent.mkdir()
    offline.cfy_config_path(tmp_path).write_text(original)
    offline.write_cfy_config(tmp_path)
    text = config_text(tmp_path)
    settings = yaml.safe_load(text)
    resolver = settings["import_resolver"]
    assert resolver["implementation"].endswith(":DefaultImportResolver")
    assert resolver["parameters"]["fallback"] is True
    assert resolver["parameters"]["rules"] == [mirror, *workdir_rules(tmp_path)]
    assert settings["validate_definitions_version"] is False
    assert "# kept: the comment of the next setting\nvalidate_definitions_version: false\n" in text
    assert text.startswith(CFY_INIT_CONFIG.format(workdir=tmp_path))


def version_files(workdir: Path) -> dict[str, str]:
    """Each version folder's file under the workdir, and what it links to."""
    folder = offline.workdir_files(workdir)[0].parent
    return {str(path.relative_to(folder)): os.readlink(path) for path in sorted(folder.glob("*/*/*.yaml"))}


def test_writing_the_cfy_config_twice_changes_nothing(tmp_path):
    offline.write_cfy_config(tmp_path)
    once, links = config_text(tmp_path), version_files(tmp_path)
    offline.write_cfy_config(tmp_path)
    assert config_text(tmp_path) == once
    assert version_files(tmp_path) == links
    assert links["cloudify/3.4/types.yaml"] == "../../types.yaml"


def test_a_users_mirror_of_the_same_prefix_is_kept_before_the_offline_rules(tmp_path):
    mirror = {"http://www.getcloudify.org/spec/cloudify/": "http://mirror.example.invalid/spec/cloudify/"}
    offline.write_cfy_config(tmp_path, [mirror])
    offline.write_cfy_config(tmp_path)
    assert config_rules(tmp_path) == [mirror, *workdir_rules(tmp_path)]


def test_without_symbolic_links_the_version_folders_hold_copies(tmp_path, monkeypatch):
    def refuse(*_):
        raise OSError("operation not supported")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    offline.write_cfy_config(tmp_path)
    resolver = DefaultImportResolver(rules=config_rules(tmp_path), fallback=False)
    assert resolver.resolve(TYPES_URLS[0]) == offline.TYPES_FILE.read_text()
    assert resolver.resolve(PLUGIN_URLS[0]) == offline.CLASSIC_PLUGIN_FILE.read_text()


def test_the_command_writes_the_cfy_config_and_says_where_its_files_are(tmp_path, capsys):
    assert offline.main(["write-cfy-config", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {len(workdir_rules(tmp_path))} import rules" in out
    assert f"made in {tmp_path / '.cloudify' / 'offline'}: moving this plugin or its clone does not break them" in out
    assert "after moving the workdir or upgrading the plugin, run this again" in out
    assert yaml.safe_load(config_text(tmp_path))["import_resolver"]["parameters"]["rules"] == workdir_rules(tmp_path)


# -- end to end ---------------------------------------------------------------


def test_a_classic_dsl_1_1_blueprint_installs_and_uninstalls_through_the_python_api(tmp_path, ec2):
    deployment = LocalDeployment(
        write_classic_blueprint(tmp_path / "blueprint"),
        inputs={"key_path": str(tmp_path / "key.pem")},
        resolver=offline.import_resolver(),
    )
    deployment.install()
    assert_installed(ec2)
    assert deployment.env.outputs()["address"] == ec2.describe_addresses()["Addresses"][0]["PublicIp"]
    deployment.uninstall()
    assert_nothing_left(ec2)


def test_a_classic_dsl_1_1_blueprint_installs_and_uninstalls_through_cfy(tmp_path, ec2):
    workdir = cfy_workdir(tmp_path / "cfy")
    blueprint = write_classic_blueprint(tmp_path / "blueprint")  # not in the workdir: cfy copies its folder
    retries = ("--task-retries", "10", "--task-retry-interval", "1")
    cfy(workdir, "install", str(blueprint), "-b", "classic", "-i", f"key_path={tmp_path / 'key.pem'}", *retries)
    assert_installed(ec2)
    cfy(workdir, "uninstall", "-b", "classic", *retries)
    assert_nothing_left(ec2)
