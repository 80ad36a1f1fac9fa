"""tools.migrate: rewrites use_external_resource: {get_input: ...} (which
cloudify-common 7 refuses) and, when asked, the classic imports; changes
nothing else, and refuses what it cannot rewrite safely."""

from __future__ import annotations

import difflib
import os
import textwrap
from pathlib import Path

import pytest
import yaml
from dsl_parser.exceptions import DSLParsingLogicException
from dsl_parser.import_resolver.default_import_resolver import DefaultImportResolver
from dsl_parser.parser import parse_from_path

from tests.support import PLUGIN_YAML, REFERENCE_TYPES, ROOT
from tools import migrate, offline

IN_CI = os.environ.get("CI", "").lower() == "true"


def official_types() -> Path:
    """The types.yaml that a Cloudify 7 manager serves for migrate.TYPES_URL
    (../shared/reference/cloudify-types/README.md: cloudify-manager 7.0.4's
    resources/rest-service/cloudify/types/types.yaml). Without ../shared the
    test skips; under CI=true it fails."""
    path = REFERENCE_TYPES / "types.yaml"
    if not path.is_file():
        if IN_CI:
            pytest.fail(f"CI must have the official Cloudify 7 types: {path} is missing")
        pytest.skip(f"no official Cloudify 7 types at {path} (../shared/reference is not on this machine)")
    return path


def manager_resolver() -> DefaultImportResolver:
    """Serves the imports as a Cloudify 7 manager does: its types.yaml for
    the 7.0.0 URL, and this plugin's plugin.yaml (as uploaded with the wagon)
    for the plugin: import that --rewrite-imports writes."""
    return DefaultImportResolver(
        rules=[
            {migrate.TYPES_URL: offline.file_url(official_types())},
            {migrate.PLUGIN_IMPORT: offline.file_url(PLUGIN_YAML)},
        ]
    )


CLASSIC = """\
# DSL version, as the classic blueprints wrote it
tosca_definitions_version: cloudify_dsl_1_1

imports:
  - http://www.getcloudify.org/spec/cloudify/3.2/types.yaml
  - 'http://www.getcloudify.org/spec/aws-plugin/1.2/plugin.yaml'

inputs:
  use_existing_keypair:
    type: boolean
    default: false
  use_existing_group:
    type: boolean
  group_name:
    default: classic-group

node_templates:
  keypair:
    type: cloudify.aws.nodes.KeyPair
    properties:
      use_external_resource: { get_input: use_existing_keypair }   # from the inputs
      resource_id: classic-key
      private_key_path: /tmp/classic-key.pem

  group:
    type: cloudify.aws.nodes.SecurityGroup
    properties:
      resource_id: { get_input: group_name }
      use_external_resource:
        get_input: use_existing_group
      description: managed by Cloudify

  address:
    type: cloudify.aws.nodes.ElasticIP
    properties:
      use_external_resource: false
"""


def run(tmp_path, text: str, *args: str, name: str = "blueprint.yaml", capsys=None):
    """Runs the command on ``text`` written to a file, with -o; returns
    (exit code, the output file's text or None)."""
    source = tmp_path / name
    source.write_bytes(text.encode())
    output = tmp_path / "out.yaml"
    code = migrate.main([str(source), "-o", str(output), *args])
    return code, (output.read_bytes().decode() if output.exists() else None)


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """The lines only ``before`` has, and those only ``after`` has, in order."""
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return [line[2:] for line in diff if line.startswith("- ")], [line[2:] for line in diff if line.startswith("+ ")]


def parse(tmp_path, text: str, resolver=None) -> dict:
    path = tmp_path / "parsed.yaml"
    path.write_text(text)
    return parse_from_path(str(path), resolver=resolver or offline.import_resolver())


# -- get_input in use_external_resource ---------------------------------------


def test_get_input_is_replaced_by_the_inputs_given_and_the_defaults(tmp_path):
    result = migrate.migrate(CLASSIC, {"use_existing_group": True})
    removed, added = changed_lines(CLASSIC, result.text)
    assert removed == [
        "      use_external_resource: { get_input: use_existing_keypair }   # from the inputs",
        "      use_external_resource:",
        "        get_input: use_existing_group",
    ]
    assert added == [
        "      use_external_resource: false   # from the inputs",
        "      use_external_resource: true",
    ]


def test_the_rewritten_blueprint_parses_through_the_offline_resolver(tmp_path):
    with pytest.raises(DSLParsingLogicException, match="Only boolean values are allowed"):
        parse(tmp_path, CLASSIC)
    plan = parse(tmp_path, migrate.migrate(CLASSIC, {"use_existing_group": True}).text)
    properties = {node["id"]: node["properties"]["use_external_resource"] for node in plan["nodes"]}
    assert properties == {"keypair": False, "group": True, "address": False}


def test_the_command_writes_the_result_and_reports_each_change(tmp_path, capsys):
    code, text = run(tmp_path, CLASSIC, "-i", "use_existing_group=true")
    assert code == 0
    assert text == migrate.migrate(CLASSIC, {"use_existing_group": True}).text
    report = capsys.readouterr().out.splitlines()
    assert report[0].endswith(
        "changed line 21: node_templates.keypair.properties.use_external_resource: "
        "{ get_input: use_existing_keypair } -> false (input use_existing_keypair's default)"
    )
    assert report[1].endswith(
        "changed line 29: node_templates.group.properties.use_external_resource: "
        "get_input: use_existing_group -> true (input use_existing_group as given)"
    )
    assert any("note: input use_existing_group is no longer used, and has no default" in line for line in report)


def test_inputs_files_are_read_and_the_last_one_wins(tmp_path):
    (tmp_path / "first.yaml").write_text("use_existing_group: true\nuse_existing_keypair: true\n")
    (tmp_path / "second.yaml").write_text("use_existing_keypair: false\n")
    inputs = migrate.read_inputs([str(tmp_path / "first.yaml"), str(tmp_path / "second.yaml")])
    assert inputs == {"use_existing_group": True, "use_existing_keypair": False}


def test_without_output_the_blueprint_goes_to_stdout_and_the_report_to_stderr(tmp_path, capsys):
    (tmp_path / "blueprint.yaml").write_text(CLASSIC)
    assert migrate.main([str(tmp_path / "blueprint.yaml"), "-i", "use_existing_group=false"]) == 0
    out, err = capsys.readouterr()
    assert out == migrate.migrate(CLASSIC, {"use_existing_group": False}).text
    assert "changed line 21" in err


# -- nothing to change ----------------------------------------------------------

ALREADY_FINE = """\
tosca_definitions_version: cloudify_dsl_1_1   # kept
imports:
  - http://www.getcloudify.org/spec/cloudify/3.4/types.yaml
  - http://www.getcloudify.org/spec/aws-plugin/1.4.1/plugin.yaml
node_templates:
  keypair:
    type: cloudify.aws.nodes.KeyPair
    properties: {use_external_resource: true, resource_id: existing, private_key_path: /tmp/k.pem}
"""


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_a_blueprint_needing_no_change_comes_out_byte_identical(tmp_path, capsys, line_end):
    original = ALREADY_FINE.replace("\n", line_end)
    code, text = run(tmp_path, original)
    assert code == 0
    assert (tmp_path / "out.yaml").read_bytes() == original.encode()
    assert capsys.readouterr().out.endswith("no change needed\n")


def test_the_rewritten_blueprint_needs_no_second_change(tmp_path):
    once = migrate.migrate(CLASSIC, {"use_existing_group": True}).text
    again = migrate.migrate(once)
    assert again.text == once and again.changes == []


# -- refusals -----------------------------------------------------------------


def with_value(value: str, inputs: str = "  flag: {type: boolean}\n") -> str:
    return (
        textwrap.dedent(
            """\
        tosca_definitions_version: cloudify_dsl_1_1
        imports: [http://www.getcloudify.org/spec/cloudify/3.2/types.yaml]
        inputs:
        INPUTS
        node_templates:
          group:
            type: cloudify.aws.nodes.SecurityGroup
            properties:
              use_external_resource: VALUE
        """
        )
        .replace("INPUTS\n", inputs)
        .replace("VALUE", value)
    )


@pytest.mark.parametrize(
    "blueprint, inputs, reason",
    [
        (with_value("{ get_property: [other, use_external_resource] }"), {}, "uses get_property, which only a"),
        (with_value("{ concat: [a, b] }"), {}, "uses concat"),
        (with_value("{ get_input: flag }"), {}, "input 'flag' has no default: give its value with -i"),
        (with_value("{ get_input: flag }"), {"flag": "yes please"}, "input flag as given is 'yes please', not true"),
        (with_value("{ get_input: flag }", "  flag: {default: 1}\n"), {}, "input flag's default is 1, not true"),
        (with_value("{ get_input: missing }"), {"missing": True}, "the blueprint declares no input 'missing'"),
        (with_value("{ get_input: [flag, nested] }"), {"flag": True}, "uses get_input with a path"),
        (with_value("&shared { get_input: flag }"), {"flag": True}, "has a YAML anchor or alias on its lines"),
        (with_value("[true]"), {}, "is not a boolean and not {get_input: NAME}"),
        (with_value("\n          # why\n          get_input: flag"), {"flag": True}, "has a comment inside its value"),
        (with_value("true").replace("cloudify_dsl_1_1", "cloudify_dsl_9_9"), {}, "tosca_definitions_version is"),
        (": [unclosed", {}, "it is not valid YAML"),
    ],
)
def test_what_cannot_be_rewritten_safely_is_refused_with_the_reason(blueprint, inputs, reason):
    with pytest.raises(migrate.Refused, match=None) as refusal:
        migrate.migrate(blueprint, inputs)
    assert reason in str(refusal.value)


def test_properties_shared_through_an_alias_are_refused():
    blueprint = with_value("{ get_input: flag }", "  flag: {default: true}\n").replace(
        "    properties:", "    properties: &props"
    ) + ("  other:\n    type: cloudify.aws.nodes.SecurityGroup\n    properties: *props\n")
    with pytest.raises(migrate.Refused, match="shared with other YAML through an anchor and alias"):
        migrate.migrate(blueprint)


def test_a_value_from_a_merge_key_is_refused():
    blueprint = with_value("false", "  flag: {default: true}\n").replace(
        "      use_external_resource: false", "      <<: {use_external_resource: {get_input: flag}}"
    )
    with pytest.raises(migrate.Refused, match="comes from a YAML merge key"):
        migrate.migrate(blueprint)


def test_a_function_in_a_node_type_default_is_refused():
    blueprint = with_value("true") + textwrap.dedent(
        """\
        node_types:
          my.Group:
            derived_from: cloudify.nodes.Root
            properties:
              use_external_resource: {default: {get_input: flag}}
        """
    )
    with pytest.raises(migrate.Refused, match="node_types.my.Group.properties.use_external_resource.default"):
        migrate.migrate(blueprint)


def test_a_refused_blueprint_writes_nothing_and_exits_non_zero(tmp_path, capsys):
    code, text = run(tmp_path, with_value("{ get_property: [other, use_external_resource] }"))
    assert code == 1
    assert text is None
    assert "refused, nothing written: node_templates.group.properties.use_external_resource uses get_property" in (
        capsys.readouterr().err
    )


# -- imports and tosca_definitions_version -------------------------------------


def test_imports_and_the_dsl_version_stay_by_default():
    result = migrate.migrate(CLASSIC, {"use_existing_group": True})
    assert [change.where for change in result.changes] == [
        "node_templates.keypair.properties.use_external_resource",
        "node_templates.group.properties.use_external_resource",
    ]


def test_rewrite_imports_names_the_manager_forms_and_raises_the_dsl_version_to_1_5():
    result = migrate.migrate(CLASSIC, {"use_existing_group": True}, rewrite_imports=True)
    data = yaml.safe_load(result.text)
    assert data["imports"] == [migrate.TYPES_URL, "plugin:cloudify-aws-ec2-plugin"]
    assert data["tosca_definitions_version"] == "cloudify_dsl_1_5"
    assert "  - 'plugin:cloudify-aws-ec2-plugin'\n" in result.text  # the quotes stay
    (version,) = [change for change in result.changes if change.where == "tosca_definitions_version"]
    assert version.why == f"{migrate.TYPES_IMPORT_WHY}: that needs cloudify_dsl_1_5 or later"
    assert (
        f"tosca_definitions_version raised from cloudify_dsl_1_1 to cloudify_dsl_1_5 because {migrate.TYPES_IMPORT_WHY}"
        in (result.notes)
    )


def test_rewrite_imports_says_why_the_plugin_import_names_its_own_package():
    result = migrate.migrate(CLASSIC, {"use_existing_group": True}, rewrite_imports=True)
    (plugin,) = [change for change in result.changes if change.where == "imports[1]"]
    assert plugin.new == "'plugin:cloudify-aws-ec2-plugin'"
    assert "plugin:cloudify-aws-plugin names the official AWS plugin too" in plugin.why


def test_rewrite_imports_keeps_the_dsl_version_when_it_is_1_5_already():
    blueprint = CLASSIC.replace("cloudify_dsl_1_1", "cloudify_dsl_1_5")
    result = migrate.migrate(blueprint, {"use_existing_group": True}, rewrite_imports=True)
    assert yaml.safe_load(result.text)["tosca_definitions_version"] == "cloudify_dsl_1_5"
    assert "tosca_definitions_version" not in [change.where for change in result.changes]


def test_a_blueprint_with_rewritten_imports_parses_with_the_official_types(tmp_path):
    """As a manager serves those imports: its types.yaml for the 7.0.0 URL, the uploaded plugin.yaml."""
    text = migrate.migrate(CLASSIC, {"use_existing_group": True}, rewrite_imports=True).text
    plan = parse(tmp_path, text, manager_resolver())
    assert {node["id"] for node in plan["nodes"]} == {"keypair", "group", "address"}


@pytest.mark.parametrize("version", ["cloudify_dsl_1_3", "cloudify_dsl_1_4"])
def test_the_official_types_do_not_parse_below_1_5(tmp_path, version):
    """Why --rewrite-imports raises the version to 1_5: 1_3 refuses the
    file's declared 1_4, and 1_4 refuses the 1_5 features it uses."""
    text = migrate.migrate(CLASSIC, {"use_existing_group": True}, rewrite_imports=True).text
    with pytest.raises(DSLParsingLogicException, match="different tosca_definitions_version|added in cloudify_dsl_1_5"):
        parse(tmp_path, text.replace("cloudify_dsl_1_5", version), manager_resolver())


def test_a_local_import_that_needs_a_later_dsl_version_raises_it(tmp_path):
    """The classic system tests imported a plugin.yaml beside them: this
    project's declares package_name, which cloudify_dsl_1_1 refuses."""
    (tmp_path / "plugin.yaml").write_text(PLUGIN_YAML.read_text())
    blueprint = CLASSIC.replace("'http://www.getcloudify.org/spec/aws-plugin/1.2/plugin.yaml'", "plugin.yaml")
    result = migrate.migrate(blueprint, {"use_existing_group": True}, base_dir=tmp_path)
    assert result.changes[0].where == "tosca_definitions_version"
    assert result.changes[0].new == "cloudify_dsl_1_2"
    assert result.changes[0].why == (
        "import plugin.yaml declares plugins.aws.package_name: that needs cloudify_dsl_1_2 or later"
    )
    assert {node["id"] for node in parse(tmp_path, result.text)["nodes"]} == {"keypair", "group", "address"}


def test_a_classic_looking_import_that_no_rule_lists_gets_a_note():
    unknown = "http://www.getcloudify.org/spec/cloudify/3.9/types.yaml"
    result = migrate.migrate(CLASSIC.replace("3.2/types.yaml", "3.9/types.yaml"), {"use_existing_group": True})
    assert any(note.startswith(f"import {unknown} looks classic") for note in result.notes)


# -- a classic blueprint for Cloudify 3.4, on its way to a Cloudify 7 manager ----
#
# tests/blueprints/classic-3.4: DSL 1_1, the 3.4.1 types, aws-plugin 1.4.3, a
# security group with rules, two hosts of a type derived from Instance in the
# local types/hosts.yaml (whose cloudify_agent default sets user and key),
# use_external_resource from inputs; web_host_2 sets its own cloudify_agent and
# has no key pair (it relied on the manager's provider context).

CLASSIC_34 = ROOT / "tests" / "blueprints" / "classic-3.4"


def migrate_classic_34(tmp_path, *args: str, capsys=None) -> tuple[Path, list[str]]:
    """Runs the command on the 3.4 blueprint into tmp_path/out; returns the
    output blueprint and the report's lines."""
    output = tmp_path / "out" / "blueprint.yaml"
    output.parent.mkdir(parents=True, exist_ok=True)
    code = migrate.main([str(CLASSIC_34 / "blueprint.yaml"), "-o", str(output), "-i", "use_existing_group=true", *args])
    assert code == 0
    return output, capsys.readouterr().out.splitlines() if capsys else []


def lines_with(report: list[str], *parts: str) -> list[str]:
    return [line for line in report if all(part in line for part in parts)]


def test_the_classic_34_blueprint_migrated_with_rewritten_imports_parses_on_cloudify_7(tmp_path, capsys):
    """The acceptance check: the official 7.0 types.yaml for the 7.0.0 URL,
    and this plugin's plugin.yaml for plugin:cloudify-aws-ec2-plugin, as a
    manager holding the wagon serves them."""
    output, _ = migrate_classic_34(tmp_path, "--rewrite-imports", capsys=capsys)
    plan = parse_from_path(str(output), resolver=manager_resolver())
    nodes = {node["id"]: node for node in plan["nodes"]}
    assert set(nodes) == {"keypair", "web_group", "web_host_1", "web_host_2"}
    assert nodes["web_host_1"]["properties"]["agent_config"] == {"user": "ubuntu", "key": "~/.ssh/web-key.pem"}
    assert nodes["web_host_2"]["properties"]["agent_config"] == {"user": "centos"}
    assert len(nodes["web_group"]["properties"]["rules"]) == 2
    assert [output_name for output_name in plan["outputs"]] == ["web_host_1_ip"]


def test_the_classic_34_blueprint_migrated_keeps_its_imports_and_parses_offline(tmp_path, capsys):
    """Without --rewrite-imports, for cfy local: the offline rules serve the classic URLs."""
    output, _ = migrate_classic_34(tmp_path, capsys=capsys)
    assert yaml.safe_load(output.read_text())["tosca_definitions_version"] == "cloudify_dsl_1_1"
    plan = parse_from_path(str(output), resolver=offline.import_resolver())
    assert {node["id"] for node in plan["nodes"]} == {"keypair", "web_group", "web_host_1", "web_host_2"}


def test_the_classic_34_blueprint_as_it_was_does_not_parse_on_cloudify_7(tmp_path):
    """What the migration is for: only its imports rewritten, by hand, it fails."""
    text = (CLASSIC_34 / "blueprint.yaml").read_text()
    for old, new in (
        (r"http://www.getcloudify.org/spec/cloudify/3.4.1/types.yaml", migrate.TYPES_URL),
        ("http://www.getcloudify.org/spec/aws-plugin/1.4.3/plugin.yaml", migrate.PLUGIN_IMPORT),
    ):
        text = text.replace(old, new)
    (tmp_path / "types").mkdir()
    (tmp_path / "types" / "hosts.yaml").write_text((CLASSIC_34 / "types" / "hosts.yaml").read_text())
    with pytest.raises(DSLParsingLogicException, match="An import uses a different tosca_definitions_version"):
        parse(tmp_path, text, manager_resolver())


def test_the_report_names_every_baked_input_with_or_without_a_default(tmp_path, capsys):
    _, report = migrate_classic_34(tmp_path, capsys=capsys)
    (keypair,) = lines_with(
        report,
        "note: input use_existing_keypair's value (false) is now written into "
        "node_templates.keypair.properties.use_external_resource",
    )
    (group,) = lines_with(
        report,
        "note: input use_existing_group's value (true) is now written into "
        "node_templates.web_group.properties.use_external_resource",
    )
    for line in (keypair, group):
        assert "the input no longer has an effect there, so this blueprint serves that value only" in line
    assert "-i use_existing_keypair=true into another blueprint" in keypair


def test_cloudify_agent_becomes_agent_config_in_templates_and_in_imported_types(tmp_path, capsys):
    output, report = migrate_classic_34(tmp_path, capsys=capsys)
    migrated = yaml.safe_load(output.read_text())
    assert migrated["node_templates"]["web_host_2"]["properties"] == {"agent_config": {"user": "centos"}}
    hosts = yaml.safe_load((output.parent / "types" / "hosts.yaml").read_text())
    assert hosts["node_types"]["web.nodes.Host"]["properties"]["agent_config"] == {
        "default": {"user": "ubuntu", "key": "~/.ssh/web-key.pem"}
    }
    assert "cloudify_agent" not in (output.parent / "types" / "hosts.yaml").read_text()
    assert lines_with(report, "note: node_templates.web_host_2.properties.cloudify_agent became agent_config")
    assert lines_with(
        report, "note: import types/hosts.yaml: node_types.web.nodes.Host.properties.cloudify_agent became agent_config"
    )
    assert lines_with(report, "types/hosts.yaml: changed line 12: node_types.web.nodes.Host.properties.cloudify_agent")
    assert lines_with(report, f"types/hosts.yaml: written to {output.parent / 'types' / 'hosts.yaml'}")


def test_the_imported_file_changes_only_its_key(tmp_path, capsys):
    output, _ = migrate_classic_34(tmp_path, capsys=capsys)
    before = (CLASSIC_34 / "types" / "hosts.yaml").read_text()
    assert changed_lines(before, (output.parent / "types" / "hosts.yaml").read_text()) == (
        ["      cloudify_agent:"],
        ["      agent_config:"],
    )


def test_every_host_that_would_install_an_agent_is_warned_about_as_cloudify_7_decides(tmp_path, capsys):
    """The nodes warned about are exactly those for which cloudify-common's
    install workflow would install an agent, on the parsed result."""
    from cloudify.utils import internal

    output, report = migrate_classic_34(tmp_path, "--rewrite-imports", capsys=capsys)
    plan = parse_from_path(str(output), resolver=manager_resolver())
    installing = {
        node["id"]
        for node in plan["nodes"]
        if "cloudify.nodes.Compute" in node["type_hierarchy"]
        and internal.get_install_method(node["properties"]) != "none"
    }
    warned = {name for name in ("web_host_1", "web_host_2") if lines_with(report, f"warning: node {name} ", "agent")}
    assert warned == installing == {"web_host_1", "web_host_2"}
    (line,) = lines_with(report, "warning: node web_host_1 (web.nodes.Host) would install a Cloudify agent")
    assert "agent_config has no install_method" in line and "fails at cloudify_agent.create" in line


def test_every_instance_with_no_key_pair_is_warned_about(tmp_path, capsys):
    _, report = migrate_classic_34(tmp_path, capsys=capsys)
    warned = lines_with(report, "is an Instance with no key pair")
    assert [line.split("warning: node ")[1].split(" ")[0] for line in warned] == ["web_host_2"]
    assert (
        "on a Cloudify 7 manager there is no provider context with agents_keypair / agents_security_group"
        in (warned[0])
    )


def test_a_second_run_changes_nothing(tmp_path, capsys):
    output, _ = migrate_classic_34(tmp_path, "--rewrite-imports", capsys=capsys)
    assert migrate.main([str(output), "-o", str(tmp_path / "again.yaml"), "--rewrite-imports"]) == 0
    assert "no change needed" in capsys.readouterr().out
    assert (tmp_path / "again.yaml").read_text() == output.read_text()


def test_changed_imports_need_an_output_file_elsewhere_or_in_place(tmp_path, capsys):
    folder = tmp_path / "classic"
    (folder / "types").mkdir(parents=True)
    for name in ("blueprint.yaml", "types/hosts.yaml"):
        (folder / name).write_text((CLASSIC_34 / name).read_text())
    blueprint, original = folder / "blueprint.yaml", (folder / "types" / "hosts.yaml").read_text()
    assert migrate.main([str(blueprint), "-i", "use_existing_group=true"]) == 1
    assert "the local files it imports change too (types/hosts.yaml): give -o OUT" in capsys.readouterr().err
    assert migrate.main([str(blueprint), "-i", "use_existing_group=true", "-o", str(folder / "new.yaml")]) == 1
    assert "would overwrite the file the original blueprint imports" in capsys.readouterr().err
    assert not (folder / "new.yaml").exists() and (folder / "types" / "hosts.yaml").read_text() == original
    assert migrate.main([str(blueprint), "-i", "use_existing_group=true", "-o", str(blueprint)]) == 0
    assert "agent_config" in (folder / "types" / "hosts.yaml").read_text()


# -- cloudify_agent and agent_config, one case each ------------------------------

HOST = """\
tosca_definitions_version: cloudify_dsl_1_1
imports: [http://www.getcloudify.org/spec/cloudify/3.4/types.yaml]
node_templates:
  host:
    type: cloudify.aws.nodes.Instance
    properties:
PROPERTIES
"""


def host(properties: str, extra: str = "") -> str:
    return HOST.replace("PROPERTIES\n", textwrap.indent(textwrap.dedent(properties), "      ")) + extra


def host_properties(result: migrate.Result) -> dict:
    return yaml.safe_load(result.text)["node_templates"]["host"]["properties"]


def test_cloudify_agent_merges_into_agent_config_whose_keys_win():
    blueprint = host(
        """\
        image_id: ami-12c6146b
        cloudify_agent:
          user: ubuntu
          port: 2222
        agent_config:
          install_method: remote
          port: 22
        instance_type: t2.micro
        """
    )
    result = migrate.migrate(blueprint)
    assert host_properties(result) == {
        "image_id": "ami-12c6146b",
        "agent_config": {"install_method": "remote", "port": 22, "user": "ubuntu"},
        "instance_type": "t2.micro",
    }
    assert "      agent_config: {install_method: remote, port: 22, user: ubuntu}\n      instance_type" in result.text
    assert any(
        "cloudify_agent became part of its agent_config (merged with its agent_config" in n for n in result.notes
    )


def test_a_templates_cloudify_agent_keeps_the_agent_config_its_type_gives():
    """Classic engines merged the two; Cloudify 7 reads agent_config alone, so
    the type's agent_config default is merged in (its keys win)."""
    blueprint = host(
        "cloudify_agent: {user: centos}\n",
        "node_types:\n  my.Host:\n    derived_from: cloudify.aws.nodes.Instance\n"
        "    properties:\n      agent_config: {default: {install_method: none}}\n",
    ).replace("type: cloudify.aws.nodes.Instance", "type: my.Host")
    assert host_properties(migrate.migrate(blueprint)) == {"agent_config": {"install_method": "none", "user": "centos"}}


def test_cloudify_agent_name_becomes_service_name():
    result = migrate.migrate(host("cloudify_agent: {name: web, user: centos}\n"))
    assert host_properties(result) == {"agent_config": {"service_name": "web", "user": "centos"}}


def test_a_cloudify_agent_key_that_agent_config_has_no_place_for_is_refused():
    with pytest.raises(migrate.Refused, match="has 'distro', which Cloudify 7's agent_config has no place for"):
        migrate.migrate(host("cloudify_agent: {user: centos, distro: precise}\n"))


def test_install_agent_stays_as_it_is_and_false_means_no_agent_warning():
    result = migrate.migrate(host("install_agent: false\ncloudify_agent: {user: centos}\nparameters: {key_name: k}\n"))
    assert host_properties(result) == {
        "install_agent": False,
        "agent_config": {"user": "centos"},
        "parameters": {"key_name": "k"},
    }
    assert result.warnings == []


def test_install_method_none_means_no_agent_warning_and_a_key_name_no_key_pair_warning():
    result = migrate.migrate(host("agent_config: {install_method: none}\nparameters: {key_name: k}\n"))
    assert result.changes == [] and result.warnings == []


def test_an_agent_installed_by_default_is_warned_about():
    (warning,) = migrate.migrate(host("parameters: {KeyName: k}\n")).warnings
    assert warning.startswith(
        "node host (cloudify.aws.nodes.Instance) would install a Cloudify agent (agent_config.install_method is remote)"
    )


def test_the_agent_config_keys_are_those_of_the_official_types():
    data_type = yaml.safe_load(official_types().read_text())["data_types"]["cloudify.datatypes.AgentConfig"]
    assert migrate.AGENT_CONFIG_KEYS == set(data_type["properties"])


def test_a_types_cloudify_agent_default_merges_into_its_agent_config_default():
    types = """\
node_types:
  my.Host:
    derived_from: cloudify.aws.nodes.Instance
    properties:
      agent_config:
        default:
          install_method: none
      cloudify_agent:
        default:
          user: centos
      image_id:
        default: ami-12c6146b
"""
    blueprint = host("parameters: {key_name: k}\n", types).replace("type: cloudify.aws.nodes.Instance", "type: my.Host")
    result = migrate.migrate(blueprint)
    assert yaml.safe_load(result.text)["node_templates"]["host"]["type"] == "my.Host"
    properties = yaml.safe_load(result.text)["node_types"]["my.Host"]["properties"]
    assert properties == {
        "agent_config": {"default": {"install_method": "none", "user": "centos"}},
        "image_id": {"default": "ami-12c6146b"},
    }
    assert result.warnings == []


@pytest.mark.parametrize(
    "name", ["CLASSIC_BLUEPRINT", "MANAGER_BLUEPRINT", "TWO_HOST_BLUEPRINT", "FROM_INPUTS_BLUEPRINT", "CLASSIC"]
)
def test_the_project_classic_blueprints_raised_to_1_5_parse_with_the_official_types(tmp_path, name):
    """Raising cloudify_dsl_1_0/1_1 to 1_5 breaks nothing else these
    classic-era blueprints hold (outputs, functions, relationships, rules)."""
    from tests import support, test_classic_blueprints_cfy

    text = getattr(support, name, None) or getattr(test_classic_blueprints_cfy, name, None) or globals()[name]
    result = migrate.migrate(text, {"use_existing_group": True}, rewrite_imports=True)
    assert yaml.safe_load(result.text)["tosca_definitions_version"] == "cloudify_dsl_1_5"
    plan = parse(tmp_path, result.text, manager_resolver())
    assert {node["id"] for node in plan["nodes"]} == set(yaml.safe_load(text)["node_templates"])


@pytest.mark.parametrize("form", ["plugin:cloudify-aws-plugin", "plugin:cloudify-aws-plugin?version=2.1.0"])
def test_an_import_of_the_official_package_name_gets_a_note_and_stays(form):
    blueprint = CLASSIC.replace("'http://www.getcloudify.org/spec/aws-plugin/1.2/plugin.yaml'", form)
    result = migrate.migrate(blueprint, {"use_existing_group": True}, rewrite_imports=True)
    assert yaml.safe_load(result.text)["imports"][1] == form
    (note,) = [note for note in result.notes if note.startswith(f"import {form} ")]
    assert "names the official AWS plugin's package" in note and "import plugin:cloudify-aws-ec2-plugin" in note


def test_a_templates_agent_config_keeps_the_cloudify_agent_default_of_its_type():
    types = (
        "node_types:\n  my.Host:\n    derived_from: cloudify.aws.nodes.Instance\n"
        "    properties:\n      cloudify_agent: {default: {user: ubuntu}}\n"
    )
    blueprint = host("agent_config: {install_method: none}\n", types).replace(
        "type: cloudify.aws.nodes.Instance", "type: my.Host"
    )
    result = migrate.migrate(blueprint)
    assert host_properties(result) == {"agent_config": {"install_method": "none", "user": "ubuntu"}}
    assert yaml.safe_load(result.text)["node_types"]["my.Host"]["properties"] == {
        "agent_config": {"default": {"user": "ubuntu"}}
    }
