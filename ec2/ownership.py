"""The exactly-once rule, written once and without ``ctx``: operations read
``ctx`` and pass plain values down.

A resource the plugin creates carries the ownership tags of its node instance
(``owner_tags``, ``creation_tags``). A create that may have run before
(``may_exist``) looks for what it left by those tags instead of making another
(``left_behind``, ``create_once``); copies a resent call made are swept
(``sweep_others``); delete and stop act on "the recorded id, else what the
ownership tags find" (``recorded_or_owned``, ``remove_each``). EC2 lists by tag
with a lag, so a recorded id is never dropped for not being listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from ec2 import aws, constants
from ec2.errors import AlreadyExists, PluginError

T = TypeVar("T")
Report = Callable[[str], None]


def owner_tags(deployment_id: Any, node_instance_id: Any) -> dict[str, str]:
    """The tags that name the deployment and node instance that own a resource."""
    return {
        constants.TAG_DEPLOYMENT_ID: str(deployment_id or "local"),
        constants.TAG_NODE_INSTANCE_ID: str(node_instance_id),
    }


def creation_tags(owner: Mapping[str, str], tags: Mapping[str, str], name: str | None = None) -> dict[str, str]:
    """A new resource's tags: its Name, the user's tags and the ownership tags."""
    return {**({"Name": name} if name is not None else {}), **tags, **owner}


def may_exist(runtime_properties: Mapping[str, Any]) -> bool:
    """Whether a node instance may own something in AWS: it recorded an id
    (perhaps a classic-era deployment) or began a create."""
    return bool(runtime_properties.get(constants.CREATE_STARTED) or runtime_properties.get(constants.AWS_RESOURCE_ID))


def recorded(runtime_properties: Mapping[str, Any], otherwise: str | None = None) -> str | None:
    """The recorded AWS id (``aws_resource_id``), else ``otherwise``."""
    return runtime_properties.get(constants.AWS_RESOURCE_ID) or otherwise or None


def require_recorded(runtime_properties: Mapping[str, Any], kind: str, fix: str = "run install first") -> str:
    """The recorded AWS id; fails naming the runtime property and ``fix`` when there is none."""
    found = recorded(runtime_properties)
    if not found:
        raise PluginError(f"no {kind} is recorded (runtime property aws_resource_id). Fix: {fix}")
    return found


def recorded_address(client: aws.Client, runtime_properties: Mapping[str, Any]) -> dict | None:
    """The recorded elastic IP, by its allocation id (else its public IP, all
    the classic plugin recorded); ``{}`` when it is gone, None when nothing is recorded."""
    allocation_id = runtime_properties.get(constants.ALLOCATION_ID)
    public_ip = runtime_properties.get(constants.AWS_RESOURCE_ID)
    if not allocation_id and not public_ip:
        return None
    return aws.find_address(client, allocation_id=allocation_id, public_ip=None if allocation_id else public_ip) or {}


def left_behind(runtime_properties: Mapping[str, Any], find_owned: Callable[[], list[T]]) -> list[T]:
    """What an earlier, interrupted create may have left: found by the
    ownership tags, and only asked for when a create may have begun."""
    return find_owned() if may_exist(runtime_properties) else []


def create_once(
    create: Callable[[], T],
    own_copies: Callable[[], list[Any]],
    settle: Callable[[list[Any]], T | None],
    fix: str,
    attempts: int = 3,
    fresh_for: float = 0.0,
    made_before: bool = False,
) -> T:
    """Calls ``create``. A Duplicate answer for a resource ``own_copies`` finds
    among this node instance's (a resent call whose first answer was lost) is
    handed to ``settle``, which adopts it (returns what ``create`` would) or
    removes it (returns None: ``create`` is called again, ``attempts`` calls
    in all). A Duplicate for a resource that is not ours fails with ``fix``.
    After a resent call, or when an earlier create of this node instance may
    have made it (``made_before``), a copy the listing by tag does not show
    yet is looked for again, as any fresh resource is, for ``fresh_for`` seconds."""
    for _attempt in range(attempts - 1):
        try:
            return create()
        except AlreadyExists as error:
            copies = _listed(own_copies, fresh_for if error.resent or made_before else 0.0)
            if not copies:
                raise AlreadyExists(f"{error} and is not this node instance's. Fix: {fix}") from None
        adopted = settle(copies)
        if adopted is not None:
            return adopted
    return create()


def _listed(own_copies: Callable[[], list[Any]], window: float) -> list[Any]:
    """``own_copies()``; while it finds none, asked again within ``window`` seconds."""
    return aws.until_found(own_copies, window, "a listing by ownership tags")


def sweep_others(
    list_owned: Callable[[], Sequence[Mapping[str, Any]]],
    id_key: str,
    kept: str,
    remove: Callable[[Any], object],
    fresh_for: float = 0.0,
) -> list | None:
    """Removes every owned copy but ``kept`` (its id under ``id_key``): the
    duplicates a resent call made. EC2 lists by tag with a lag, so the listing
    is asked again, for up to ``fresh_for`` seconds, until it shows ``kept``:
    a copy made by an earlier attempt is older, and shown by then. Returns the
    copies removed, or None when the listing never showed ``kept`` (nothing
    removed: the caller keeps the resend recorded, so that delete sweeps)."""
    owned = _listed(lambda: _showing(list_owned(), id_key, kept), fresh_for)
    if not owned:
        return None
    swept = []
    for other in owned:
        if other[id_key] != kept:
            remove(other)
            swept.append(other)
    return swept


def _showing(owned: Sequence[Mapping[str, Any]], id_key: str, kept: str) -> list[Mapping[str, Any]]:
    """The listing if it shows ``kept``, else none of it."""
    return list(owned) if any(item[id_key] == kept for item in owned) else []


def recorded_or_owned(
    recorded_id: str | None, owned_ids: Callable[[], Iterable[str]], also_owned: bool = False
) -> list[str]:
    """The recorded id; when there is none (an interrupted create), or
    ``also_owned`` (a resent call may have made a duplicate), the ids the
    ownership tags find too. A recorded id comes first, listed or not (EC2's
    listings lag behind a create); ``owned_ids`` is called only when needed."""
    ids = [recorded_id] if recorded_id else []
    if not recorded_id or also_owned:
        ids += [found for found in owned_ids() if found not in ids]
    return ids


def remove_each(ids: Iterable[str], remove: Callable[[str], bool], kind: str, report: Report) -> None:
    """Removes each resource (``remove`` says whether it was still there) and reports it."""
    for resource_id in ids:
        if remove(resource_id):
            report(f"Deleted {kind} {resource_id}.")
        else:
            report(f"{kind[:1].upper()}{kind[1:]} {resource_id} was already gone.")
