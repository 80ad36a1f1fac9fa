"""Helpers shared by every resource module, each concern written once.

- ``client_for``: a node's EC2 client (built by ``ec2.connection``).
- ``call``: the single translator of botocore errors; ``existing`` for a
  describe where NotFound means "none".
- ``bad_input``: the one shape of a validation error (node, property, fix).
- ``check_existence``, ``adopt_external``, ``release_external``: the
  reference page's common validation and its "Using Existing Resources"
  short-circuits.
- ``record`` / ``forget``: runtime-property bookkeeping.
- ``creation_tags``, ``find_own``, ``own_ids``: ownership tags, and finding
  what an interrupted create of this node instance left behind.
- ``wait_settings`` / ``wait_for``: the waiting policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from cloudify.exceptions import NonRecoverableError, RecoverableError

from ec2 import connection, constants

RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


# --- who is asking ----------------------------------------------------------


def node_label(ctx) -> str:
    """Names the node (or both ends of a relationship) for error messages."""
    if getattr(ctx, "type", None) == "relationship-instance":
        return f"relationship '{ctx.source.node.id}' -> '{ctx.target.node.id}'"
    return f"node '{ctx.node.id}'"


def client_for(node) -> Any:
    """The EC2 client described by a node's own ``aws_config``."""
    return connection.ec2_client(node.properties.get("aws_config"), node.id)


# --- errors ------------------------------------------------------------------


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def is_not_found(code: str) -> bool:
    return code.endswith("NotFound")


def call(
    ctx,
    client,
    operation: str,
    *,
    not_found_ok: bool = False,
    retry_codes: Iterable[str] = (),
    **params: Any,
) -> dict | None:
    """Calls one EC2 API operation and translates what botocore raises.

    Throttling and 5xx (after botocore's own retries) and ``retry_codes``
    become ``RecoverableError``; a NotFound becomes ``None`` when
    ``not_found_ok``; any other AWS error is a ``NonRecoverableError``
    carrying the AWS message.
    """
    try:
        return getattr(client, operation)(**params)
    except ClientError as error:
        code = error_code(error)
        message = error.response.get("Error", {}).get("Message", str(error))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if not_found_ok and is_not_found(code):
            return None
        text = f"{node_label(ctx)}: EC2 {operation} failed: {code}: {message}"
        if code in RETRYABLE_CODES or status >= 500 or code in set(retry_codes):
            raise RecoverableError(text, retry_after=constants.DEFAULT_RETRY_AFTER) from None
        raise NonRecoverableError(text) from None
    except (NoCredentialsError, PartialCredentialsError) as error:
        raise NonRecoverableError(
            f"{node_label(ctx)}: cannot reach EC2: {error}. Fix: set credentials and a region "
            "in the node's 'aws_config' property, or in the environment or shared AWS files."
        ) from None
    except (BotoConnectionError, HTTPClientError) as error:
        raise RecoverableError(
            f"{node_label(ctx)}: EC2 {operation} did not get through: {error}",
            retry_after=constants.DEFAULT_RETRY_AFTER,
        ) from None
    except BotoCoreError as error:
        raise NonRecoverableError(f"{node_label(ctx)}: EC2 {operation} failed: {error}") from None


def existing(ctx, client, operation: str, result_key: str, **params: Any) -> list[dict]:
    """What a describe call finds; nothing when AWS answers NotFound."""
    return (call(ctx, client, operation, not_found_ok=True, **params) or {}).get(result_key, [])


def bad_input(ctx, prop: str, problem: str, fix: str) -> NonRecoverableError:
    """The one shape of a validation error: node, property, problem, fix."""
    return NonRecoverableError(f"{node_label(ctx)}: property '{prop}' {problem}. Fix: {fix}.")


# --- existing resources ------------------------------------------------------


def use_external(node) -> bool:
    value = node.properties.get("use_external_resource", False)
    return value is True or str(value).strip().lower() == "true"


def resource_id(node) -> str:
    return str(node.properties.get("resource_id") or "").strip()


def require_external(ctx, kind: str, find: Callable[[str], str | None]) -> str:
    """Resolves an external resource's AWS id, or fails naming the node and the fix."""
    wanted = resource_id(ctx.node)
    if not wanted:
        raise bad_input(
            ctx,
            "resource_id",
            "is empty while use_external_resource is true",
            f"set resource_id to the existing {kind}, or set use_external_resource to false",
        )
    found = find(wanted)
    if not found:
        raise bad_input(
            ctx,
            "resource_id",
            f"names {kind} '{wanted}', which does not exist in this account and region",
            f"correct resource_id, or set use_external_resource to false to create a new {kind}",
        )
    return found


def check_existence(
    ctx,
    kind: str,
    find: Callable[[str], str | None],
    new_name: str = "",
    left_by_earlier_create: Callable[[], bool] = lambda: False,
) -> None:
    """The reference page's common validation: an external resource must
    exist; a new one must not exist under the name it is to get, unless it is
    this node instance's own, left by an interrupted create that a rerun of
    create replaces."""
    if use_external(ctx.node):
        require_external(ctx, kind, find)
    elif new_name and find(new_name) and not left_by_earlier_create():
        raise bad_input(
            ctx,
            "resource_id",
            f"names {kind} '{new_name}', which already exists",
            f"choose another name, or set use_external_resource to true to use the existing {kind}",
        )


def adopt_external(ctx, kind: str, find: Callable[[str], str | None], **extra: Any) -> bool:
    """On create: records an existing resource's id and returns True when external."""
    if not use_external(ctx.node):
        return False
    found = require_external(ctx, kind, find)
    record(ctx.instance, **{constants.AWS_RESOURCE_ID: found, constants.EXTERNAL_RESOURCE: True}, **extra)
    ctx.logger.info(f"Using existing {kind} {found}; it will not be deleted.")
    return True


def release_external(ctx, kind: str, find: Callable[[str], str | None], *names: str) -> bool:
    """On delete: checks an external resource still exists and unassigns it."""
    if not use_external(ctx.node):
        return False
    found = require_external(ctx, kind, find)
    forget(ctx.instance, constants.AWS_RESOURCE_ID, constants.EXTERNAL_RESOURCE, *names)
    ctx.logger.info(f"Released existing {kind} {found} from this deployment; it is left in place.")
    return True


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


# --- tags -------------------------------------------------------------------


def validate_tags(ctx) -> dict[str, str]:
    tags = ctx.node.properties.get("tags") or {}
    if not isinstance(tags, dict):
        raise bad_input(ctx, "tags", f"is a {type(tags).__name__}", "give a dictionary of tag names to values")
    for key, value in tags.items():
        if not isinstance(key, str) or not key or key.lower().startswith("aws:"):
            raise bad_input(
                ctx, "tags", f"has an invalid tag name {key!r}", "use non-empty names not starting with 'aws:'"
            )
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise bad_input(ctx, "tags", f"has a non-scalar value for tag {key!r}", "use plain text values")
    return {key: "" if value is None else str(value) for key, value in tags.items()}


def creation_tags(ctx, resource_type: str, name: str | None = None) -> list[dict]:
    """``TagSpecifications`` for a new resource: user tags plus ownership tags."""
    tags = {}
    if name is not None:
        tags["Name"] = name
    tags.update(validate_tags(ctx))
    tags.update(_ownership(ctx))
    return [{"ResourceType": resource_type, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


def own_resource_filters(ctx) -> list[dict]:
    """Describe filters that find what this node instance created earlier."""
    return [{"Name": f"tag:{key}", "Values": [value]} for key, value in _ownership(ctx).items()]


def _ownership(ctx) -> dict[str, str]:
    """The tags that name the deployment and node instance that own a resource."""
    return {
        constants.TAG_DEPLOYMENT_ID: str(ctx.deployment.id or "local"),
        constants.TAG_NODE_INSTANCE_ID: str(ctx.instance.id),
    }


def find_own(ctx, client, operation: str, result_key: str, extra_filters: Iterable[dict] = ()) -> list[dict]:
    """What an earlier, interrupted run of this node instance created."""
    return call(ctx, client, operation, Filters=[*own_resource_filters(ctx), *extra_filters])[result_key]


def own_ids(ctx, client, operation: str, result_key: str, id_key: str) -> list[str]:
    """The recorded ``aws_resource_id``, or else the ids of resources tagged as
    this node instance's: an interrupted create may have made one it never recorded."""
    recorded = ctx.instance.runtime_properties.get(constants.AWS_RESOURCE_ID)
    if recorded:
        return [str(recorded)]
    return [item[id_key] for item in find_own(ctx, client, operation, result_key)]


def generated_name(ctx) -> str:
    """A readable name unique to this node instance of this deployment."""
    return f"{ctx.deployment.id}-{ctx.instance.id}"


# --- waiting ----------------------------------------------------------------


WAIT_PROPERTIES = (
    ("wait_timeout", constants.DEFAULT_WAIT_TIMEOUT),
    ("wait_interval", constants.DEFAULT_WAIT_INTERVAL),
    ("retry_after", constants.DEFAULT_RETRY_AFTER),
)


def wait_settings(node) -> tuple[float, float, int]:
    """(timeout, interval, retry_after) from a node's waiting properties,
    refusing anything that is not a number of seconds."""
    values = []
    for prop, default in WAIT_PROPERTIES:
        value = node.properties.get(prop, default)
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = -1.0
        if isinstance(value, bool) or seconds < 0 or (prop == "retry_after" and seconds < 1):
            raise NonRecoverableError(
                f"node '{node.id}': property '{prop}' is {value!r}. Fix: give a number of seconds (default {default})."
            )
        values.append(seconds)
    timeout, interval, retry_after = values
    return timeout, interval, int(retry_after)


def validate_wait_settings(ctx) -> None:
    """For validate(): refuses bad waiting properties before anything is created."""
    wait_settings(ctx.node)


def wait_for(
    ctx,
    node,
    what: str,
    poll: Callable[[], str],
    wanted: str | Iterable[str],
    failed: Iterable[str] = (),
) -> bool:
    """Polls ``poll()`` until it returns a wanted state.

    Polls in-process for at most the node's ``wait_timeout``, logging every
    poll. Then it asks the workflow engine to retry the operation later
    (``ctx.operation.retry``) and returns False: the caller returns at once.
    A state in ``failed`` is a ``NonRecoverableError``.
    """
    wanted = {wanted} if isinstance(wanted, str) else set(wanted)
    failed = set(failed)
    timeout, interval, retry_after = wait_settings(node)
    started = time.monotonic()
    while True:
        state = poll()
        elapsed = time.monotonic() - started
        ctx.logger.info(f"{what}: {state} (want {'/'.join(sorted(wanted))}, {elapsed:.0f}s of {timeout:.0f}s)")
        if state in wanted:
            return True
        if state in failed:
            raise NonRecoverableError(
                f"{node_label(ctx)}: {what} reached state '{state}' instead of {'/'.join(sorted(wanted))}. "
                "Fix: see the reason AWS gives for that state (EC2 console or describe), "
                "then run the heal workflow, or uninstall and install again."
            )
        if elapsed + interval > timeout:
            ctx.operation.retry(
                f"{what} is still {state} after {elapsed:.0f}s; checking again in {retry_after}s",
                retry_after=retry_after,
            )
            return False
        time.sleep(interval)
