"""The documentation: docs/reference.md names exactly what plugin.yaml
declares, the README is a short entry point that starts with the two
commands, relative links lead to files that exist, and the README's minimal
blueprint installs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.support import PLUGIN_YAML, ROOT, TYPES_URL

README = ROOT / "README.md"
REFERENCE = ROOT / "docs" / "reference.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "README.md"]
README_LIMIT = 10 * 1024
TABLE_CELL_WORD_LIMIT = 45

OPERATION_PATH = re.compile(r"\baws\.ec2\.[A-Za-z_]+\.[A-Za-z_]+")
CLOUDIFY_AWS_NAME = re.compile(r"\bcloudify\.aws\.[A-Za-z_]+\.[A-Za-z_]+")
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCED_BLOCK = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def plugin() -> dict:
    return yaml.safe_load(PLUGIN_YAML.read_text())


@pytest.fixture(scope="module")
def reference() -> str:
    return REFERENCE.read_text()


def operations(plugin: dict) -> list[tuple[str, str, str]]:
    """(owner, interface operation, implementation) for every operation plugin.yaml maps."""
    found = []
    owners = [(name, spec.get("interfaces", {})) for name, spec in plugin["node_types"].items()]
    for name, spec in plugin["relationships"].items():
        owners += [(name, spec.get(side, {})) for side in ("source_interfaces", "target_interfaces")]
    for owner, interfaces in owners:
        for interface, mapping in interfaces.items():
            for op, implementation in mapping.items():
                if isinstance(implementation, dict):
                    implementation = implementation["implementation"]
                found.append((owner, f"{interface}.{op}", implementation))
    return found


# --- docs/reference.md against plugin.yaml -------------------------------------


def test_every_node_type_is_in_the_reference_with_its_base(plugin, reference):
    lines = reference.splitlines()
    missing = [
        f"{name} (derived from {spec['derived_from']})"
        for name, spec in plugin["node_types"].items()
        if not any(f"`{name}`" in line and f"`{spec['derived_from']}`" in line for line in lines)
    ]
    assert not missing, f"docs/reference.md lacks a line naming these node types and their bases: {missing}"


def test_every_property_of_every_node_type_is_in_the_reference(plugin, reference):
    missing = [
        f"{name}: {prop}"
        for name, spec in plugin["node_types"].items()
        for prop in spec.get("properties", {})
        if f"`{prop}`" not in reference
    ]
    assert not missing, f"properties missing from docs/reference.md: {missing}"


def test_every_operation_path_is_in_the_reference(plugin, reference):
    missing = sorted({path for _, _, path in operations(plugin) if f"`{path}`" not in reference})
    assert not missing, f"operation paths missing from docs/reference.md: {missing}"


def test_every_operation_is_documented_on_one_line_with_its_implementation(plugin, reference):
    lines = reference.splitlines()
    missing = [
        f"{owner}: {op} -> {path}"
        for owner, op, path in operations(plugin)
        if not any(f"`{op}`" in line and f"`{path}`" in line for line in lines)
    ]
    assert not missing, f"docs/reference.md lacks a line pairing these operations with their paths: {missing}"


def test_every_relationship_is_in_the_reference(plugin, reference):
    missing = [
        name
        for name, spec in plugin["relationships"].items()
        if f"`{name}`" not in reference or f"`{spec['derived_from']}`" not in reference
    ]
    assert not missing, f"relationships (or their bases) missing from docs/reference.md: {missing}"


def test_every_type_and_relationship_the_reference_names_exists_in_plugin_yaml(plugin, reference):
    declared = set(plugin["node_types"]) | set(plugin["relationships"])
    unknown = sorted(set(CLOUDIFY_AWS_NAME.findall(reference)) - declared)
    assert not unknown, f"docs/reference.md names types or relationships that plugin.yaml does not declare: {unknown}"


def test_every_operation_path_the_reference_names_exists_in_plugin_yaml(plugin, reference):
    declared = {path for _, _, path in operations(plugin)}
    unknown = sorted(set(OPERATION_PATH.findall(reference)) - declared)
    assert not unknown, f"docs/reference.md names operation paths that plugin.yaml does not map: {unknown}"


# --- README.md and links ---------------------------------------------------------


def test_the_readme_is_at_most_10_kb():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; the limit is {README_LIMIT}: move detail to docs/"


def test_the_readme_starts_with_make_demo_and_make_test():
    before, block = README.read_text().split("```", 2)[:2]
    assert len([line for line in before.splitlines() if line.strip()]) <= 1, (
        "README.md must open with the commands' code block (after at most a title line)"
    )
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines()[1:] if line.strip()]
    assert commands[:2] == ["make demo", "make test"], f"README.md's first code block runs {commands}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file(doc: Path):
    text = FENCED_BLOCK.sub("", doc.read_text())
    targets = [target for target in MARKDOWN_LINK.findall(text) if ":" not in target and not target.startswith("#")]
    broken = [target for target in targets if not (doc.parent / target.split("#", 1)[0]).exists()]
    assert not broken, f"{doc.relative_to(ROOT)} links to files that do not exist: {broken}"


def table_cells(text: str) -> list[str]:
    """The cells of every markdown table row outside fenced blocks."""
    rows = [line.strip() for line in FENCED_BLOCK.sub("", text).splitlines() if line.strip().startswith("|")]
    return [cell.strip() for row in rows for cell in row.strip("|").split(" | ")]


def test_table_cells_are_counted_per_row_and_column():
    assert table_cells("| a b | c |\n| --- | --- |\n| d | e f g |\n```\n| x y z w |\n```\n") == [
        "a b",
        "c",
        "---",
        "---",
        "d",
        "e f g",
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_table_cell_is_longer_than_45_words(doc: Path):
    long_cells = [cell[:60] for cell in table_cells(doc.read_text()) if len(cell.split()) > TABLE_CELL_WORD_LIMIT]
    assert not long_cells, f"{doc.relative_to(ROOT)} has table cells over {TABLE_CELL_WORD_LIMIT} words: {long_cells}"


def test_the_readme_blueprint_installs_and_uninstalls(deploy, ec2, tmp_path):
    blueprint = yaml.safe_load(README.read_text().split("```yaml", 1)[1].split("```", 1)[0])
    assert blueprint["imports"][0] == TYPES_URL
    nodes = blueprint["node_templates"]
    nodes["key"]["properties"]["private_key_path"] = str(tmp_path / "my-server.pem")
    deployment = deploy(nodes, dsl=blueprint["tosca_definitions_version"])
    deployment.install()
    instance_id = deployment.runtime("server")["aws_resource_id"]
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    assert reservation["Instances"][0]["KeyName"] == "my-server"
    deployment.uninstall()
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    assert reservation["Instances"][0]["State"]["Name"] == "terminated"


# --- on a manager, this plugin's package name --------------------------------------

OFFICIAL_PACKAGE = "cloudify-aws-plugin"


def test_the_package_name_is_not_the_official_plugins_and_is_the_same_everywhere():
    plugin = yaml.safe_load(PLUGIN_YAML.read_text())["plugins"]["aws"]
    setup_name = re.search(r'name="([^"]+)"', (ROOT / "setup.py").read_text()).group(1)
    assert plugin["package_name"] == setup_name == "cloudify-aws-ec2-plugin"
    assert plugin["package_name"] != OFFICIAL_PACKAGE


@pytest.mark.parametrize(
    "path",
    [*DOCS, *sorted((ROOT / "examples").glob("*.yaml"))],  # migrate's code names it to warn about it
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_no_document_or_example_imports_the_official_package_on_a_manager(path):
    assert f"plugin:{OFFICIAL_PACKAGE}" not in path.read_text()
