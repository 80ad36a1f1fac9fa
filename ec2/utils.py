"""Operation-level helpers, each shared concern written once.

- ``ec2_operation``: marks an operation and is the one error boundary, where
  the plugin's errors and botocore's become the workflow engine's exceptions,
  labelled with the node.
- ``Common`` / ``parse_common``: the properties every node type has.
- ``acting_for``: the deployment that names an assumed role's session.
- ``adopt_external``, ``release_external``, ``check_existence``: the
  reference page's "Using Existing Resources" short-circuits and its common
  validation.
- ``record`` / ``forget`` and the create marker: runtime-property bookkeeping.
- ``common_if_created``: delete's and stop's short-circuit when nothing was created.
- ``generated_name``: a node instance's default resource name.
- ``NodeFacts`` / ``node_facts``: what the validation checks read from an operation's ctx, once.
  Below the operations, functions take plain values (a node instance, a ``report`` callable), not ctx.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cloudify.decorators import operation
from cloudify.exceptions import NonRecoverableError, OperationRetry, RecoverableError

from ec2 import aws, connection, constants, errors, ownership, secrets
from ec2.properties import WaitSettings, as_bool, as_text, parse_tags, parse_wait

# --- the error boundary --------------------------------------------------------

# The deployment whose operation (or workflow) runs in this thread.
_deployment: ContextVar[str | None] = ContextVar("deployment", default=None)


def node_label(ctx) -> str:
    """Names the node (or both ends of a relationship) for error messages."""
    if getattr(ctx, "type", None) == "relationship-instance":
        return f"relationship '{ctx.source.node.id}' -> '{ctx.target.node.id}'"
    return f"node '{ctx.node.id}'"


def runs_locally(ctx) -> bool:
    """Whether the engine is the local one (``cfy``, ``cloudify.workflows.local``), not a manager."""
    return bool(getattr(ctx, "local", getattr(ctx, "_local", False)))


def workflow_id(ctx) -> str | None:
    """The workflow this operation runs in, when the engine says."""
    try:
        return getattr(ctx, "workflow_id", None)
    except Exception:  # a context made outside any workflow
        return None


def maps_operation(ctx, operation: str) -> bool:
    """Whether the node maps ``operation`` to an implementation (True when that cannot be read)."""
    known = getattr(ctx, "operations", None)  # preflight's view carries the node's mapped operations
    if known is None:
        try:
            node = ctx._endpoint.get_node(ctx.node.id)
            known = {name for name, op in (node.get("operations") or {}).items() if op.get("operation")}
        except Exception:  # an engine or test context without them
            return True
    return operation in known


def _retry_after(ctx) -> int:
    node = ctx.source.node if getattr(ctx, "type", None) == "relationship-instance" else ctx.node
    try:
        return parse_wait(node.properties).retry_after
    except errors.BadInput:
        return constants.DEFAULT_RETRY_AFTER


def ec2_operation(function: Callable) -> Callable:
    """Marks a plugin operation (resumable) and translates what it raises:
    a wait still in progress asks the engine to run it again later; ``NotReady``,
    throttling, 5xx and lost connections are retryable; anything else fails
    for good. Every message starts with the node's label."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs["ctx"]
        reporting = aws.progress.set(ctx.logger.info)
        deployment = _deployment.set(str(ctx.deployment.id or "local"))  # names an assumed role's session
        try:
            return function(*args, **kwargs)
        except errors.StillWaiting as error:
            raise OperationRetry(f"{node_label(ctx)}: {error}", retry_after=_retry_after(ctx)) from None
        except errors.NotReady as error:
            raise RecoverableError(
                f"{node_label(ctx)}: {error}", retry_after=error.retry_after or _retry_after(ctx)
            ) from None
        except errors.PluginError as error:
            raise NonRecoverableError(secrets.redact(f"{node_label(ctx)}: {error}")) from None
        except (ClientError, BotoCoreError) as error:
            retryable, text = errors.describe(error)
            text = secrets.redact(f"{node_label(ctx)}: {text}")
            if retryable:
                raise RecoverableError(text, retry_after=constants.DEFAULT_RETRY_AFTER) from None
            raise NonRecoverableError(text) from None
        finally:
            _deployment.reset(deployment)
            aws.progress.reset(reporting)

    return operation(run, resumable=True)


# --- the properties every node type has ----------------------------------------------


@dataclass(frozen=True)
class Common:
    external: bool = False
    resource_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    aws_config: dict[str, Any] = field(default_factory=dict)
    wait: WaitSettings = WaitSettings()
    propagation: float = constants.DEFAULT_PROPAGATION_TIMEOUT  # seconds; see fresh_for


def parse_common(properties: Mapping[str, Any]) -> Common:
    """use_external_resource, resource_id, tags, aws_config and the waiting properties."""
    aws_config = with_session_name(properties.get("aws_config") or {})
    connection.client_settings(aws_config)
    return Common(
        external=as_bool(properties.get("use_external_resource", False), "use_external_resource"),
        resource_id=as_text(properties.get("resource_id")),
        tags=parse_tags(properties.get("tags")),
        aws_config=dict(aws_config),
        wait=parse_wait(properties),
        propagation=connection.propagation_timeout(aws_config),
    )


def plugin_node_type(node) -> str | None:
    """Which of this plugin's node types a node is (or derives from); None for any other."""
    hierarchy = list(getattr(node, "type_hierarchy", None) or [node.type])
    return next((name for name in constants.NODE_TYPES if name in hierarchy), None)


def use_external(node) -> bool:
    """use_external_resource of a node, or of anything holding its properties (a relationship's other end)."""
    return as_bool(node.properties.get("use_external_resource", False), "use_external_resource")


# --- existing resources ------------------------------------------------------


def require_external(common: Common, kind: str, find: Callable[[str], str | None]) -> str:
    """An external resource's AWS id; fails naming the property and the fix."""
    if not common.resource_id:
        raise errors.BadInput(
            "resource_id",
            "is empty while use_external_resource is true",
            f"set resource_id to the existing {kind}, or set use_external_resource to false",
        )
    found = find(common.resource_id)
    if not found:
        raise errors.BadInput(
            "resource_id",
            f"names {kind} '{common.resource_id}', which does not exist in this account and region",
            f"correct resource_id, or set use_external_resource to false to create a new {kind}",
        )
    return found


def check_existence(
    common: Common,
    kind: str,
    find: Callable[[str], str | None],
    new_name: str = "",
    left_by_earlier_create: Callable[[], object] = lambda: False,
) -> None:
    """The reference page's common validation: an external resource must
    exist; a new one must not exist under the name it is to get, unless it is
    this node instance's own, left by an interrupted create that a rerun replaces."""
    if common.external:
        require_external(common, kind, find)
    elif new_name and find(new_name) and not left_by_earlier_create():
        raise errors.BadInput(
            "resource_id",
            f"names {kind} '{new_name}', which already exists",
            f"choose another name, or set use_external_resource to true to use the existing {kind}",
        )


def adopt_external(
    instance, report: ownership.Report, common: Common, kind: str, find: Callable[[str], str | None], **extra: Any
) -> str:
    """On create: records an existing resource's id (and ``extra``) on the node instance and returns it."""
    found = require_external(common, kind, find)
    record(instance, save=True, **{constants.AWS_RESOURCE_ID: found, constants.EXTERNAL_RESOURCE: True}, **extra)
    report(f"Using existing {kind} {found}; it will not be deleted.")
    return found


def release_external(
    instance, report: ownership.Report, common: Common, kind: str, find: Callable[[str], str | None], *names: str
) -> None:
    """On delete: checks that a recorded external resource still exists, then
    unassigns it from the node instance. One that was never recorded (create failed) is just forgotten."""
    if instance.runtime_properties.get(constants.AWS_RESOURCE_ID):
        found = require_external(common, kind, find)
        report(f"Released existing {kind} {found} from this deployment; it is left in place.")
    forget(instance, constants.AWS_RESOURCE_ID, constants.EXTERNAL_RESOURCE, *names)


# --- runtime properties -----------------------------------------------------


def record(instance, save: bool = False, **values: Any) -> None:
    """Sets runtime properties; ``save`` writes them to storage at once."""
    instance.runtime_properties.update(values)
    if save:
        instance.update()


def forget(instance, *names: str, save: bool = False) -> None:
    """Removes runtime properties the plugin set; ``save`` stores that at once."""
    for name in names:
        instance.runtime_properties.pop(name, None)
    if save:
        instance.update()


def mark_create_started(instance) -> None:
    """Recorded (and saved) on the node instance just before a create's first
    mutating call: only then can an earlier attempt have left something behind
    to find by tags. The time goes with it (a rerun's too), so that what a
    crash left is fresh."""
    record(instance, save=True, **{constants.CREATE_STARTED: True, constants.CREATED_AT: now()})


def now() -> str:
    """The wall-clock time as recorded in runtime properties (ISO 8601, UTC)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def fresh_for(runtime_properties: Mapping[str, Any], window: float, key: str = constants.CREATED_AT) -> float:
    """Seconds left of the propagation window of what the runtime properties
    say this plugin created at ``key``; 0 when that is unknown (an external
    resource, a classic-era record) or longer ago than ``window``. The record
    is wall-clock time, the only clock another process or machine shares; a
    record from the future (a clock set back) counts as just made."""
    recorded = runtime_properties.get(key)
    if not recorded or window <= 0:
        return 0.0
    try:
        made = datetime.fromisoformat(str(recorded)).timestamp()
    except ValueError:
        return 0.0
    age = max(0.0, time.time() - made)
    return max(0.0, window - age)


def freshest(records: Iterable[Mapping[str, Any]], window: float) -> float:
    """The longest propagation window left among what these runtime properties say this plugin created."""
    return max((fresh_for(record, window) for record in records), default=0.0)


def common_if_created(
    node_properties: Mapping[str, Any], runtime_properties: Mapping[str, Any], kind: str, report: Callable[[str], None]
) -> Common | None:
    """For delete and stop: the node's common properties when its node
    instance may own something in AWS; None (reported) when it never began a
    create, so there is nothing to call and no client to build."""
    if not ownership.may_exist(runtime_properties):
        report(f"No {kind} was created or recorded for this node instance; nothing to do.")
        return None
    return parse_common(node_properties)


# --- a new resource's default name ----------------------------------------------


def generated_name(deployment_id: Any, node_instance_id: Any) -> str:
    """A readable name unique to a node instance of a deployment."""
    return f"{deployment_id}-{node_instance_id}"


# --- what a node instance's checks read ----------------------------------------------


@dataclass(frozen=True)
class NodeFacts:
    """What the checks of a key pair, security group or elastic IP, and a
    security group's spec, need from an operation's ctx (or the aws_preflight
    workflow's view of one), read once by ``node_facts``: plain values."""

    deployment_id: Any
    node_id: str
    instance_id: str
    properties: Mapping[str, Any]
    runtime_properties: Mapping[str, Any]
    # The runtime properties of its relationships' targets of this plugin's types (see node_facts).
    targets: tuple[Mapping[str, Any], ...] = ()

    @property
    def owner(self) -> dict[str, str]:
        """The ownership tags of this node instance."""
        return ownership.owner_tags(self.deployment_id, self.instance_id)

    @property
    def generated_name(self) -> str:
        return generated_name(self.deployment_id, self.instance_id)

    def targets_fresh_for(self, window: float) -> float:
        """The longest propagation window left among the targets this plugin created."""
        return freshest(self.targets, window)


def node_facts(ctx, with_targets: bool = False) -> NodeFacts:
    """What an operation's ctx says about its node instance, once; ``with_targets``:
    with the runtime properties of its targets of this plugin's types (a read each)."""
    return NodeFacts(
        ctx.deployment.id,
        ctx.node.id,
        ctx.instance.id,
        ctx.node.properties,
        ctx.instance.runtime_properties,
        tuple(
            dict(relationship.target.instance.runtime_properties)
            for relationship in (ctx.instance.relationships if with_targets else ())
            if plugin_node_type(relationship.target.node)
        ),
    )


# --- the name of an assumed role's session -------------------------------------------


@contextmanager
def acting_for(deployment_id: str | None) -> Iterator[None]:
    """While it lasts, a role assumed without role_session_name gets a session named after this deployment."""
    token = _deployment.set(str(deployment_id or "local"))
    try:
        yield
    finally:
        _deployment.reset(token)


def role_session_name(deployment_id: str) -> str:
    """``cloudify-<deployment id>`` within STS's limits (64 characters of letters, digits and _+=,.@-).
    Not the node instance too: each would then be a configuration of its own, with its own AssumeRole."""
    return re.sub(r"[^\w+=,.@-]", "-", f"cloudify-{deployment_id}", flags=re.ASCII)[:64]


def with_session_name(aws_config: Any) -> Any:
    """``aws_config``, with a session named after the running deployment if it
    assumes a role without naming the session (and, outside one, as it is)."""
    deployment = _deployment.get()
    if deployment is None or not isinstance(aws_config, dict) or aws_config.get("role_session_name"):
        return aws_config
    if not any(aws_config.get(key) for key in ("role_arn", *connection.ROLE_ALIASES)):
        return aws_config
    return {**aws_config, "role_session_name": role_session_name(deployment)}
