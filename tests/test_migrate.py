"""tools.migrate: rewrites use_external_resource: {get_input: ...} (which
cloudify-common 7 refuses) and, when asked, the classic imports; changes
nothing else, and refuses what it cannot rewrite safely."""

from __future__ import annotations

import difflib
import textwrap

import pytest
import yaml
from dsl_parser.exceptions import DSLParsingLogicException
from dsl_parser.import_resolver.default_import_resolver import DefaultImportResolver
from dsl_parser.parser import parse_from_path

from tests.support import PLUGIN_YAML, REFERENCE_TYPES
from tools import migrate, offline

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
    assert "note: input use_existing_group is no longer used, and has no default" in report[2]


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


def test_rewrite_imports_names_the_manager_forms_and_raises_the_dsl_version_to_1_3():
    result = migrate.migrate(CLASSIC, {"use_existing_group": True}, rewrite_imports=True)
    data = yaml.safe_load(result.text)
    assert data["imports"] == [migrate.TYPES_URL, "plugin:cloudify-aws-plugin"]
    assert data["tosca_definitions_version"] == "cloudify_dsl_1_3"
    assert "  - 'plugin:cloudify-aws-plugin'\n" in result.text  # the quotes stay
    (version,) = [change for change in result.changes if change.where == "tosca_definitions_version"]
    assert version.why == "the imports now name the Cloudify 7 types: that needs cloudify_dsl_1_3 or later"


def test_rewrite_imports_keeps_a_later_dsl_version():
    blueprint = CLASSIC.replace("cloudify_dsl_1_1", "cloudify_dsl_1_4")
    result = migrate.migrate(blueprint, {"use_existing_group": True}, rewrite_imports=True)
    assert yaml.safe_load(result.text)["tosca_definitions_version"] == "cloudify_dsl_1_4"


@pytest.mark.skipif(not REFERENCE_TYPES.is_dir(), reason=f"no reference types at {REFERENCE_TYPES}")
def test_a_blueprint_with_rewritten_imports_parses_with_the_official_types(tmp_path):
    """As a manager serves those imports: its types for 1_3, the uploaded plugin.yaml."""
    text = migrate.migrate(CLASSIC, {"use_existing_group": True}, rewrite_imports=True).text
    resolver = DefaultImportResolver(
        rules=[
            {migrate.TYPES_URL: offline.file_url(REFERENCE_TYPES / "types_1_3.yaml")},
            {"plugin:cloudify-aws-plugin": offline.file_url(PLUGIN_YAML)},
        ]
    )
    assert {node["id"] for node in parse(tmp_path, text, resolver)["nodes"]} == {"keypair", "group", "address"}


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
