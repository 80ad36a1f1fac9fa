"""Offline imports for blueprints written for the classic plugin.

Classic blueprints import the Cloudify base types and the AWS plugin by URL,
for example ``http://www.getcloudify.org/spec/cloudify/3.4/types.yaml`` and
``http://www.getcloudify.org/spec/aws-plugin/1.4.1/plugin.yaml``. Offline,
import-resolver rules serve them from this project's files:

- every Cloudify types URL (3.x to 7.x) -> ``offline/types.yaml``, which
  declares cloudify_dsl_1_0 and so imports into any DSL version;
- every classic AWS plugin URL (1.x) -> ``offline/plugin-classic-dsl.yaml``:
  ``plugin.yaml`` without ``package_name``/``package_version``, which need
  cloudify_dsl_1_2 or later, so that cloudify_dsl_1_0/1_1 blueprints import it.
  It is generated from ``plugin.yaml`` (``generate``); a test keeps the two equal.

The versions served are listed: the releases, with both the ``X.Y`` and
``X.Y.Z`` forms, and the milestones of the classic era, on the hosts those
files were published under, over http and https.

dsl_parser's ``DefaultImportResolver`` matches a rule when its key is a prefix
of the import URL and appends the rest of the URL to the rule's value; when
that target cannot be read, it fetches the URL itself (offline, that fails).

- For the Python API (``rules``, ``import_resolver``) every rule is a whole
  URL, so nothing is appended: one rule per URL, kept in memory.
- cfy reads its config.yaml with a pure-Python YAML parser twice at every
  start, so the rules ``write-cfy-config`` writes are prefixes, two per host
  (``.../spec/cloudify/``, ``.../spec/aws-plugin/``): a rule per URL made the
  file 93 KB, about 0.25 s of CPU per cfy command. Their values are folders
  under the workdir holding a link per listed version
  (``cloudify/3.4/types.yaml``) to the one copied file. So cfy serves every
  listed version on every host (and the GitHub URL), a few more URLs than
  the Python API's rules list.

Usage (``cfy-aws-offline`` is installed with the plugin; it is also
``python -m cloudify_aws_ec2_tools.offline``, and ``python -m tools.offline``
in a clone)::

    cfy-aws-offline write-cfy-config DIR   # DIR is cfy's CFY_WORKDIR
    cfy-aws-offline generate [--check]     # offline/plugin-classic-dsl.yaml (in a clone)
    cfy-aws-offline rules                  # prints the Python API's rules as YAML

and, for ``cloudify.workflows.local``, ``init_env(..., resolver=import_resolver())``.

``write-cfy-config`` copies the two files into ``DIR/.cloudify/offline/`` and
points the rules there, so the clone or the installed package may move or be
upgraded without breaking cfy (run it again to take a newer plugin's files).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml
from dsl_parser.import_resolver.default_import_resolver import DefaultImportResolver

PACKAGE = Path(__file__).resolve().parent
# An installed package holds copies of plugin.yaml and offline/*.yaml in
# data/ (setup.py copies them at build time); a clone has them at its root.
DATA = PACKAGE / "data"
ROOT = PACKAGE.parent


def _data_file(clone_path: str) -> Path:
    installed = DATA / Path(clone_path).name
    return installed if installed.is_file() else ROOT / clone_path


PLUGIN_YAML = _data_file("plugin.yaml")
TYPES_FILE = _data_file("offline/types.yaml")
CLASSIC_PLUGIN_FILE = _data_file("offline/plugin-classic-dsl.yaml")
# Where write-cfy-config copies the two files, under cfy's workdir, and the
# folders there that hold a link to the copy per version (the cfy rules' targets).
WORKDIR_FILES = Path(".cloudify") / "offline"
VERSION_FOLDERS = ("cloudify", "aws-plugin")

# The plugin keys that cloudify_dsl_1_0 and 1_1 refuse (dsl_parser: PluginPackageName/Version).
PACKAGE_KEYS = ("package_name", "package_version")

# The hosts that blueprints name for the spec files (https://getcloudify.org was not seen).
HOSTS = (
    "http://www.getcloudify.org",
    "https://www.getcloudify.org",
    "http://getcloudify.org",
    "http://cloudify.co",
    "https://cloudify.co",
)
# Milestone and release-candidate URLs were only published under getcloudify.org.
PRERELEASE_HOSTS = ("http://www.getcloudify.org", "http://getcloudify.org")
GITHUB_PLUGIN_PREFIX = "https://raw.githubusercontent.com/cloudify-cosmo/cloudify-aws-plugin/"
GITHUB_PLUGIN = GITHUB_PLUGIN_PREFIX + "{version}/plugin.yaml"

# Release series and their last patch release. Blueprints wrote both "3.4" and
# "3.4.1", "5.0.0" and "5.0.5", so each series gives X.Y, X.Y.0 .. X.Y.<last>.
TYPES_SERIES = {
    "3.0": 0, "3.1": 0, "3.2": 1, "3.3": 1, "3.4": 2,
    "4.0": 1, "4.1": 1, "4.2": 0, "4.3": 3, "4.4": 0, "4.5": 5, "4.6": 0,
    "5.0": 5, "5.1": 2, "5.2": 7, "5.3": 0,
    "6.0": 0, "6.1": 0, "6.2": 0, "6.3": 0, "6.4": 2,
    "7.0": 5,
}  # fmt: skip
TYPES_PRERELEASE_SERIES = ("3.2", "3.3", "3.4", "3.5", "4.0")
PLUGIN_SERIES = {"1.0": 0, "1.1": 0, "1.2": 1, "1.3": 1, "1.4": 13, "1.5": 3}
PLUGIN_PRERELEASE_SERIES = ("1.1", "1.2", "1.3", "1.4", "1.5")
PRERELEASES = [f"m{n}" for n in range(1, 10)] + ["rc1", "rc2"]

# What a classic import looks like, whatever its version: used to tell the
# user about a classic URL that the rules above do not list.
CLASSIC_TYPES_URL = re.compile(r"^https?://(www\.)?(getcloudify\.org|cloudify\.co)/spec/cloudify/[^/]+/types\.yaml$")
CLASSIC_PLUGIN_URL = re.compile(
    r"^(https?://(www\.)?(getcloudify\.org|cloudify\.co)/spec/aws-plugin/1\.[^/]*/plugin\.yaml"
    r"|https?://raw\.githubusercontent\.com/cloudify-cosmo/cloudify-aws-plugin/1\.[^/]*/plugin\.yaml)$"
)

GENERATED_HEADER = """\
# GENERATED from plugin.yaml by `python -m tools.offline generate`: do not edit.
#
# plugin.yaml for blueprints declaring cloudify_dsl_1_0 or 1_1, which refuse
# package_name/package_version (those need cloudify_dsl_1_2): here they are
# replaced by `install: false`, since a plugin that is installed needs a source
# or a package name. That is what local runs need (cfy and the Python API run
# the operations in their own environment, where the plugin is installed); a
# manager uses plugin.yaml itself. The offline import-resolver rules
# (tools/offline.py) serve this file for the classic plugin URLs.
"""
PACKAGE_KEY_LINE = re.compile(r"^(?P<indent>[ \t]+)(package_name|package_version)[ \t]*:")


def _versions(series: dict[str, int], prerelease_series: tuple[str, ...]) -> tuple[list[str], list[str]]:
    released = []
    for name, last in series.items():
        released += [name] + [f"{name}.{patch}" for patch in range(last + 1)]
    prereleases = [f"{name}{suffix}" for name in prerelease_series for suffix in PRERELEASES]
    return released, prereleases


def types_versions() -> list[str]:
    """Every Cloudify types version that the rules serve (3.4, 3.4.1, 3.4m1, ...)."""
    released, prereleases = _versions(TYPES_SERIES, TYPES_PRERELEASE_SERIES)
    return released + prereleases


def plugin_versions() -> list[str]:
    """Every classic AWS plugin version that the rules serve."""
    released, prereleases = _versions(PLUGIN_SERIES, PLUGIN_PRERELEASE_SERIES)
    return released + prereleases


def classic_types_urls() -> list[str]:
    """Every Cloudify types URL that the rules serve."""
    released, prereleases = _versions(TYPES_SERIES, TYPES_PRERELEASE_SERIES)
    urls = [f"{host}/spec/cloudify/{version}/types.yaml" for version in released for host in HOSTS]
    return urls + [f"{host}/spec/cloudify/{version}/types.yaml" for version in prereleases for host in PRERELEASE_HOSTS]


def classic_plugin_urls() -> list[str]:
    """Every classic AWS plugin (1.x) URL that the rules serve."""
    released, prereleases = _versions(PLUGIN_SERIES, PLUGIN_PRERELEASE_SERIES)
    urls = [f"{host}/spec/aws-plugin/{version}/plugin.yaml" for version in released for host in HOSTS]
    urls += [GITHUB_PLUGIN.format(version=version) for version in released]
    return urls + [
        f"{host}/spec/aws-plugin/{version}/plugin.yaml" for version in prereleases for host in PRERELEASE_HOSTS
    ]


def file_url(path: Path) -> str:
    """A file: URL as dsl_parser reads it: it opens whatever follows "file:",
    without unquoting, so the path is written as it is (spaces included)."""
    return f"file://{path.resolve()}"


# How a blueprint on a manager imports this plugin; served locally too, so that
# such a blueprint also runs with cfy. (A rule is a prefix: "?version=..." after
# it would be appended to the file's path, so only the bare form is served.)
MANAGER_PLUGIN_IMPORT = "plugin:cloudify-aws-ec2-plugin"


def rules(types_file: Path = TYPES_FILE, plugin_file: Path = CLASSIC_PLUGIN_FILE) -> list[dict[str, str]]:
    """The import-resolver rules, one whole URL each, in DefaultImportResolver's form."""
    types_target, plugin_target = file_url(types_file), file_url(plugin_file)
    return (
        [{url: types_target} for url in classic_types_urls()]
        + [{url: plugin_target} for url in classic_plugin_urls()]
        + [{MANAGER_PLUGIN_IMPORT: plugin_target}]
    )


def cfy_rules(folder: Path) -> list[dict[str, str]]:
    """The prefix rules of cfy's config, serving the version folders that
    ``link_versions`` made in ``folder`` and its copy of the old-DSL plugin file."""
    types_tree, plugin_tree = (file_url(folder / name) + "/" for name in VERSION_FOLDERS)
    return (
        [{f"{host}/spec/cloudify/": types_tree} for host in HOSTS]
        + [{f"{host}/spec/aws-plugin/": plugin_tree} for host in HOSTS]
        + [{GITHUB_PLUGIN_PREFIX: plugin_tree}, {MANAGER_PLUGIN_IMPORT: file_url(folder / CLASSIC_PLUGIN_FILE.name)}]
    )


def import_resolver() -> DefaultImportResolver:
    """A resolver for the Python API: ``local.init_env(path, resolver=import_resolver())``."""
    return DefaultImportResolver(rules=rules())


def is_classic_url(url: str) -> bool:
    """Whether an import looks like a classic types or AWS plugin URL, of any version."""
    return bool(CLASSIC_TYPES_URL.match(url) or CLASSIC_PLUGIN_URL.match(url))


# ---------------------------------------------------------------------------
# The plugin file for cloudify_dsl_1_0 and 1_1


def classic_plugin_text(source: str) -> str:
    """plugin.yaml's text with each plugin's package_name/package_version
    lines replaced by ``install: false``, under a header saying where it comes
    from. Only those lines change, so comments and order stay; the result is
    checked key by key."""
    expected = yaml.safe_load(source)
    for name, plugin in (expected.get("plugins") or {}).items():
        if "install" in plugin:
            raise ValueError(f"plugin {name!r} in plugin.yaml declares install: generate cannot decide for it")
        for key in PACKAGE_KEYS:
            plugin.pop(key, None)
        plugin["install"] = False
    lines, previous_replaced = [], False
    for line in source.splitlines(keepends=True):
        match = PACKAGE_KEY_LINE.match(line)
        if match and not previous_replaced:
            lines.append(f"{match.group('indent')}install: false\n")
        elif not match:
            lines.append(line)
        previous_replaced = bool(match)
    text = GENERATED_HEADER + "\n" + "".join(lines)
    if yaml.safe_load(text) != expected:
        raise ValueError(
            "replacing the package_name/package_version lines changed more than those keys: "
            "keep them next to each other, each on a line of its own, under plugins.<name>"
        )
    return text


def generate(source: Path | None = None, target: Path | None = None) -> bool:
    """Writes the old-DSL plugin file (from plugin.yaml unless told otherwise);
    returns whether its content changed."""
    source, target = source or PLUGIN_YAML, target or CLASSIC_PLUGIN_FILE
    text = classic_plugin_text(source.read_text())
    if target.exists() and target.read_text() == text:
        return False
    target.write_text(text)
    return True


# ---------------------------------------------------------------------------
# cfy's config.yaml


def cfy_config_path(workdir: Path) -> Path:
    """cfy keeps its config in $CFY_WORKDIR/.cloudify/config.yaml."""
    return workdir / ".cloudify" / "config.yaml"


def fresh_cfy_config(workdir: Path) -> dict:
    """The settings ``cfy init`` writes: cfy reads a config.yaml only when it
    has a logging section with a file name."""
    return {
        "colors": False,
        "logging": {
            "filename": str((workdir / ".cloudify" / "logs" / "cli.log").resolve()),
            "loggers": {"cloudify.cli.main": "info", "cloudify.rest_client.http": "info"},
        },
    }


def merge_resolver_settings(settings: dict, new_rules: list[dict[str, str]]) -> dict:
    """``settings`` with ``new_rules`` in ``import_resolver.parameters.rules``:
    the rules this tool wrote (for a URL in ``new_rules``, or a whole classic
    URL as earlier versions wrote them, served from an offline folder) are
    replaced; every other rule stays, first and in its order (a mirror of the
    same URL too). Everything else is kept as it is."""
    resolver = settings.get("import_resolver") or {}
    if not isinstance(resolver, dict):
        raise ValueError("import_resolver in config.yaml is not a mapping")
    parameters = resolver.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ValueError("import_resolver.parameters in config.yaml is not a mapping")
    existing = parameters.get("rules") or []
    if not isinstance(existing, list):
        raise ValueError("import_resolver.parameters.rules in config.yaml is not a list")
    ours = {url for rule in new_rules for url in rule}
    kept = [rule for rule in existing if not _written_here(rule, ours)]
    merged = dict(settings)
    merged["import_resolver"] = {**resolver, "parameters": {**parameters, "rules": kept + new_rules}}
    return merged


def _written_here(rule: Any, keys: set[str]) -> bool:
    """Whether ``rule`` is one this tool writes (now, or as earlier versions did):
    for one of ``keys`` or a classic URL, served from a file of an offline folder.
    A user's rule for the same URL that points elsewhere (a mirror) is not."""
    if not isinstance(rule, dict) or len(rule) != 1:
        return False
    ((url, target),) = rule.items()
    ours = url in keys or (isinstance(url, str) and (is_classic_url(url) or url == MANAGER_PLUGIN_IMPORT))
    return ours and isinstance(target, str) and target.startswith("file:") and "/offline/" in target


def _dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=4096)


def _replace_top_level_block(text: str, key: str, block: str) -> str:
    """``text`` with its top-level ``key`` entry replaced by ``block`` (or
    ``block`` appended when there is none); the other lines stay as they are."""
    root = yaml.compose(text)
    lines = text.splitlines(keepends=True)
    pairs = root.value if isinstance(root, yaml.MappingNode) else []
    for index, (key_node, _) in enumerate(pairs):
        if key_node.value != key:
            continue
        start = key_node.start_mark.line
        stop = pairs[index + 1][0].start_mark.line if index + 1 < len(pairs) else len(lines)
        # Comments and blank lines right before the next key belong to it.
        while stop > start + 1 and (not lines[stop - 1].strip() or lines[stop - 1].lstrip().startswith("#")):
            stop -= 1
        return "".join(lines[:start]) + block + "".join(lines[stop:])
    separator = "" if not text or text.endswith("\n") else "\n"
    return text + separator + block


def workdir_files(workdir: Path) -> tuple[Path, Path]:
    """Where write-cfy-config keeps its copies of the types file and the
    old-DSL plugin file: under cfy's workdir, not in the clone."""
    folder = workdir / WORKDIR_FILES
    return folder / TYPES_FILE.name, folder / CLASSIC_PLUGIN_FILE.name


def copy_offline_files(workdir: Path) -> tuple[Path, Path]:
    """Copies the two files the rules serve into ``workdir``; returns the copies."""
    copies = workdir_files(workdir)
    copies[0].parent.mkdir(parents=True, exist_ok=True)
    for source, copy in zip((TYPES_FILE, CLASSIC_PLUGIN_FILE), copies, strict=True):
        copy.write_bytes(source.read_bytes())
    return copies


def link_versions(types_copy: Path, plugin_copy: Path) -> None:
    """Beside the copies, a folder per kind with ``<version>/types.yaml`` (or
    ``plugin.yaml``) for every listed version: a relative link to the copy (or
    a copy of it, where the file system has no symbolic links)."""
    folder = types_copy.parent
    kinds = ((types_copy, types_versions(), "types.yaml"), (plugin_copy, plugin_versions(), "plugin.yaml"))
    for name, (copy, versions, file_name) in zip(VERSION_FOLDERS, kinds, strict=True):
        for version in versions:
            _place(folder / name / version / file_name, copy)


def _place(link: Path, copy: Path) -> None:
    """``link`` to ``copy``, put in place at once (a cfy reading meanwhile sees
    the old one or the new); a copy where the file system has no symbolic links."""
    link.parent.mkdir(parents=True, exist_ok=True)
    new = link.with_name(f".{link.name}.{os.getpid()}.new")
    new.unlink(missing_ok=True)
    try:
        new.symlink_to(os.path.relpath(copy, link.parent))
    except OSError:
        shutil.copyfile(copy, new)
    os.replace(new, link)


def write_cfy_config(workdir: Path, new_rules: list[dict[str, str]] | None = None) -> Path:
    """Writes or merges the offline rules into cfy's config.yaml under
    ``workdir`` (cfy's CFY_WORKDIR), keeping the rest of the file: its other
    settings, other rules, comments and order. Without ``new_rules``, the
    rules serve copies of the two files made under ``workdir``, so that they
    do not depend on where this package or the clone is. Returns the file's path."""
    if new_rules is None:
        copies = copy_offline_files(workdir)
        link_versions(*copies)
        new_rules = cfy_rules(copies[0].parent)
    path = cfy_config_path(workdir)
    text = path.read_text() if path.exists() else ""
    settings = yaml.safe_load(text) if text.strip() else None
    if settings is None:
        settings = fresh_cfy_config(workdir)
        text = _dump(settings)
    if not isinstance(settings, dict):
        raise ValueError(f"{path} does not hold a mapping of settings")
    merged = merge_resolver_settings(settings, new_rules)
    updated = _replace_top_level_block(text, "import_resolver", _dump({"import_resolver": merged["import_resolver"]}))
    if yaml.safe_load(updated) != merged:  # an unusual layout: write the settings out whole
        updated = _dump(merged)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated)
    return path


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser(
        "write-cfy-config", help="write the offline import rules into DIR/.cloudify/config.yaml (DIR is CFY_WORKDIR)"
    )
    write.add_argument("workdir", metavar="DIR", type=Path)
    generate_command = commands.add_parser("generate", help="write the old-DSL plugin file from plugin.yaml")
    generate_command.add_argument("--check", action="store_true", help="only check that it is up to date")
    commands.add_parser("rules", help="print the Python API's import-resolver rules (one per URL) as YAML")
    args = parser.parse_args(argv)

    if args.command == "write-cfy-config":
        path = write_cfy_config(args.workdir)
        folder = workdir_files(args.workdir)[0].parent
        print(f"wrote {len(cfy_rules(folder))} import rules for classic blueprints to {path}")
        print(
            f"they serve copies of {TYPES_FILE.name} and {CLASSIC_PLUGIN_FILE.name} made in {folder}: "
            "moving this plugin or its clone does not break them; after moving the workdir "
            "or upgrading the plugin, run this again"
        )
    elif args.command == "generate":
        name = CLASSIC_PLUGIN_FILE.name
        if args.check:
            current = CLASSIC_PLUGIN_FILE.read_text() if CLASSIC_PLUGIN_FILE.exists() else None
            if current != classic_plugin_text(PLUGIN_YAML.read_text()):
                print(f"{name} is out of date: run python -m tools.offline generate", file=sys.stderr)
                return 1
            print(f"{name} is up to date")
        else:
            print(f"{name} {'written' if generate() else 'already up to date'}")
    else:
        sys.stdout.write(_dump({"rules": rules()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m cloudify_aws_ec2_tools.offline"))
