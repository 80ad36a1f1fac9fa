"""Blueprints run through cloudify-common's local workflow engine, offline.

The standard types URL is served from ``offline/types.yaml`` by an import
resolver rule, blueprints import the plugin's ``plugin.yaml`` by file URI, and
the Cloudify agent's modules (not installed) are ignored. The engine's event
lines are captured and tallied: how many tasks were rescheduled or failed
(and, with ``echo``, also printed, for a reader such as pytest's capsys).
After each run, the loggers the engine made for its operations are dropped.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import textwrap
from collections import Counter, deque
from pathlib import Path
from typing import Any, TextIO

import yaml
from cloudify.workflows import local
from dsl_parser.import_resolver.default_import_resolver import DefaultImportResolver

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_YAML = ROOT / "plugin.yaml"
OFFLINE_TYPES = ROOT / "offline" / "types.yaml"
TYPES_URL = "http://www.getcloudify.org/spec/cloudify/7.0.0/types.yaml"
AGENT_MODULES = ["cloudify_agent.operations", "cloudify_agent.installer.operations"]
# One of the AMIs moto knows in us-east-1.
IMAGE_ID = "ami-12c6146b"
TASK_EVENT = re.compile(r"\bTask (rescheduled|failed) '([^']+)'")


def types_resolver(types_file: Path = OFFLINE_TYPES) -> DefaultImportResolver:
    return DefaultImportResolver(rules=[{TYPES_URL: types_file.as_uri()}])


def write_blueprint(folder: Path, node_templates: dict | str, dsl: str = "cloudify_dsl_1_3", **sections: Any) -> Path:
    """Writes ``folder/blueprint.yaml`` importing the standard types URL and plugin.yaml."""
    if isinstance(node_templates, str):
        node_templates = yaml.safe_load(textwrap.dedent(node_templates))
    blueprint = {
        "tosca_definitions_version": dsl,
        "imports": [TYPES_URL, PLUGIN_YAML.as_uri()],
        "node_templates": node_templates,
        **sections,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "blueprint.yaml"
    path.write_text(yaml.safe_dump(blueprint, sort_keys=False))
    return path


class EventTally(io.TextIOBase):
    """A stdout stand-in that counts the engine's task events and keeps the last lines."""

    def __init__(self, keep: int = 40) -> None:
        self.events: Counter[str] = Counter()
        self.last: deque[str] = deque(maxlen=keep)
        self.echo: TextIO | None = None
        self._partial = ""

    def write(self, text: str) -> int:
        if self.echo is not None:
            self.echo.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.last.append(line)
            match = TASK_EVENT.search(line)
            if match:
                self.events[match.group(1)] += 1
        return len(text)

    def writable(self) -> bool:
        return True


def forget_operation_loggers(before: set[str]) -> None:
    """cloudify-common gives each operation a logger of its own, ``ctx.<uuid>``,
    whose handler holds the operation's context and through it the whole
    deployment, and never drops it: in a long process (a test session, a
    benchmark) every deployment ever run stays in memory, and each garbage
    collection walks them all. Drops those made since ``before`` (the names
    there were then)."""
    manager = logging.Logger.manager
    for name in set(manager.loggerDict) - before:
        logger = manager.loggerDict[name]
        if name.startswith("ctx.") and isinstance(logger, logging.Logger):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            del manager.loggerDict[name]


class LocalDeployment:
    """A blueprint deployed with cloudify.workflows.local, in memory unless
    another ``storage`` is given. With ``echo``, the engine's lines also go on
    to stdout as it is at each run."""

    def __init__(
        self,
        blueprint: Path,
        name: str = "local",
        inputs: dict | None = None,
        resolver: Any = None,
        echo: bool = False,
        storage: Any = None,
    ) -> None:
        self.env = local.init_env(
            str(blueprint),
            name=name,
            inputs=inputs,
            storage=storage if storage is not None else local.InMemoryStorage(),
            resolver=resolver or types_resolver(),
            ignored_modules=AGENT_MODULES,
        )
        self.tally = EventTally()
        self.echo = echo

    def execute(self, workflow: str, task_retries: int = 0, task_retry_interval: float = 0, **parameters: Any) -> Any:
        """Runs a workflow with the engine's output captured in ``tally``. One run at a time
        per process: stdout is redirected, and the loggers made meanwhile are dropped."""
        self.tally.echo = sys.stdout if self.echo else None
        loggers = set(logging.Logger.manager.loggerDict)
        try:
            with contextlib.redirect_stdout(self.tally):
                return self.env.execute(
                    workflow, parameters=parameters, task_retries=task_retries, task_retry_interval=task_retry_interval
                )
        finally:
            forget_operation_loggers(loggers)

    def install(self, **kwargs: Any) -> Any:
        return self.execute("install", **kwargs)

    def uninstall(self, **kwargs: Any) -> Any:
        return self.execute("uninstall", **kwargs)

    def execute_operation(self, operation: str, node_ids: list[str], **kwargs: Any) -> Any:
        return self.execute("execute_operation", operation=operation, node_ids=node_ids, **kwargs)

    def instances(self, node_id: str) -> list:
        return [i for i in self.env.storage.get_node_instances() if i.node_id == node_id]

    def runtime(self, node_id: str) -> dict:
        (instance,) = self.instances(node_id)
        return dict(instance.runtime_properties)

    def state(self, node_id: str) -> str:
        (instance,) = self.instances(node_id)
        return instance.state
