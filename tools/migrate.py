"""Rewrites a blueprint written for the classic plugin into one that
cloudify-common 7 accepts, and says exactly what it changed.

    python -m tools.migrate BLUEPRINT [-i INPUTS ...] [-o OUT] [--rewrite-imports]

What it changes, and only there, by editing those values in the text (so
comments, order and layout stay as they are):

- ``use_external_resource: {get_input: NAME}`` in a node template becomes
  ``true`` or ``false``: the value of NAME in the inputs given with ``-i`` (YAML
  files, or ``NAME=true``), else the input's default. cloudify-common 7's DSL
  parser refuses intrinsic functions there ("Only boolean values are allowed
  for `use_external_resource`"), a check hard-coded in dsl_parser that no
  plugin can lift.
- With ``--rewrite-imports``: the classic types URL becomes the Cloudify 7
  types URL and the classic AWS plugin URL becomes ``plugin:cloudify-aws-plugin``,
  the forms a Cloudify 7 manager serves. Without it imports stay as they are:
  offline, ``python -m tools.offline write-cfy-config`` (or ``import_resolver()``
  for the Python API) serves the classic URLs.
- ``tosca_definitions_version`` only when an import needs a later version:
  with ``--rewrite-imports`` (the Cloudify 7 types files declare
  cloudify_dsl_1_3 at the least, and the manager's plugin.yaml has
  ``package_name``, which needs 1_2), or when a local file the blueprint
  imports declares a later version or plugin keys that need one. The classic
  URLs served offline need no change: their files import into cloudify_dsl_1_0.

It refuses, with the reason and a non-zero exit, what it cannot rewrite
safely: another function in ``use_external_resource`` (``get_property``,
``concat``, ...), an input with no value or a value that is not a boolean,
YAML anchors, aliases or merge keys on those values, comments inside them.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dsl_parser.functions import TEMPLATE_FUNCTIONS
from dsl_parser.version import SUPPORTED_VERSIONS

from tools.offline import CLASSIC_PLUGIN_URL, CLASSIC_TYPES_URL, classic_plugin_urls, classic_types_urls

TYPES_URL = "http://www.getcloudify.org/spec/cloudify/7.0.0/types.yaml"
PLUGIN_IMPORT = "plugin:cloudify-aws-plugin"
# The lowest DSL version that the Cloudify 7 types files (types_1_3.yaml) declare.
REWRITTEN_IMPORTS_VERSION = "cloudify_dsl_1_3"
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
        return f"line {self.line}: {self.where}: {self.old} -> {self.new.lstrip(': ')} ({self.why})"


@dataclass
class Result:
    """The rewritten text, its changes in text order, and notes for the user."""

    text: str
    changes: list[Change]
    notes: list[str]


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


def _quoted_like(node: yaml.ScalarNode, value: str) -> str:
    """``value`` written with the same quotes as ``node``."""
    return f"{node.style}{value}{node.style}" if node.style in ("'", '"') else value


class _Migration:
    """One run over one blueprint's text: collects the edits, applies them, checks the result."""

    def __init__(self, text: str, inputs: dict, rewrite_imports: bool, base_dir: Path | None) -> None:
        self.text = text
        self.inputs = inputs
        self.rewrite_imports = rewrite_imports
        self.base_dir = base_dir
        self.changes: list[Change] = []
        self.notes: list[str] = []
        # (path of keys, new value) for the check that nothing else changed.
        self.expected: list[tuple[tuple, Any]] = []
        self.resolved_inputs: set[str] = set()
        try:
            documents = list(yaml.compose_all(text))
            self.data = yaml.safe_load(text)
            events = list(yaml.parse(text))
        except yaml.YAMLError as error:
            raise Refused(f"it is not valid YAML: {_show(str(error))}") from None
        if len(documents) != 1 or not isinstance(documents[0], yaml.MappingNode):
            raise Refused("it is not a blueprint: a YAML file with one mapping at the top is expected")
        self.root = documents[0]
        self.anchor_lines = {
            event.start_mark.line
            for event in events
            if event.start_mark is not None
            and (isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None)
        }

    def run(self) -> Result:
        self.use_external_resource()
        required, why = self.imports()
        self.version(required, why)
        text = self.text
        for change in sorted(self.changes, key=lambda c: c.start, reverse=True):
            text = text[: change.start] + change.new + text[change.end :]
        self.check(text)
        self.note_unused_inputs(yaml.safe_load(text))
        self.changes.sort(key=lambda c: c.start)
        return Result(text, self.changes, self.notes)

    # -- use_external_resource ---------------------------------------------

    def use_external_resource(self) -> None:
        templates = _entry(self.root, "node_templates")
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
            path = ("node_templates", name, "properties", "use_external_resource")
            self.resolve_get_input(where, path, key_node, value_node)

    def resolve_get_input(self, where: str, path: tuple, key_node: yaml.Node, value_node: yaml.Node) -> None:
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
            raise Refused(f"{where} uses get_input with a path ({_show(self.span(argument))}): give the input's name")
        lines = range(key_node.start_mark.line, value_node.end_mark.line + 1)
        if self.anchor_lines.intersection(lines):
            raise Refused(f"{where} has a YAML anchor or alias on its lines: write it out without them")
        name = argument.value
        value, source = self.input_value(where, name)
        if getattr(value_node, "flow_style", False):
            start, end = value_node.start_mark.index, value_node.end_mark.index
            new = "true" if value else "false"
        else:  # a block mapping on the following lines: the value moves up next to the key
            start, end = key_node.end_mark.index, argument.end_mark.index
            new = f": {'true' if value else 'false'}"
        old = self.text[start:end]
        if COMMENT.search(old):
            raise Refused(f"{where} has a comment inside its value: move it after the value, then run this again")
        self.changes.append(
            Change(start, end, new, key_node.start_mark.line + 1, where, _show(old.lstrip(": ")), source)
        )
        self.expected.append((path, value))
        self.resolved_inputs.add(name)

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
        """Rewrites the classic import URLs when asked; returns the DSL version
        that the imports need (None when nothing needs more), and why."""
        entry = _entry(self.root, "imports")
        items = entry[1].value if entry and isinstance(entry[1], yaml.SequenceNode) else []
        known = set(classic_types_urls()) | set(classic_plugin_urls())
        required, why = None, ""
        rewritten = False
        for index, item in enumerate(items):
            if not isinstance(item, yaml.ScalarNode):
                continue
            url = item.value
            new = None
            if CLASSIC_TYPES_URL.match(url) and url != TYPES_URL:
                new = TYPES_URL
            elif CLASSIC_PLUGIN_URL.match(url):
                new = PLUGIN_IMPORT
            if new and self.rewrite_imports:
                self.changes.append(
                    Change(
                        item.start_mark.index,
                        item.end_mark.index,
                        _quoted_like(item, new),
                        item.start_mark.line + 1,
                        f"imports[{index}]",
                        url,
                        "--rewrite-imports: the form a Cloudify 7 manager serves",
                    )
                )
                self.expected.append((("imports", index), new))
                rewritten = True
                continue
            if new and url not in known:
                self.notes.append(
                    f"import {url} looks classic, but the offline import rules do not list it: "
                    "add a rule for it to cfy's config.yaml, or use --rewrite-imports"
                )
            needed = self.local_import_needs(url)
            if needed and (required is None or _version_index(needed[0]) > _version_index(required)):
                required, why = needed
        if rewritten and (required is None or _version_index(REWRITTEN_IMPORTS_VERSION) > _version_index(required)):
            required, why = REWRITTEN_IMPORTS_VERSION, "the imports now name the Cloudify 7 types"
        return required, why

    def local_import_needs(self, url: str) -> tuple[str, str] | None:
        """The DSL version a local imported file needs, from its own
        tosca_definitions_version and its plugin keys (only files on this
        machine are read: nothing is fetched)."""
        if url.startswith("file:"):
            path = Path(url[len("file:") :])
        elif "://" in url or ":" in url.split("/")[0] or self.base_dir is None:
            return None
        else:
            path = self.base_dir / url
        try:
            imported = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as error:
            self.notes.append(f"could not read import {url} to check the DSL version it needs: {_show(str(error))}")
            return None
        if not isinstance(imported, dict):
            return None
        needs: list[tuple[str, str]] = []
        declared = imported.get("tosca_definitions_version")
        if isinstance(declared, str) and declared in SUPPORTED_VERSIONS:
            needs.append((declared, f"import {url} declares {declared}"))
        for plugin_name, plugin in (imported.get("plugins") or {}).items():
            for key in sorted(set(plugin or {}) & set(PLUGIN_KEY_VERSIONS)):
                needs.append((PLUGIN_KEY_VERSIONS[key], f"import {url} declares plugins.{plugin_name}.{key}"))
        return max(needs, key=lambda need: _version_index(need[0]), default=None)

    def version(self, required: str | None, why: str) -> None:
        entry = _entry(self.root, "tosca_definitions_version")
        if entry is None or not isinstance(entry[1], yaml.ScalarNode) or entry[1].value not in SUPPORTED_VERSIONS:
            found = _show(self.span(entry[1])) if entry else "missing"
            raise Refused(
                f"tosca_definitions_version is {found}: cloudify-common 7 reads {', '.join(SUPPORTED_VERSIONS)}"
            )
        node = entry[1]
        if required is None or _version_index(required) <= _version_index(node.value):
            return
        self.changes.append(
            Change(
                node.start_mark.index,
                node.end_mark.index,
                _quoted_like(node, required),
                node.start_mark.line + 1,
                "tosca_definitions_version",
                node.value,
                f"{why}: that needs {required} or later",
            )
        )
        self.expected.append((("tosca_definitions_version",), required))

    # -- checks ------------------------------------------------------------

    def note_unused_inputs(self, result: dict) -> None:
        declared = self.data.get("inputs") or {}
        used = _inputs_used({key: value for key, value in result.items() if key != "inputs"})
        for name in sorted(self.resolved_inputs - used):
            if not (isinstance(declared.get(name), dict) and "default" in declared[name]):
                self.notes.append(
                    f"input {name} is no longer used, and has no default: a deployment must still be given a "
                    "value for it (or delete the input from the blueprint)"
                )

    def span(self, node: yaml.Node) -> str:
        return self.text[node.start_mark.index : node.end_mark.index]

    def check(self, text: str) -> None:
        """The edited text must hold the same data as the original but for the
        edited values, and no node may still carry a function in
        use_external_resource."""
        expected = copy.deepcopy(self.data)
        for path, value in self.expected:
            target = expected
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        try:
            result = yaml.safe_load(text)
        except yaml.YAMLError as error:  # a bug in this command, not in the blueprint
            raise Refused(f"the edit produced invalid YAML ({_show(str(error))}); nothing was written") from None
        if result != expected:  # as above
            raise Refused("the edit changed more than the values it meant to; nothing was written")
        for where in _functions_left(result):
            raise Refused(f"{where} is not a boolean and this command does not rewrite it there: write true or false")


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
    """The rewritten text, what changed, and notes. ``base_dir`` is the
    blueprint's folder, for reading its local imports. Raises Refused."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.migrate", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("blueprint", metavar="BLUEPRINT", type=Path)
    parser.add_argument(
        "-i", "--inputs", action="append", default=[], help="an inputs YAML file, or NAME=VALUE[;...]; repeatable"
    )
    parser.add_argument("-o", "--output", type=Path, help="where to write the result (default: standard output)")
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
    except OSError as error:
        print(f"{args.blueprint}: {error.strerror}", file=sys.stderr)
        return 1
    except Refused as refusal:
        print(f"{args.blueprint}: refused, nothing written: {refusal}", file=sys.stderr)
        return 1
    if args.output:
        with args.output.open("w", newline="") as handle:
            handle.write(result.text)
    else:
        sys.stdout.write(result.text)
    for change in result.changes:
        print(f"{args.blueprint}: changed {change.describe()}", file=report)
    if not result.changes:
        print(f"{args.blueprint}: no change needed", file=report)
    for note in result.notes:
        print(f"{args.blueprint}: note: {note}", file=report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
