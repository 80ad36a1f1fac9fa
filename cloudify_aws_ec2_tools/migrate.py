"""Rewrites a blueprint written for the classic plugin into one that
cloudify-common 7 accepts, and says exactly what it changed.

    cfy-aws-migrate BLUEPRINT [-i INPUTS ...] [-o OUT] [--rewrite-imports]

(also ``python -m cloudify_aws_ec2_tools.migrate``, and ``python -m
tools.migrate`` in a clone). What it changes, and only there, by editing those
values in the text (so comments, order and layout stay as they are):

- ``use_external_resource: {get_input: NAME}`` in a node template becomes
  ``true`` or ``false``: the value of NAME in the inputs given with ``-i`` (YAML
  files, or ``NAME=true``), else the input's default. cloudify-common 7's DSL
  parser refuses intrinsic functions there ("Only boolean values are allowed
  for `use_external_resource`"), a check hard-coded in dsl_parser that no
  plugin can lift. The report names each input baked in: it has no effect
  there any more, so the result serves that one value.
- ``cloudify_agent`` (Cloudify 3.3's key, in node templates and in the
  property defaults of node types, in the blueprint and in the local files it
  imports) becomes ``agent_config``, the only key Cloudify 7's engine reads
  (with ``install_agent``, which stays as it is). Where both apply to a node
  (set on it, or its type's default), they are merged into ``agent_config``
  and its keys win over cloudify_agent's, as the manager's code that reads
  both (its snapshot restore) merges them; ``name`` becomes ``service_name``.
  Changed imported files are written beside OUT, at the same relative path.
- With ``--rewrite-imports``: the classic types URL becomes the Cloudify 7
  types URL and the classic AWS plugin URL becomes
  ``plugin:cloudify-aws-ec2-plugin`` (this plugin's package name: the official
  AWS plugin is ``cloudify-aws-plugin``, and a manager would resolve that name
  to it). Without it imports stay as they are: offline, ``cfy-aws-offline
  write-cfy-config`` (or ``import_resolver()`` for the Python API) serves the
  classic URLs.
- ``tosca_definitions_version`` only when an import needs a later version:
  with ``--rewrite-imports`` cloudify_dsl_1_5 (the types file a Cloudify 7
  manager serves for that URL declares cloudify_dsl_1_4 and uses 1_5
  features), or when a local file the blueprint imports declares a later
  version or plugin keys that need one. The classic URLs served offline need
  no change: their files import into cloudify_dsl_1_0.

It warns about every Compute node that would install an agent, and every
Instance with no key pair. It refuses, with the reason and a non-zero exit,
what it cannot rewrite safely: another function in ``use_external_resource``
(``get_property``, ``concat``, ...), an input with no value or a value that is
not a boolean, YAML anchors, aliases or merge keys on those values, comments
inside them, cloudify_agent keys that agent_config has no place for.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dsl_parser.functions import TEMPLATE_FUNCTIONS
from dsl_parser.version import SUPPORTED_VERSIONS

from cloudify_aws_ec2_tools.offline import (
    CLASSIC_PLUGIN_URL,
    CLASSIC_TYPES_URL,
    MANAGER_PLUGIN_IMPORT,
    classic_plugin_urls,
    classic_types_urls,
)

TYPES_URL = "http://www.getcloudify.org/spec/cloudify/7.0.0/types.yaml"
PLUGIN_IMPORT = MANAGER_PLUGIN_IMPORT
OFFICIAL_PLUGIN_IMPORT = "plugin:cloudify-aws-plugin"
# What a Cloudify 7 manager serves for TYPES_URL declares cloudify_dsl_1_4 (which
# dsl_parser refuses to import into an earlier version) and uses 1_5 features.
REWRITTEN_IMPORTS_VERSION = "cloudify_dsl_1_5"
TYPES_IMPORT_WHY = (
    f"the imports now name the Cloudify 7 types: what a manager serves for {TYPES_URL} declares "
    "cloudify_dsl_1_4, which dsl_parser refuses to import into an earlier version, and uses cloudify_dsl_1_5 "
    "features (parameters of type operation_name)"
)
PLUGIN_IMPORT_WHY = (
    "--rewrite-imports: this plugin's package name on a Cloudify 7 manager; plugin:cloudify-aws-plugin names the "
    "official AWS plugin too, and a manager resolves that to the official plugin (or fetches it from its catalog)"
)
# Plugin keys and the DSL version that dsl_parser requires for each (elements/plugins.py).
PLUGIN_KEY_VERSIONS = {
    "install_arguments": "cloudify_dsl_1_1",
    "package_name": "cloudify_dsl_1_2",
    "package_version": "cloudify_dsl_1_2",
    "supported_platform": "cloudify_dsl_1_2",
    "distribution": "cloudify_dsl_1_2",
    "distribution_version": "cloudify_dsl_1_2",
    "distribution_release": "cloudify_dsl_1_2",
    "properties": "cloudify_dsl_1_5",
    "properties_description": "cloudify_dsl_1_5",
}
COMMENT = re.compile(r"(^|\s)#")

# The keys of Cloudify 7's cloudify.datatypes.AgentConfig (agent_config's type):
# dsl_parser refuses any other key there. Classic cloudify_agent's `name` is its service_name.
AGENT_CONFIG_KEYS = frozenset(
    {
        "install_method", "service_name", "network", "user", "key", "password", "port", "process_management",
        "min_workers", "max_workers", "heartbeat", "disable_requiretty", "env", "extra", "executable_temp_path",
        "log_level", "log_max_bytes", "log_max_history",
    }
)  # fmt: skip
RENAMED_AGENT_KEYS = {"name": "service_name"}
COMPUTE = "cloudify.nodes.Compute"
INSTANCE = "cloudify.aws.nodes.Instance"
KEYPAIR_RELATIONSHIP = "cloudify.aws.relationships.instance_connected_to_keypair"
# The parents of the base and plugin types this command needs to know of.
KNOWN_PARENTS = {
    COMPUTE: "cloudify.nodes.Root",
    "cloudify.nodes.WindowsCompute": COMPUTE,
    "cloudify.nodes.Container": COMPUTE,
    INSTANCE: COMPUTE,
}
# cloudify.nodes.Compute's defaults in Cloudify 7's types.
COMPUTE_DEFAULTS = {"agent_config": {"install_method": "remote", "port": 22, "network": "default"}, "install_agent": ""}
KEY_NAME_PARAMETERS = ("key_name", "KeyName")


MAIN = "the blueprint"


class Refused(Exception):
    """The blueprint cannot be rewritten safely; the message says why and what to do."""


@dataclass
class Change:
    """One edit of the blueprint's text."""

    start: int
    end: int
    new: str
    line: int
    where: str
    old: str
    why: str

    def describe(self) -> str:
        new = _show(self.new.lstrip(": ")) or "(removed)"
        return f"line {self.line}: {self.where}: {self.old} -> {new} ({self.why})"


@dataclass
class Result:
    """The rewritten text, its changes in text order, notes and warnings for
    the user, and the local files it imports that changed too (by their path
    relative to the blueprint's folder)."""

    text: str
    changes: list[Change]
    notes: list[str]
    warnings: list[str] = field(default_factory=list)
    imported: dict[Path, Result] = field(default_factory=dict)


def _entry(mapping: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if not isinstance(mapping, yaml.MappingNode):
        return None
    for key_node, value_node in mapping.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None


def _version_index(version: str) -> int:
    return SUPPORTED_VERSIONS.index(version)


def _show(text: str) -> str:
    return " ".join(text.split())


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1_000_000)
    return text.strip().removesuffix("\n...")  # a scalar's document end


def _quoted_like(node: yaml.ScalarNode, value: str) -> str:
    """``value`` written with the same quotes as ``node``."""
    return f"{node.style}{value}{node.style}" if node.style in ("'", '"') else value


def _last_index(node: yaml.Node) -> int:
    """Where ``node``'s own text ends: a block collection's end mark lies on
    the next key's line, so its last descendant's end is taken instead."""
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return _last_index(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _last_index(node.value[-1])
    return node.end_mark.index


def _local_path(url: str, folder: Path) -> Path | None:
    """The file a local import names (relative to ``folder``, or file:), else None."""
    if url.startswith("file:"):
        return Path(url[len("file:") :])
    if "://" in url or ":" in url.split("/")[0] or "--" in url:
        return None
    return folder / url


class _File:
    """One YAML file's text: its parsed forms, the edits collected for it,
    and the data the edits should produce."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where
        self.changes: list[Change] = []
        self.notes: list[str] = []
        subject = "it" if where == MAIN else where
        try:
            documents = list(yaml.compose_all(text))
            self.data = yaml.safe_load(text)
            events = list(yaml.parse(text))
        except yaml.YAMLError as error:
            raise Refused(f"{subject} is not valid YAML: {_show(str(error))}") from None
        if len(documents) != 1 or not isinstance(documents[0], yaml.MappingNode):
            raise Refused(f"{subject} is not a blueprint: a YAML file with one mapping at the top is expected")
        self.root = documents[0]
        self.expected = copy.deepcopy(self.data)
        self.anchor_lines = {
            event.start_mark.line
            for event in events
            if event.start_mark is not None
            and (isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None)
        }

    def span(self, node: yaml.Node) -> str:
        return self.text[node.start_mark.index : node.end_mark.index]

    def edit(self, start: int, end: int, new: str, node: yaml.Node, where: str, why: str) -> None:
        old = self.text[start:end]
        self.changes.append(Change(start, end, new, node.start_mark.line + 1, where, _show(old.lstrip(": ")), why))

    def no_anchors_or_comments(self, where: str, start: yaml.Node, end_index: int, old: str) -> None:
        lines = range(start.start_mark.line, self.text.count("\n", 0, end_index) + 1)
        if self.anchor_lines.intersection(lines):
            raise Refused(f"{where} has a YAML anchor or alias on its lines: write it out without them")
        if COMMENT.search(old):
            raise Refused(f"{where} has a comment inside its value: move it after the value, then run this again")

    def apply(self) -> str:
        """The edited text, checked: it must hold the expected data and nothing else."""
        text = self.text
        for change in sorted(self.changes, key=lambda c: c.start, reverse=True):
            text = text[: change.start] + change.new + text[change.end :]
        try:
            result = yaml.safe_load(text)
        except yaml.YAMLError as error:  # a bug in this command, not in the blueprint
            raise Refused(
                f"the edit of {self.where} produced invalid YAML ({_show(str(error))}); nothing was written"
            ) from None
        if result != self.expected:  # as above
            raise Refused(f"the edit of {self.where} changed more than the values it meant to; nothing was written")
        self.changes.sort(key=lambda c: c.start)
        return text


@dataclass
class _Type:
    """A node or relationship type declared in one of the files read."""

    parent: str | None
    properties: dict
    file: _File


class _Migration:
    """One run over a blueprint and the local files it imports: collects the
    edits, applies them, checks the result, and says what it found."""

    def __init__(self, text: str, inputs: dict, rewrite_imports: bool, base_dir: Path | None) -> None:
        self.main = _File(text, MAIN)
        self.inputs = inputs
        self.rewrite_imports = rewrite_imports
        self.base_dir = base_dir
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.resolved_inputs: dict[str, list[str]] = {}
        # Local imported files by their path relative to base_dir (or as written, outside it).
        self.imported: dict[Path, _File] = {}
        self.node_types: dict[str, _Type] = {}
        self.relationship_types: dict[str, _Type] = {}

    @property
    def data(self) -> dict:
        return self.main.data

    def files(self) -> list[_File]:
        return [self.main, *self.imported.values()]

    def run(self) -> Result:
        self.use_external_resource()
        required, why = self.imports()
        self.version(required, why)
        self.read_types()
        for file in self.files():
            self.agent_settings(file)
        text = self.main.apply()
        for where in _functions_left(yaml.safe_load(text)):
            raise Refused(f"{where} is not a boolean and this command does not rewrite it there: write true or false")
        imported = {path: Result(file.apply(), file.changes, file.notes) for path, file in self.imported.items()}
        self.note_baked_inputs(yaml.safe_load(text))
        self.warn_about_hosts()
        changed = {path: result for path, result in imported.items() if result.changes}
        return Result(text, self.main.changes, self.notes + self.main.notes, self.warnings, changed)

    # -- use_external_resource ---------------------------------------------

    def use_external_resource(self) -> None:
        templates = _entry(self.main.root, "node_templates")
        if templates is None or not isinstance(templates[1], yaml.MappingNode):
            return
        seen: set[int] = set()
        for name_node, template in templates[1].value:
            name = name_node.value
            properties = _entry(template, "properties")
            if properties is None or not isinstance(properties[1], yaml.MappingNode):
                continue
            where = f"node_templates.{name}.properties.use_external_resource"
            entry = _entry(properties[1], "use_external_resource")
            if entry is None:
                if _entry(properties[1], "<<") is not None:
                    merged = ((self.data.get("node_templates") or {}).get(name) or {}).get("properties") or {}
                    if isinstance(merged.get("use_external_resource"), (dict, list)):
                        raise Refused(
                            f"{where} comes from a YAML merge key (<<) and is not a boolean: "
                            "write use_external_resource: true or false in the node template itself"
                        )
                continue
            key_node, value_node = entry
            inside = template.start_mark.index <= key_node.start_mark.index < template.end_mark.index
            if id(value_node) in seen or not inside:
                raise Refused(f"{where} is shared with other YAML through an anchor and alias: write it out in place")
            seen.add(id(value_node))
            if isinstance(value_node, yaml.ScalarNode):
                continue  # a literal, as the parser wants
            self.resolve_get_input(where, name, key_node, value_node)

    def resolve_get_input(self, where: str, name: str, key_node: yaml.Node, value_node: yaml.Node) -> None:
        function = None
        if isinstance(value_node, yaml.MappingNode) and len(value_node.value) == 1:
            function = value_node.value[0][0].value
        if function != "get_input":
            if function in TEMPLATE_FUNCTIONS:
                raise Refused(
                    f"{where} uses {function}, which only a deployment can evaluate; this command resolves "
                    "get_input only: write true or false there yourself"
                )
            raise Refused(f"{where} is not a boolean and not {{get_input: NAME}}: write true or false there")
        argument = value_node.value[0][1]
        if not isinstance(argument, yaml.ScalarNode) or argument.tag != "tag:yaml.org,2002:str":
            raise Refused(
                f"{where} uses get_input with a path ({_show(self.main.span(argument))}): give the input's name"
            )
        lines = range(key_node.start_mark.line, value_node.end_mark.line + 1)
        if self.main.anchor_lines.intersection(lines):
            raise Refused(f"{where} has a YAML anchor or alias on its lines: write it out without them")
        input_name = argument.value
        value, source = self.input_value(where, input_name)
        if getattr(value_node, "flow_style", False):
            start, end = value_node.start_mark.index, value_node.end_mark.index
            new = "true" if value else "false"
        else:  # a block mapping on the following lines: the value moves up next to the key
            start, end = key_node.end_mark.index, argument.end_mark.index
            new = f": {'true' if value else 'false'}"
        if COMMENT.search(self.main.text[start:end]):
            raise Refused(f"{where} has a comment inside its value: move it after the value, then run this again")
        self.main.edit(start, end, new, key_node, where, source)
        self.main.expected["node_templates"][name]["properties"]["use_external_resource"] = value
        self.resolved_inputs.setdefault(input_name, []).append(f"node_templates.{name}")

    def input_value(self, where: str, name: str) -> tuple[bool, str]:
        declared = self.data.get("inputs") or {}
        if not isinstance(declared, dict) or name not in declared:
            raise Refused(f"{where} is {{get_input: {name}}} but the blueprint declares no input {name!r}")
        if name in self.inputs:
            value, source = self.inputs[name], f"input {name} as given"
        elif isinstance(declared[name], dict) and "default" in declared[name]:
            value, source = declared[name]["default"], f"input {name}'s default"
        else:
            raise Refused(
                f"{where} is {{get_input: {name}}} and input {name!r} has no default: "
                f"give its value with -i (an inputs file, or {name}=true / {name}=false)"
            )
        if not isinstance(value, bool):
            raise Refused(f"{where} is {{get_input: {name}}} and {source} is {value!r}, not true or false")
        return value, source

    # -- imports and tosca_definitions_version -----------------------------

    def imports(self) -> tuple[str | None, str]:
        """Rewrites the classic import URLs when asked, and reads the local
        imported files; returns the DSL version that the imports need (None
        when nothing needs more), and why."""
        entry = _entry(self.main.root, "imports")
        items = entry[1].value if entry and isinstance(entry[1], yaml.SequenceNode) else []
        known = set(classic_types_urls()) | set(classic_plugin_urls())
        required, why = None, ""
        rewritten = False
        for index, item in enumerate(items):
            if not isinstance(item, yaml.ScalarNode):
                continue
            url = item.value
            new, reason = None, ""
            if CLASSIC_TYPES_URL.match(url) and url != TYPES_URL:
                new, reason = TYPES_URL, "--rewrite-imports: the Cloudify 7 types, as a manager serves them"
            elif CLASSIC_PLUGIN_URL.match(url):
                new, reason = PLUGIN_IMPORT, PLUGIN_IMPORT_WHY
            if new and self.rewrite_imports:
                new_text = _quoted_like(item, new)
                self.main.edit(item.start_mark.index, item.end_mark.index, new_text, item, f"imports[{index}]", reason)
                self.main.expected["imports"][index] = new
                rewritten = True
                continue
            if url == OFFICIAL_PLUGIN_IMPORT or url.startswith(f"{OFFICIAL_PLUGIN_IMPORT}?"):
                self.notes.append(
                    f"import {url} names the official AWS plugin's package on a Cloudify 7 manager, not this one: "
                    f"if the blueprint is meant for this plugin (earlier versions of this command wrote that form), "
                    f"import {PLUGIN_IMPORT} instead"
                )
            if new and url not in known:
                self.notes.append(
                    f"import {url} looks classic, but the offline import rules do not list it: "
                    "add a rule for it to cfy's config.yaml, or use --rewrite-imports"
                )
            if self.base_dir is not None:
                needed = self.read_local_import(url, self.base_dir)
                if needed and (required is None or _version_index(needed[0]) > _version_index(required)):
                    required, why = needed
        if rewritten and (required is None or _version_index(REWRITTEN_IMPORTS_VERSION) > _version_index(required)):
            required, why = REWRITTEN_IMPORTS_VERSION, TYPES_IMPORT_WHY
        return required, why

    def read_local_import(self, url: str, folder: Path) -> tuple[str, str] | None:
        """Reads a local imported file (and the local files it imports, each
        once; nothing is fetched); returns the DSL version it needs, from its
        own tosca_definitions_version and its plugin keys, and why."""
        path = _local_path(url, folder)
        if path is None or self.base_dir is None:
            return None
        resolved = path.resolve()
        try:
            key = resolved.relative_to(self.base_dir.resolve())
        except ValueError:
            key = Path(url)
        if key in self.imported:
            return None
        try:
            text = resolved.read_text()
        except OSError as error:
            self.notes.append(f"could not read import {url}: {_show(str(error))}")
            return None
        try:
            file = _File(text, f"import {url}")
        except Refused as refusal:
            self.notes.append(f"could not read import {url} to check it: {refusal}")
            return None
        self.imported[key] = file
        needs: list[tuple[str, str]] = []
        declared = file.data.get("tosca_definitions_version")
        if isinstance(declared, str) and declared in SUPPORTED_VERSIONS:
            needs.append((declared, f"import {url} declares {declared}"))
        for plugin_name, plugin in (file.data.get("plugins") or {}).items():
            for plugin_key in sorted(set(plugin or {}) & set(PLUGIN_KEY_VERSIONS)):
                needs.append(
                    (PLUGIN_KEY_VERSIONS[plugin_key], f"import {url} declares plugins.{plugin_name}.{plugin_key}")
                )
        for nested in file.data.get("imports") or []:
            if isinstance(nested, str):
                need = self.read_local_import(nested, resolved.parent)
                if need:
                    needs.append(need)
        return max(needs, key=lambda need: _version_index(need[0]), default=None)

    def version(self, required: str | None, why: str) -> None:
        entry = _entry(self.main.root, "tosca_definitions_version")
        if entry is None or not isinstance(entry[1], yaml.ScalarNode) or entry[1].value not in SUPPORTED_VERSIONS:
            found = _show(self.main.span(entry[1])) if entry else "missing"
            raise Refused(
                f"tosca_definitions_version is {found}: cloudify-common 7 reads {', '.join(SUPPORTED_VERSIONS)}"
            )
        node = entry[1]
        if required is None or _version_index(required) <= _version_index(node.value):
            return
        new = _quoted_like(node, required)
        self.main.edit(
            node.start_mark.index,
            node.end_mark.index,
            new,
            node,
            "tosca_definitions_version",
            f"{why}: that needs {required} or later",
        )
        self.main.expected["tosca_definitions_version"] = required
        self.notes.append(f"tosca_definitions_version raised from {node.value} to {required} because {why}")

    # -- node types ----------------------------------------------------------

    def read_types(self) -> None:
        """The node and relationship types that the blueprint and its local imports declare."""
        for file in self.files():
            for section, table in (("node_types", self.node_types), ("relationships", self.relationship_types)):
                declared = file.data.get(section) or {}
                for name, spec in declared.items() if isinstance(declared, dict) else ():
                    spec = spec if isinstance(spec, dict) else {}
                    properties = spec.get("properties")
                    table[name] = _Type(
                        spec.get("derived_from"), properties if isinstance(properties, dict) else {}, file
                    )

    def chain(self, type_name: str | None, table: dict[str, _Type] | None = None) -> list[str]:
        """``type_name`` and its ancestors, nearest first, as far as known."""
        table = self.node_types if table is None else table
        names: list[str] = []
        while type_name and type_name not in names:
            names.append(type_name)
            declared = table.get(type_name)
            type_name = declared.parent if declared else KNOWN_PARENTS.get(type_name)
        return names

    def type_default(self, type_name: str | None, key: str) -> tuple[str, Any] | None:
        """The nearest declared default of property ``key`` in the type's
        chain of local types (the original files): (the type, its default)."""
        for name in self.chain(type_name):
            declared = self.node_types.get(name)
            schema = declared.properties.get(key) if declared else None
            if isinstance(schema, dict) and "default" in schema:
                return name, schema["default"]
        return None

    # -- cloudify_agent -> agent_config ----------------------------------------

    def translated(self, where: str, settings: Any) -> dict:
        """Classic cloudify_agent settings in agent_config's keys; refuses a key it has no place for."""
        if not isinstance(settings, dict):
            raise Refused(f"{where} is not a mapping ({_flow(settings)}): move its settings to agent_config yourself")
        result = {}
        for key, value in settings.items():
            key = RENAMED_AGENT_KEYS.get(key, key)
            if key not in AGENT_CONFIG_KEYS:
                raise Refused(
                    f"{where} has {key!r}, which Cloudify 7's agent_config has no place for (it takes "
                    f"{', '.join(sorted(AGENT_CONFIG_KEYS))}): remove it, then run this again"
                )
            result[key] = value
        return result

    def agent_settings(self, file: _File) -> None:
        """Rewrites cloudify_agent to agent_config in ``file``'s node types and node templates."""
        node_types = _entry(file.root, "node_types")
        for name_node, spec in (
            node_types[1].value if node_types and isinstance(node_types[1], yaml.MappingNode) else []
        ):
            properties = _entry(spec, "properties")
            if properties and isinstance(properties[1], yaml.MappingNode):
                self.type_agent_settings(file, name_node.value, properties[1])
        templates = _entry(file.root, "node_templates")
        for name_node, spec in templates[1].value if templates and isinstance(templates[1], yaml.MappingNode) else []:
            properties = _entry(spec, "properties")
            type_node = _entry(spec, "type")
            type_name = type_node[1].value if type_node and isinstance(type_node[1], yaml.ScalarNode) else None
            if properties and isinstance(properties[1], yaml.MappingNode):
                self.template_agent_settings(file, name_node.value, type_name, properties[1])

    def type_agent_settings(self, file: _File, type_name: str, properties: yaml.MappingNode) -> None:
        classic = _entry(properties, "cloudify_agent")
        if classic is None:
            return
        default = _entry(classic[1], "default")
        if default is None:
            return  # declares the property with no value: nothing to move
        where = f"node_types.{type_name}.properties"
        settings = self.translated(
            f"{where}.cloudify_agent.default",
            file.data["node_types"][type_name]["properties"]["cloudify_agent"]["default"],
        )
        own = _entry(properties, "agent_config")
        inherited = self.type_default(type_name, "agent_config")
        merged_with = ""
        if inherited is not None and isinstance(inherited[1], dict):
            merged_with = (
                " (merged with agent_config's default, whose keys win)"
                if inherited[0] == type_name
                else (f" (merged with agent_config's default from {inherited[0]}, whose keys win)")
            )
            settings = {**inherited[1], **{k: v for k, v in settings.items() if k not in inherited[1]}}
        elif inherited is not None:
            raise Refused(
                f"{where}: agent_config's default (from {inherited[0]}) is not a mapping: "
                "merge cloudify_agent into it yourself"
            )
        schemas = file.expected["node_types"][type_name]["properties"]
        why = "Cloudify 7 reads agent_config only" + merged_with
        if own is not None:
            own_default = _entry(own[1], "default")
            if own_default is None:
                raise Refused(
                    f"{where} declares agent_config with no default and cloudify_agent with one: merge them yourself"
                )
            self.replace_value(file, f"{where}.agent_config.default", own_default[1], settings, why, own_default[0])
            self.delete_entry(file, f"{where}.cloudify_agent", properties, classic, why)
            schemas["agent_config"]["default"] = settings
            del schemas["cloudify_agent"]
        else:
            self.rename_key(file, f"{where}.cloudify_agent", classic[0], why)
            if settings != file.data["node_types"][type_name]["properties"]["cloudify_agent"]["default"]:
                self.replace_value(file, f"{where}.agent_config.default", default[1], settings, why, default[0])
            schemas["agent_config"] = schemas.pop("cloudify_agent")
            schemas["agent_config"]["default"] = settings
        self.notes.append(f"{self.prefix(file)}{where}.cloudify_agent became agent_config{merged_with}")

    def template_agent_settings(
        self, file: _File, name: str, type_name: str | None, properties: yaml.MappingNode
    ) -> None:
        classic = _entry(properties, "cloudify_agent")
        own = _entry(properties, "agent_config")
        type_classic = self.type_default(type_name, "cloudify_agent")
        if classic is None and not (own is not None and type_classic is not None and type_classic[1]):
            return
        where = f"node_templates.{name}.properties"
        values = file.data["node_templates"][name]["properties"]
        if classic is not None:
            settings, source = (
                self.translated(f"{where}.cloudify_agent", values["cloudify_agent"]),
                "its cloudify_agent",
            )
        else:
            assert type_classic is not None
            settings = self.translated(
                f"node_types.{type_classic[0]}.properties.cloudify_agent.default", type_classic[1]
            )
            source = f"cloudify_agent's default from {type_classic[0]}"
        if own is not None:
            base, base_source = values["agent_config"], "its agent_config"
        else:
            inherited = self.type_default(type_name, "agent_config")
            base, base_source = (inherited[1], f"agent_config's default from {inherited[0]}") if inherited else ({}, "")
        if not isinstance(base, dict):
            raise Refused(f"{where}: {base_source} is not a mapping ({_flow(base)}): merge {source} into it yourself")
        merged = {**base, **{k: v for k, v in settings.items() if k not in base}}
        merged_with = f" (merged with {base_source}, whose keys win)" if base else ""
        why = "Cloudify 7 reads agent_config only" + merged_with
        expected = file.expected["node_templates"][name]["properties"]
        if own is not None:
            if merged != values["agent_config"]:
                self.replace_value(file, f"{where}.agent_config", own[1], merged, why, key_node=own[0])
            if classic is not None:
                self.delete_entry(file, f"{where}.cloudify_agent", properties, classic, why)
                del expected["cloudify_agent"]
            expected["agent_config"] = merged
            self.notes.append(f"{self.prefix(file)}{where}: {source} became part of its agent_config{merged_with}")
        else:
            assert classic is not None
            self.rename_key(file, f"{where}.cloudify_agent", classic[0], why)
            if merged != values["cloudify_agent"]:
                self.replace_value(file, f"{where}.agent_config", classic[1], merged, why, key_node=classic[0])
            expected["agent_config"] = merged
            del expected["cloudify_agent"]
            self.notes.append(f"{self.prefix(file)}{where}.cloudify_agent became agent_config{merged_with}")

    def rename_key(self, file: _File, where: str, key_node: yaml.Node, why: str) -> None:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.style not in (None, "", "'", '"'):
            raise Refused(f"{where}: write the key cloudify_agent plainly, then run this again")
        file.no_anchors_or_comments(where, key_node, key_node.end_mark.index, "")
        file.edit(
            key_node.start_mark.index,
            key_node.end_mark.index,
            _quoted_like(key_node, "agent_config"),
            key_node,
            where,
            why,
        )

    def replace_value(
        self, file: _File, where: str, node: yaml.Node, value: dict, why: str, key_node: yaml.Node | None = None
    ) -> None:
        """Replaces ``node``'s text by ``value`` in flow style (a block value
        moves up next to its key)."""
        if getattr(node, "flow_style", False) or key_node is None and isinstance(node, yaml.ScalarNode):
            start, end, new = node.start_mark.index, node.end_mark.index, _flow(value)
        else:
            key_node = key_node or self.key_of(file, node)
            start, end, new = key_node.end_mark.index, _last_index(node), f": {_flow(value)}"
        file.no_anchors_or_comments(where, node, end, file.text[start:end])
        file.edit(start, end, new, node, where, why)

    def key_of(self, file: _File, node: yaml.Node) -> yaml.Node:
        def search(parent: yaml.Node) -> yaml.Node | None:
            if isinstance(parent, yaml.MappingNode):
                for key_node, value_node in parent.value:
                    if value_node is node:
                        return key_node
                    found = search(value_node)
                    if found is not None:
                        return found
            elif isinstance(parent, yaml.SequenceNode):
                for item in parent.value:
                    found = search(item)
                    if found is not None:
                        return found
            return None

        found = search(file.root)
        assert found is not None
        return found

    def delete_entry(
        self, file: _File, where: str, mapping: yaml.MappingNode, entry: tuple[yaml.Node, yaml.Node], why: str
    ) -> None:
        """Deletes a block mapping's entry, from its key's line to its value's last line."""
        key_node, value_node = entry
        line_start = file.text.rfind("\n", 0, key_node.start_mark.index) + 1
        if mapping.flow_style or file.text[line_start : key_node.start_mark.index].strip():
            raise Refused(
                f"{where} is not on lines of its own: write the properties in block style, then run this again"
            )
        end = _last_index(value_node)
        line_end = file.text.find("\n", end)
        line_end = len(file.text) if line_end < 0 else line_end + 1
        old = file.text[line_start:line_end]
        file.no_anchors_or_comments(where, key_node, end, old)
        file.edit(line_start, line_end, "", key_node, where, why)

    def prefix(self, file: _File) -> str:
        return "" if file is self.main else f"{file.where}: "

    # -- notes and warnings ----------------------------------------------------

    def note_baked_inputs(self, result: dict) -> None:
        declared = self.data.get("inputs") or {}
        used = _inputs_used({key: value for key, value in result.items() if key != "inputs"})
        for name, places in sorted(self.resolved_inputs.items()):
            value = self.inputs[name] if name in self.inputs else declared[name]["default"]
            self.notes.append(
                f"input {name}'s value ({'true' if value else 'false'}) is now written into "
                f"{', '.join(f'{place}.properties.use_external_resource' for place in places)}: the input no longer "
                "has an effect there, so this blueprint serves that value only; for the other value, migrate the "
                f"original again with -i {name}={'false' if value else 'true'} into another blueprint"
            )
            if name not in used and not (isinstance(declared.get(name), dict) and "default" in declared[name]):
                self.notes.append(
                    f"input {name} is no longer used, and has no default: a deployment must still be given a "
                    "value for it (or delete the input from the blueprint)"
                )

    def effective(self, properties: dict, type_name: str | None, key: str) -> Any:
        """A property's value as Cloudify 7 gives it: the template's, else the nearest type default."""
        if key in properties:
            return properties[key]
        for name in self.chain(type_name):
            declared = self.node_types.get(name)
            schema = declared.properties.get(key) if declared else None
            if isinstance(schema, dict) and "default" in schema:
                return schema["default"]
        return COMPUTE_DEFAULTS.get(key) if COMPUTE in self.chain(type_name) else None

    def warn_about_hosts(self) -> None:
        """A warning for every Compute node that would install an agent, and
        every Instance with no key pair (on the rewritten files)."""
        self.node_types.clear()
        self.relationship_types.clear()
        for file in self.files():
            file.data = file.expected
        self.read_types()
        for file in self.files():
            templates = file.data.get("node_templates") or {}
            for name, template in templates.items() if isinstance(templates, dict) else ():
                template = template if isinstance(template, dict) else {}
                type_name = template.get("type")
                chain = self.chain(type_name)
                if COMPUTE not in chain:
                    continue
                properties = template.get("properties")
                properties = properties if isinstance(properties, dict) else {}
                what = f"node {name} ({type_name})" + ("" if file is self.main else f" in {file.where}")
                installs = self.installs_agent(properties, type_name)
                if installs:
                    self.warnings.append(
                        f"{what} would install a Cloudify agent ({installs}). Under cfy local no agent can be "
                        "installed: install launches the instance, then fails at cloudify_agent.create. On a "
                        "manager the agent is installed over SSH with agent_config's user and key. If no agent "
                        "is wanted, give it agent_config: {install_method: none}"
                    )
                if INSTANCE in chain and not self.has_key_pair(properties, type_name, template):
                    self.warnings.append(
                        f"{what} is an Instance with no key pair (no {KEYPAIR_RELATIONSHIP} relationship, no "
                        "parameters.key_name): on a Cloudify 7 manager there is no provider context with "
                        "agents_keypair / agents_security_group, which classic blueprints relied on, so it launches "
                        "with no key" + (" and the agent install cannot log in" if installs else "")
                    )

    def installs_agent(self, properties: dict, type_name: str | None) -> str:
        """Why Cloudify 7's install workflow would install an agent on the node, or '' when it would not."""
        install_agent = self.effective(properties, type_name, "install_agent")
        if install_agent is False:
            return ""
        if install_agent is True:
            return "install_agent is true"
        agent_config = self.effective(properties, type_name, "agent_config")
        if not isinstance(agent_config, dict):
            return f"agent_config is {_flow(agent_config)}, which this command cannot evaluate"
        method = agent_config.get("install_method")
        if method == "none":
            return ""
        if method is None:
            return "agent_config has no install_method, and Cloudify 7 installs an agent unless it is none"
        return f"agent_config.install_method is {_flow(method)}"

    def has_key_pair(self, properties: dict, type_name: str | None, template: dict) -> bool:
        parameters = self.effective(properties, type_name, "parameters")
        if isinstance(parameters, dict) and any(parameters.get(key) for key in KEY_NAME_PARAMETERS):
            return True
        if properties.get("key_name"):
            return True
        relationships = template.get("relationships")
        relationships = relationships if isinstance(relationships, list) else []
        return any(
            isinstance(relationship, dict)
            and KEYPAIR_RELATIONSHIP in self.chain(relationship.get("type"), self.relationship_types)
            for relationship in relationships
        )


def _inputs_used(data: Any) -> set[str]:
    """The names of the inputs that get_input refers to anywhere in ``data``."""
    if isinstance(data, list):
        return set().union(*map(_inputs_used, data))
    if not isinstance(data, dict):
        return set()
    used = set().union(*map(_inputs_used, data.values()))
    argument = data.get("get_input") if len(data) == 1 else None
    if isinstance(argument, str):
        used.add(argument)
    elif isinstance(argument, list) and argument and isinstance(argument[0], str):
        used.add(argument[0])
    return used


def _functions_left(data: dict) -> list[str]:
    """Where use_external_resource is still a function or a structure: node
    templates (and their relationships), and property defaults of the
    blueprint's own node and relationship types."""
    found = []

    def check(where: str, value: Any) -> None:
        if isinstance(value, (dict, list)):
            found.append(where)

    for name, template in (data.get("node_templates") or {}).items():
        template = template or {}
        properties = template.get("properties") or {}
        if "use_external_resource" in properties:
            check(f"node_templates.{name}.properties.use_external_resource", properties["use_external_resource"])
        for index, relationship in enumerate(template.get("relationships") or []):
            properties = (relationship or {}).get("properties") or {}
            if "use_external_resource" in properties:
                where = f"node_templates.{name}.relationships[{index}].properties.use_external_resource"
                check(where, properties["use_external_resource"])
    for section in ("node_types", "relationships"):
        for name, spec in (data.get(section) or {}).items():
            schema = ((spec or {}).get("properties") or {}).get("use_external_resource")
            if isinstance(schema, dict) and "default" in schema:
                check(f"{section}.{name}.properties.use_external_resource.default", schema["default"])
    return found


def migrate(
    text: str, inputs: dict | None = None, rewrite_imports: bool = False, base_dir: Path | None = None
) -> Result:
    """The rewritten text, what changed, notes, warnings and the changed
    local imports. ``base_dir`` is the blueprint's folder, for reading its
    local imports. Raises Refused."""
    return _Migration(text, inputs or {}, rewrite_imports, base_dir).run()


def read_inputs(sources: list[str]) -> dict:
    """Inputs as cfy takes them: YAML files, or NAME=VALUE[;NAME=VALUE]; later ones win."""
    inputs: dict = {}
    for source in sources:
        path = Path(source)
        if path.is_file():
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise Refused(f"inputs file {source} does not hold a mapping of input names to values")
            inputs.update(loaded)
        elif "=" in source:
            for pair in filter(None, source.split(";")):
                name, _, value = pair.partition("=")
                inputs[name.strip()] = yaml.safe_load(value)
        else:
            raise Refused(f"-i {source}: no such file, and not NAME=VALUE")
    return inputs


def imported_targets(blueprint: Path, output: Path | None, result: Result) -> dict[Path, Path]:
    """Where each changed imported file goes: beside ``output``, at its path
    relative to the blueprint. Refuses when there is no output file, and when
    a file would overwrite its original while the blueprint does not."""
    if not result.imported:
        return {}
    names = ", ".join(str(path) for path in result.imported)
    if output is None:
        raise Refused(f"the local files it imports change too ({names}): give -o OUT; they are written beside OUT")
    in_place = output.resolve() == blueprint.resolve()
    targets = {}
    for path in result.imported:
        if path.is_absolute() or ".." in path.parts:
            raise Refused(f"import {path} is outside the blueprint's folder and changes: copy it into the folder first")
        target = output.resolve().parent / path
        if target == (blueprint.resolve().parent / path) and not in_place:
            raise Refused(
                f"writing {path} beside {output} would overwrite the file the original blueprint imports: give -o "
                f"in another folder (or -o {blueprint} to rewrite the blueprint and its imports in place)"
            )
        targets[path] = target
    return targets


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("blueprint", metavar="BLUEPRINT", type=Path)
    parser.add_argument(
        "-i", "--inputs", action="append", default=[], help="an inputs YAML file, or NAME=VALUE[;...]; repeatable"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="where to write the result (default: standard output); changed local imports are written beside it",
    )
    parser.add_argument(
        "--rewrite-imports",
        action="store_true",
        help=f"rewrite the classic import URLs to {TYPES_URL} and {PLUGIN_IMPORT} (a Cloudify 7 manager's forms)",
    )
    args = parser.parse_args(argv)
    report = sys.stdout if args.output else sys.stderr
    try:
        with args.blueprint.open(newline="") as handle:  # keeps \r\n line ends as they are
            text = handle.read()
        result = migrate(text, read_inputs(args.inputs), args.rewrite_imports, args.blueprint.resolve().parent)
        targets = imported_targets(args.blueprint, args.output, result)
    except OSError as error:
        print(f"{args.blueprint}: {error.strerror}", file=sys.stderr)
        return 1
    except Refused as refusal:
        print(f"{args.blueprint}: refused, nothing written: {refusal}", file=sys.stderr)
        return 1
    for path, target in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", newline="") as handle:
            handle.write(result.imported[path].text)
    if args.output:
        with args.output.open("w", newline="") as handle:
            handle.write(result.text)
    else:
        sys.stdout.write(result.text)
    for change in result.changes:
        print(f"{args.blueprint}: changed {change.describe()}", file=report)
    for path, imported in result.imported.items():
        for change in imported.changes:
            print(f"{args.blueprint.parent / path}: changed {change.describe()}", file=report)
        print(f"{args.blueprint.parent / path}: written to {targets[path]}", file=report)
    if not result.changes and not result.imported:
        print(f"{args.blueprint}: no change needed", file=report)
    for note in result.notes:
        print(f"{args.blueprint}: note: {note}", file=report)
    for warning in result.warnings:
        print(f"{args.blueprint}: warning: {warning}", file=report)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m cloudify_aws_ec2_tools.migrate"))
