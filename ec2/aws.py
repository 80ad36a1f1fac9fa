"""The AWS access layer: one named, ctx-free function per use of the EC2 API.

Grouped by resource. Each group knows its own NotFound and Duplicate codes:
a ``find_*`` returns ``None`` (or an empty list) when AWS says NotFound, a
``delete_*`` returns whether something was deleted, and a condition that only
needs time (a dependency still being torn down) raises ``errors.NotReady``.
Any other botocore error propagates to the operation's error boundary.
Describes paginate where AWS paginates. Nothing here imports Cloudify.

EC2 is eventually consistent: right after a create, a call that names the new
resource may answer its NotFound code. The functions that may meet a resource
this plugin has just made take ``fresh_for``, the seconds left of its
propagation window, and retry those codes (``while_propagating``) until it
has passed; only then is a NotFound believed.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from ec2 import errors
from ec2.errors import AlreadyExists, NotReady, StillWaiting, UnexpectedState, error_code

T = TypeVar("T")
Client = Any  # a boto3 EC2 client
Owner = Mapping[str, str]  # the ownership tags of one node instance

KEY_PAIR_NOT_FOUND = frozenset({"InvalidKeyPair.NotFound"})
GROUP_NOT_FOUND = frozenset({"InvalidGroup.NotFound", "InvalidGroupId.NotFound"})
ADDRESS_NOT_FOUND = frozenset({"InvalidAllocationID.NotFound", "InvalidAddress.NotFound", "InvalidAddressID.NotFound"})
ASSOCIATION_NOT_FOUND = frozenset({"InvalidAssociationID.NotFound"})
INSTANCE_NOT_FOUND = frozenset({"InvalidInstanceID.NotFound"})
IMAGE_NOT_FOUND = frozenset({"InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"})
SUBNET_NOT_FOUND = frozenset({"InvalidSubnetID.NotFound"})
VPC_NOT_FOUND = frozenset({"InvalidVpcID.NotFound"})

DEPENDENCY_VIOLATION = "DependencyViolation"
ADDRESS_IN_USE = "InvalidIPAddress.InUse"
INCORRECT_INSTANCE_STATE = "IncorrectInstanceState"
# until_found's code for "the answer does not show it yet" (not one of EC2's).
NOT_LISTED_YET = "Listing.NotShownYet"

# Retrying while EC2 catches up: the first pauses (seconds), how many of them
# there are before the pause grows, by how much it grows, and its ceiling.
PROPAGATION_FIRST_PAUSE = 1.0
PROPAGATION_EVEN_PAUSES = 3
PROPAGATION_GROWTH = 1.5
PROPAGATION_LONGEST_PAUSE = 5.0

# Where ``while_propagating`` reports its pauses: the operation's logger, set
# by the error boundary for the operation's thread; by default nowhere.
progress: contextvars.ContextVar[Callable[[str], None]] = contextvars.ContextVar("progress", default=lambda _line: None)

# Within one call of ``while_propagating``: whether an attempt may have acted
# although its answer never came (no answer at all, or a 5xx); see ``note_attempt``.
_maybe_acted: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("maybe_acted", default=None)

# Instance states.
LIVE_STATES = ("pending", "running", "stopping", "stopped")
GONE_STATES = ("shutting-down", "terminated")
NOT_FOUND = "not-found"


def _answer_or_none(codes: Collection[str], call: Callable[[], Any]) -> Any:
    """The call's answer, or None when AWS answers one of ``codes``."""
    try:
        return call()
    except ClientError as error:
        if error_code(error) in codes:
            return None
        raise


def within(codes: Iterable[str], seconds: float) -> dict[str, float]:
    """A ``while_propagating`` window: these codes, for ``seconds`` from now."""
    return dict.fromkeys(codes, seconds)


def while_propagating(
    call: Callable[[], Any], windows: Mapping[str, float], listed: Callable[[], bool] | None = None
) -> Any:
    """The call's answer. While it fails with a code of ``windows`` (EC2 has
    not caught up with a create, a terminate or a disassociate yet), tries
    again after a pause of a second (three times), then growing, until that
    code's window (seconds from now) has passed; then the error propagates.
    Only differences between two ``time.monotonic()`` readings are used.

    ``listed``, for a delete: whether a listing (by filter) still shows the
    resource. A NotFound after an attempt whose answer was lost (which may
    have done the deed) is believed at once when the listing no longer shows
    it; after attempts that were only refused (throttled), it is not."""
    started = time.monotonic()
    for tries in itertools.count(1):
        maybe_acted: list[bool] = []
        noting = _maybe_acted.set(maybe_acted)
        try:
            return call()
        except ClientError as error:
            code = error_code(error)
            left = windows.get(code, 0.0) - (time.monotonic() - started)
            if left <= 0 or (listed is not None and maybe_acted and not listed()):
                raise
            growth = PROPAGATION_GROWTH ** max(0, tries - PROPAGATION_EVEN_PAUSES)
            pause = min(PROPAGATION_FIRST_PAUSE * growth, PROPAGATION_LONGEST_PAUSE)
            operation = getattr(error, "operation_name", "a call")
            seen = f"EC2 answered {code} to {operation}"
            if code == NOT_LISTED_YET:
                seen = f"{operation} does not show it yet"
            progress.get()(
                f"{seen}, which can mean EC2 has not caught up yet; "
                f"trying again in {min(pause, left):.1f}s (for up to {left:.0f}s more)"
            )
            time.sleep(min(pause, left))
        finally:
            _maybe_acted.reset(noting)
    raise AssertionError("unreachable")


def note_attempt(response: Any = None, caught_exception: Exception | None = None, **_: Any) -> None:
    """botocore's ``needs-retry`` hook, on every client (``ec2.connection``):
    notes, for ``while_propagating`` and ``_create``, an attempt that may have
    acted although its answer was lost (no answer, or a 5xx other than a
    throttle: EC2 answers ``RequestLimitExceeded`` with 503 and does nothing).
    Returns None: it decides nothing."""
    noted = _maybe_acted.get()
    status = getattr(response[0], "status_code", 0) if response else 0
    server_error = status >= 500 and errors.answer_code(response) not in errors.THROTTLING_CODES
    if noted is not None and (caught_exception is not None or server_error):
        noted.append(True)


def missing(code: str, operation: str, what: str) -> ClientError:
    """The NotFound error EC2 would give, for an answer that shows the resource is not there (yet)."""
    response: Any = {"Error": {"Code": code, "Message": f"{what} is not visible"}}
    return ClientError(response, operation)


def until_found(find: Callable[[], T], window: float, what: str, complete: Callable[[T], bool] = bool) -> T:
    """``find()``'s answer. While it is not ``complete`` (empty, by default:
    EC2 may not show a resource made a moment ago yet), asked again with
    ``while_propagating``'s pauses until ``window`` seconds have passed; then
    its last answer, complete or not. ``what`` names the listing in the log."""
    answers: list[T] = []

    def found() -> T:
        answers.append(find())
        if not complete(answers[-1]):
            raise missing(NOT_LISTED_YET, what, "what was asked for")
        return answers[-1]

    try:
        return while_propagating(found, within([NOT_LISTED_YET], window))
    except ClientError as error:
        if error_code(error) != NOT_LISTED_YET:
            raise
        return answers[-1]


def _listed(call: Callable[..., dict], result_key: str, filter_name: str, value: str) -> Callable[[], bool]:
    """Whether a describe filtered on one value (a listing, not a lookup by id) shows something."""
    return lambda: bool(_describe(call, result_key, Filters=[{"Name": filter_name, "Values": [value]}]))


def _create(duplicate_code: str, what: str, call: Callable[[], Any]) -> Any:
    """The create call's answer; ``AlreadyExists`` when AWS answers
    ``duplicate_code``, saying whether an earlier attempt of this call may have
    acted although its answer was lost (``note_attempt``)."""
    maybe_acted: list[bool] = []
    noting = _maybe_acted.set(maybe_acted)
    try:
        return call()
    except ClientError as error:
        if error_code(error) == duplicate_code:
            raise AlreadyExists(f"{what} already exists ({duplicate_code})", resent=bool(maybe_acted)) from None
        raise
    finally:
        _maybe_acted.reset(noting)


def _describe(call: Callable[..., dict], result_key: str, **params: Any) -> list[dict]:
    """Every item a describe (a client method) returns, following pagination where AWS paginates."""
    client, name = call.__self__, call.__name__  # type: ignore[attr-defined]
    if client.can_paginate(name):
        return [item for page in client.get_paginator(name).paginate(**params) for item in page[result_key]]
    return call(**params)[result_key]


def _found(
    codes: Collection[str], call: Callable[..., dict], result_key: str, fresh_for: float = 0.0, **params: Any
) -> list[dict]:
    """A describe where NotFound means "none"; asked again while ``fresh_for`` lasts."""
    windows = within(codes, fresh_for)
    answer = _answer_or_none(codes, lambda: while_propagating(lambda: _describe(call, result_key, **params), windows))
    return answer or []


def resent(response: Mapping[str, Any]) -> bool:
    """Whether botocore sent the call more than once: an earlier attempt may
    have acted although its answer was lost."""
    return bool(response.get("ResponseMetadata", {}).get("RetryAttempts"))


def tag_filters(owner: Owner) -> list[dict]:
    return [{"Name": f"tag:{key}", "Values": [value]} for key, value in owner.items()]


def tag_specifications(resource_type: str, tags: Mapping[str, str]) -> list[dict]:
    return [{"ResourceType": resource_type, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


def dry_run(
    call: Callable[..., Any], *, windows: Mapping[str, float] | None = None, **params: Any
) -> ClientError | None:
    """AWS's own check of a call, made with ``DryRun=True``: None when AWS
    answers ``DryRunOperation`` (the call would succeed), else its refusal
    (``UnauthorizedOperation``, a NotFound, a quota, ...). A refusal in
    ``windows`` is asked again while EC2 may still be catching up. Throttling
    and 5xx propagate, to be retried."""
    try:
        while_propagating(lambda: call(**params, DryRun=True), windows or {})
    except ClientError as error:
        if error_code(error) == "DryRunOperation":
            return None
        if errors.describe(error)[0]:
            raise
        return error
    raise errors.PluginError(
        "the EC2 endpoint carried out a call made with DryRun=True instead of only checking it; something may have "
        "been created. Fix: check the endpoint (endpoint_url in aws_config) and remove what it created"
    )


# --- key pairs ---------------------------------------------------------------


def find_key_pair(client: Client, name: str, fresh_for: float = 0.0) -> dict | None:
    """``fresh_for``: how long a key pair this deployment made may still be unknown to EC2."""
    found = _found(KEY_PAIR_NOT_FOUND, client.describe_key_pairs, "KeyPairs", fresh_for, KeyNames=[name])
    return found[0] if found else None


def find_owned_key_pairs(client: Client, owner: Owner) -> list[dict]:
    return _describe(client.describe_key_pairs, "KeyPairs", Filters=tag_filters(owner))


def create_key_pair(client: Client, name: str, tags: Mapping[str, str]) -> dict:
    """The new key pair, with its private ``KeyMaterial``."""
    return _create(
        "InvalidKeyPair.Duplicate",
        f"key pair '{name}'",
        lambda: client.create_key_pair(KeyName=name, TagSpecifications=tag_specifications("key-pair", tags)),
    )


def import_key_pair(client: Client, name: str, public_key: str, tags: Mapping[str, str]) -> dict:
    return _create(
        "InvalidKeyPair.Duplicate",
        f"key pair '{name}'",
        lambda: client.import_key_pair(
            KeyName=name, PublicKeyMaterial=public_key, TagSpecifications=tag_specifications("key-pair", tags)
        ),
    )


def delete_key_pair(client: Client, name: str, fresh_for: float = 0.0) -> bool:
    """Whether a key pair was deleted. EC2 answers a delete of a key it does not
    know with success, but names the ``KeyPairId`` only of a key it deleted:
    while the key is fresh, an answer without one means "not visible yet"."""

    def delete() -> dict:
        answer = client.delete_key_pair(KeyName=name)
        if fresh_for and not answer.get("KeyPairId"):
            raise missing("InvalidKeyPair.NotFound", "DeleteKeyPair", f"key pair {name}")
        return answer

    listed = _listed(client.describe_key_pairs, "KeyPairs", "key-name", name)
    windows = within(KEY_PAIR_NOT_FOUND, fresh_for)
    return _answer_or_none(KEY_PAIR_NOT_FOUND, lambda: while_propagating(delete, windows, listed)) is not None


def dry_run_create_key_pair(client: Client, name: str, tags: Mapping[str, str]) -> ClientError | None:
    return dry_run(client.create_key_pair, KeyName=name, TagSpecifications=tag_specifications("key-pair", tags))


def dry_run_import_key_pair(client: Client, name: str, public_key: str, tags: Mapping[str, str]) -> ClientError | None:
    return dry_run(
        client.import_key_pair,
        KeyName=name,
        PublicKeyMaterial=public_key,
        TagSpecifications=tag_specifications("key-pair", tags),
    )


# --- security groups -----------------------------------------------------------


def find_security_group_by_id(client: Client, group_id: str, fresh_for: float = 0.0) -> dict | None:
    found = _found(GROUP_NOT_FOUND, client.describe_security_groups, "SecurityGroups", fresh_for, GroupIds=[group_id])
    return found[0] if found else None


def find_security_groups_by_name(client: Client, name: str, vpc_id: str | None = None) -> list[dict]:
    """Groups with this name, in one VPC or in all of them."""
    filters = [{"Name": "group-name", "Values": [name]}]
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    return _describe(client.describe_security_groups, "SecurityGroups", Filters=filters)


def find_security_groups_by_names(client: Client, names: Collection[str], vpc_id: str | None = None) -> list[dict]:
    """Groups with any of these names, in one VPC or in all of them: one describe."""
    filters = [{"Name": "group-name", "Values": sorted(set(names))}]
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    return _describe(client.describe_security_groups, "SecurityGroups", Filters=filters)


def find_owned_security_groups(client: Client, owner: Owner) -> list[dict]:
    return _describe(client.describe_security_groups, "SecurityGroups", Filters=tag_filters(owner))


def default_vpc_id(client: Client) -> str | None:
    found = _describe(client.describe_vpcs, "Vpcs", Filters=[{"Name": "is-default", "Values": ["true"]}])
    return found[0]["VpcId"] if found else None


def vpc_exists(client: Client, vpc_id: str) -> bool:
    return bool(_found(VPC_NOT_FOUND, client.describe_vpcs, "Vpcs", VpcIds=[vpc_id]))


def _security_group_request(name: str, description: str, vpc_id: str | None, tags: Mapping[str, str]) -> dict:
    """CreateSecurityGroup's parameters. Without ``vpc_id`` AWS uses the default VPC."""
    request: dict[str, Any] = {
        "GroupName": name,
        "Description": description,
        "TagSpecifications": tag_specifications("security-group", tags),
    }
    if vpc_id:
        request["VpcId"] = vpc_id
    return request


def create_security_group(
    client: Client, name: str, description: str, vpc_id: str | None, tags: Mapping[str, str]
) -> str:
    """The new group's id."""
    request = _security_group_request(name, description, vpc_id, tags)
    return _create(
        "InvalidGroup.Duplicate", f"security group '{name}'", lambda: client.create_security_group(**request)
    )["GroupId"]


def authorize(
    client: Client, group_id: str, permissions: list[dict], egress: bool = False, fresh_for: float = 0.0
) -> None:
    """Adds rules to a group (or to groups they name as sources) made less than
    ``fresh_for`` seconds ago. A rule that is already there counts as added (a
    resent call after a lost answer); the others are then added one by one."""
    method = client.authorize_security_group_egress if egress else client.authorize_security_group_ingress
    windows = within(GROUP_NOT_FOUND, fresh_for)

    def call(**params: Any) -> Any:
        return while_propagating(lambda: method(**params), windows)

    try:
        call(GroupId=group_id, IpPermissions=permissions)
    except ClientError as error:
        if error_code(error) != "InvalidPermission.Duplicate":
            raise
        for permission in permissions if len(permissions) > 1 else []:
            try:
                call(GroupId=group_id, IpPermissions=[permission])
            except ClientError as one_error:
                if error_code(one_error) != "InvalidPermission.Duplicate":
                    raise


def delete_security_group(client: Client, group_id: str, fresh_for: float = 0.0, in_use_for: float = 0.0) -> bool:
    """Deletes a group. ``DependencyViolation`` (an instance that used it is still
    being torn down) is asked again for ``in_use_for`` seconds, then ``NotReady``."""
    windows = {**within(GROUP_NOT_FOUND, fresh_for), DEPENDENCY_VIOLATION: in_use_for}
    try:
        listed = _listed(client.describe_security_groups, "SecurityGroups", "group-id", group_id)
        deleted = _answer_or_none(
            GROUP_NOT_FOUND,
            lambda: while_propagating(lambda: client.delete_security_group(GroupId=group_id), windows, listed),
        )
        return deleted is not None
    except ClientError as error:
        if error_code(error) == DEPENDENCY_VIOLATION:
            raise NotReady(f"security group {group_id} is still in use (DependencyViolation); trying again") from None
        raise


def dry_run_create_security_group(
    client: Client, name: str, description: str, vpc_id: str | None, tags: Mapping[str, str]
) -> ClientError | None:
    return dry_run(client.create_security_group, **_security_group_request(name, description, vpc_id, tags))


def revoke(client: Client, group_id: str, permissions: list[dict], egress: bool = False) -> None:
    """Removes rules from a group; rules already gone count as removed."""
    call = client.revoke_security_group_egress if egress else client.revoke_security_group_ingress
    _answer_or_none({"InvalidPermission.NotFound"}, lambda: call(GroupId=group_id, IpPermissions=permissions))


# --- elastic IPs -------------------------------------------------------------------


def find_address(client: Client, allocation_id: str | None = None, public_ip: str | None = None) -> dict | None:
    lookup = {"AllocationIds": [allocation_id]} if allocation_id else {"PublicIps": [public_ip]}
    found = _found(ADDRESS_NOT_FOUND, client.describe_addresses, "Addresses", **lookup)
    return found[0] if found else None


def find_owned_addresses(client: Client, owner: Owner) -> list[dict]:
    return _describe(client.describe_addresses, "Addresses", Filters=tag_filters(owner))


def allocate_address(client: Client, tags: Mapping[str, str]) -> dict:
    """A new VPC address: ``PublicIp`` and ``AllocationId``."""
    return client.allocate_address(Domain="vpc", TagSpecifications=tag_specifications("elastic-ip", tags))


def associate_address(client: Client, allocation_id: str, instance_id: str, fresh_for: float = 0.0) -> str:
    """The association id; ``NotReady`` while the instance is not running yet.
    ``fresh_for``: how long the address or the instance may still be unknown to EC2."""
    windows = within(ADDRESS_NOT_FOUND | INSTANCE_NOT_FOUND, fresh_for)
    try:
        return while_propagating(
            lambda: client.associate_address(AllocationId=allocation_id, InstanceId=instance_id), windows
        )["AssociationId"]
    except ClientError as error:
        if error_code(error) == INCORRECT_INSTANCE_STATE:
            raise NotReady(f"instance {instance_id} is not running yet; associating later") from None
        raise


def disassociate_address(client: Client, association_id: str, fresh_for: float = 0.0) -> bool:
    """Whether an association was undone; one made less than ``fresh_for`` seconds ago is not taken for gone."""
    codes = ASSOCIATION_NOT_FOUND | ADDRESS_NOT_FOUND

    def undo() -> Any:
        return while_propagating(
            lambda: client.disassociate_address(AssociationId=association_id),
            within(codes, fresh_for),
            _listed(client.describe_addresses, "Addresses", "association-id", association_id),
        )

    return _answer_or_none(codes, undo) is not None


def release_address(client: Client, allocation_id: str, fresh_for: float = 0.0, in_use_for: float = 0.0) -> bool:
    """Releases an address (allocated less than ``fresh_for`` seconds ago: not
    taken for gone). ``InvalidIPAddress.InUse`` (still associated, or just
    disassociated) is asked again for ``in_use_for`` seconds, then ``NotReady``."""
    windows = {**within(ADDRESS_NOT_FOUND, fresh_for), ADDRESS_IN_USE: in_use_for}
    try:
        listed = _listed(client.describe_addresses, "Addresses", "allocation-id", allocation_id)
        released = _answer_or_none(
            ADDRESS_NOT_FOUND,
            lambda: while_propagating(lambda: client.release_address(AllocationId=allocation_id), windows, listed),
        )
        return released is not None
    except ClientError as error:
        if error_code(error) == ADDRESS_IN_USE:
            raise NotReady(
                f"elastic IP {allocation_id} is still associated (InvalidIPAddress.InUse); "
                "disassociate it to let it be released"
            ) from None
        raise


def dry_run_allocate_address(client: Client, tags: Mapping[str, str]) -> ClientError | None:
    return dry_run(client.allocate_address, Domain="vpc", TagSpecifications=tag_specifications("elastic-ip", tags))


# --- instances ---------------------------------------------------------------


def state_of(instance: Mapping[str, Any] | None) -> str:
    return instance["State"]["Name"] if instance else NOT_FOUND


def _instances(reservations: Iterable[dict]) -> list[dict]:
    """Instances with their reservation id, oldest first."""
    found = [
        {**instance, "ReservationId": reservation.get("ReservationId", "")}
        for reservation in reservations
        for instance in reservation["Instances"]
    ]
    return sorted(found, key=lambda instance: str(instance.get("LaunchTime", "")))


def find_instances(client: Client, instance_ids: list[str]) -> dict[str, dict]:
    """The instances that exist among ``instance_ids``, by id (terminated ones too)."""
    try:
        reservations = _describe(client.describe_instances, "Reservations", InstanceIds=instance_ids)
    except ClientError as error:
        if error_code(error) not in INSTANCE_NOT_FOUND:
            raise
        if len(instance_ids) == 1:
            return {}
        # One unknown id fails the whole call: ask for each one alone.
        return {key: value for one in instance_ids for key, value in find_instances(client, [one]).items()}
    return {instance["InstanceId"]: instance for instance in _instances(reservations)}


def find_instance(client: Client, instance_id: str) -> dict | None:
    return find_instances(client, [instance_id]).get(instance_id)


def find_owned_instances(client: Client, owner: Owner, states: Iterable[str] = LIVE_STATES) -> list[dict]:
    filters = [*tag_filters(owner), {"Name": "instance-state-name", "Values": list(states)}]
    return _instances(_describe(client.describe_instances, "Reservations", Filters=filters))


# What RunInstances answers when a key pair or group it names is not known (yet).
RUN_INSTANCES_NOT_FOUND = KEY_PAIR_NOT_FOUND | GROUP_NOT_FOUND


def run_instance(client: Client, request: dict, fresh_for: float = 0.0) -> dict:
    """The RunInstances answer: ``Instances`` (one) and ``ReservationId``.
    ``fresh_for``: how long a key pair or group it names may still be unknown to EC2."""
    return while_propagating(lambda: client.run_instances(**request), within(RUN_INSTANCES_NOT_FOUND, fresh_for))


def _change_state(call: Callable[..., dict], result_key: str, instance_id: str, fresh_for: float) -> str | None:
    """The state an instance reports right after a start, stop or terminate call;
    None when it does not exist (and was not made less than ``fresh_for``
    seconds ago). ``NotReady`` while it is between states."""
    try:
        response = _answer_or_none(
            INSTANCE_NOT_FOUND,
            lambda: while_propagating(lambda: call(InstanceIds=[instance_id]), within(INSTANCE_NOT_FOUND, fresh_for)),
        )
    except ClientError as error:
        if error_code(error) == INCORRECT_INSTANCE_STATE:
            raise NotReady(f"instance {instance_id} is between states (IncorrectInstanceState); trying again") from None
        raise
    if response is None:
        return None
    changes = response.get(result_key) or [{}]
    return changes[0].get("CurrentState", {}).get("Name")


def start_instance(client: Client, instance_id: str, fresh_for: float = 0.0) -> str | None:
    return _change_state(client.start_instances, "StartingInstances", instance_id, fresh_for)


def stop_instance(client: Client, instance_id: str, fresh_for: float = 0.0) -> str | None:
    return _change_state(client.stop_instances, "StoppingInstances", instance_id, fresh_for)


def terminate_instance(client: Client, instance_id: str, fresh_for: float = 0.0) -> str | None:
    return _change_state(client.terminate_instances, "TerminatingInstances", instance_id, fresh_for)


class _StatePoller:
    """Polls the instances that the threads of this process wait for, all
    together: one DescribeInstances per round for every id then waiting, so
    that a round costs one call however many instances wait."""

    def __init__(self, client: Client) -> None:
        self._client = weakref.ref(client)  # the poller must not keep its client alive
        self.changed = threading.Condition()
        self.waiting: set[str] = set()  # ids for the next round
        self.started = self.finished = 0  # round numbers
        self.running = False
        self.answers: dict[str, Any] = {}  # id -> instance, None, or the error of its last round

    def find(self, instance_id: str) -> dict | None:
        """The instance as a round started after this call sees it."""
        with self.changed:
            self.waiting.add(instance_id)
            needed = self.started + 1
            while self.finished < needed:
                if not self.running:
                    self.running, self.started = True, self.started + 1
                    ids, self.waiting = sorted(self.waiting), set()
                    break
                self.changed.wait()
            else:
                return self._answer(instance_id)
        answers: dict[str, Any]
        try:
            found = find_instances(self._client(), ids)
            answers = {one: found.get(one) for one in ids}
        except Exception as error:  # every waiter of this round sees it
            answers = dict.fromkeys(ids, error)
        with self.changed:
            self.answers.update(answers)
            self.finished, self.running = self.started, False
            self.changed.notify_all()
            return self._answer(instance_id)

    def _answer(self, instance_id: str) -> dict | None:
        answer = self.answers.get(instance_id)
        if isinstance(answer, Exception):
            raise answer
        return answer


# One poller per client, gone with its client.
_pollers: weakref.WeakKeyDictionary[Client, _StatePoller] = weakref.WeakKeyDictionary()
_pollers_lock = threading.Lock()


def _poller(client: Client) -> _StatePoller:
    with _pollers_lock:
        poller = _pollers.get(client)
        if poller is None:
            poller = _pollers[client] = _StatePoller(client)
        return poller


def poll_instance(client: Client, instance_id: str) -> dict | None:
    """Like ``find_instance``, but one DescribeInstances serves every thread
    of this process that polls an instance at the same moment."""
    return _poller(client).find(instance_id)


def poll_visible_instance(client: Client, instance_id: str, fresh_for: float = 0.0) -> dict | None:
    """Like ``poll_instance``; an instance launched less than ``fresh_for``
    seconds ago that EC2 does not show yet is asked for again until it shows."""

    def poll() -> dict:
        instance = poll_instance(client, instance_id)
        if instance is None:
            raise missing("InvalidInstanceID.NotFound", "DescribeInstances", f"instance {instance_id}")
        return instance

    return _answer_or_none(INSTANCE_NOT_FOUND, lambda: while_propagating(poll, within(INSTANCE_NOT_FOUND, fresh_for)))


def wait_for_instance(
    client: Client,
    instance_id: str,
    target: Collection[str],
    pending: Collection[str],
    timeout: float,
    interval: float,
    report: Callable[[str], None] = lambda _line: None,
    known_state: str | None = None,
) -> dict:
    """Polls until the instance reaches a ``target`` state and returns it
    (``{}`` when the target is ``not-found``). A state in ``pending`` goes on
    waiting, up to ``timeout`` seconds, then ``StillWaiting``; any other state
    is ``UnexpectedState``. ``known_state``, when the caller has just seen one
    (a describe, or the CurrentState of a start/stop/terminate answer), saves
    the first poll. Instances waited for at the same time share their polls."""
    started = time.monotonic()
    wanted = "/".join(sorted(target))
    instance: dict | None = None
    state = known_state
    while True:
        if state is None:
            instance = poll_instance(client, instance_id)
            state = state_of(instance)
        elapsed = time.monotonic() - started
        report(f"instance {instance_id}: {state} (want {wanted}, {elapsed:.0f}s of {timeout:.0f}s)")
        if state in target:
            return instance or {}
        if state not in pending and state not in target:
            raise UnexpectedState(
                f"instance {instance_id} reached state '{state}' while waiting for {wanted}. Fix: see the reason AWS "
                "gives for that state (EC2 console or describe), then run the heal workflow, or uninstall and "
                "install again"
            )
        if elapsed + interval > timeout:
            raise StillWaiting(f"instance {instance_id} is still {state} after {elapsed:.0f}s; checking again later")
        time.sleep(interval)
        state = None


# The named waits: the states each one wants, and the states it waits through.
# After StartInstances a describe may still say "stopped" for a moment.
INSTANCE_WAITS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "running": (("running",), ("pending",)),
    "started": (("running",), ("pending", "stopped")),
    "stopped": (("stopped",), ("pending", "running", "stopping")),
    "terminated": (("terminated", NOT_FOUND), LIVE_STATES + GONE_STATES),
}
Report = Callable[[str], None]


def wait_running(client: Client, instance_id: str, timeout: float, interval: float, report: Report, known=None) -> dict:
    """A launched instance: waits through pending."""
    return wait_for_instance(client, instance_id, *INSTANCE_WAITS["running"], timeout, interval, report, known)


def wait_started(client: Client, instance_id: str, timeout: float, interval: float, report: Report, known=None) -> dict:
    """An instance just asked to start: waits through pending, and stopped while EC2 catches up."""
    return wait_for_instance(client, instance_id, *INSTANCE_WAITS["started"], timeout, interval, report, known)


def wait_stopped(client: Client, instance_id: str, timeout: float, interval: float, report: Report, known=None) -> dict:
    """An instance asked to stop (or already stopping)."""
    return wait_for_instance(client, instance_id, *INSTANCE_WAITS["stopped"], timeout, interval, report, known)


def wait_terminated(
    client: Client, instance_id: str, timeout: float, interval: float, report: Report, known=None
) -> dict:
    """An instance asked to terminate: done when terminated or no longer known."""
    return wait_for_instance(client, instance_id, *INSTANCE_WAITS["terminated"], timeout, interval, report, known)


def dry_run_run_instances(client: Client, request: Mapping[str, Any], fresh_for: float = 0.0) -> ClientError | None:
    """The RunInstances request's dry run, without its ClientToken (a dry run
    creates nothing to deduplicate). ``fresh_for``: how long a key pair or
    group it names may still be unknown to EC2."""
    request = {key: value for key, value in request.items() if key != "ClientToken"}
    return dry_run(client.run_instances, windows=within(RUN_INSTANCES_NOT_FOUND, fresh_for), **request)


def modify_instance_type(client: Client, instance_id: str, instance_type: str) -> None:
    """Changes a stopped instance's type; ``NotReady`` while it is not stopped yet."""
    try:
        client.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": instance_type})
    except ClientError as error:
        if error_code(error) == "IncorrectInstanceState":
            raise NotReady(f"instance {instance_id} is not stopped yet; changing its type later") from None
        raise


# --- images, subnets ------------------------------------------------------------


class RecentAnswers:
    """Answers of one kind that held a moment ago in this process, kept per
    client (one client is one region, endpoint and set of credentials: see
    ``ec2.connection``) and key, to share them between the operations this
    process runs. Only answers ``keep`` accepts are kept (a refusal is asked
    again), for at most ``seconds`` (a difference of two ``time.monotonic()``
    readings), at most ``size`` per client, the oldest forgotten first.
    Threads asking for one key at the same moment ask AWS once: the others
    wait for that answer. Nothing depends on it being kept: a new process
    simply asks again."""

    def __init__(self, seconds: float, size: int) -> None:
        self.seconds, self.size = seconds, size
        self._lock = threading.Lock()
        self._kept: weakref.WeakKeyDictionary[Client, OrderedDict[Hashable, tuple[float, Any]]] = (
            weakref.WeakKeyDictionary()
        )
        self._asking: dict[tuple[int, Hashable], list] = {}  # (client, key) -> [lock, threads using it]

    def answer(self, client: Client, key: Hashable, ask: Callable[[], Any], keep: Callable[[Any], bool]) -> Any:
        """The kept answer for ``key``, if recent; else ``ask()``'s, kept if ``keep`` accepts it."""
        asking_key = (id(client), key)  # only while the caller holds the client
        with self._lock:
            asking = self._asking.setdefault(asking_key, [threading.Lock(), 0])
            asking[1] += 1
        try:
            with asking[0]:
                found, answer = self.recent(client, key)
                if found:
                    return answer
                answer = ask()
                if keep(answer):
                    with self._lock:
                        kept = self._kept.setdefault(client, OrderedDict())
                        kept[key] = (time.monotonic(), answer)
                        kept.move_to_end(key)
                        while len(kept) > self.size:
                            kept.popitem(last=False)
                return answer
        finally:
            with self._lock:
                asking[1] -= 1
                if not asking[1]:
                    del self._asking[asking_key]

    def recent(self, client: Client, key: Hashable) -> tuple[bool, Any]:
        """(True, the answer) when one for ``key`` was kept less than ``seconds`` ago; else (False, None)."""
        with self._lock:
            answers = self._kept.get(client)
            kept = answers.get(key) if answers is not None else None
        if kept is not None and time.monotonic() - kept[0] < self.seconds:
            return True, kept[1]
        return False, None

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


# Images found available, per client and image id.
IMAGE_CACHE_SECONDS = 300
IMAGE_CACHE_SIZE = 64
_images = RecentAnswers(IMAGE_CACHE_SECONDS, IMAGE_CACHE_SIZE)


def find_image(client: Client, image_id: str) -> dict | None:
    """An image. One found available is kept for a few minutes per client
    (region, endpoint and credentials): the instances of one install that share
    an AMI share one DescribeImages. An image not found, or not available, is
    described again next time; one never described is described, however long
    the machine has been up."""

    def describe() -> dict | None:
        found = _found(IMAGE_NOT_FOUND, client.describe_images, "Images", ImageIds=[image_id])
        return found[0] if found else None

    return _images.answer(client, image_id, describe, lambda image: bool(image) and _available(image))


def _available(image: Mapping[str, Any]) -> bool:
    return image.get("State", "available") == "available"


def subnet_exists(client: Client, subnet_id: str) -> bool:
    return bool(_found(SUBNET_NOT_FOUND, client.describe_subnets, "Subnets", SubnetIds=[subnet_id]))


def subnet_vpc_id(client: Client, subnet_id: str) -> str | None:
    """The VPC a subnet belongs to; None when there is no such subnet."""
    found = _found(SUBNET_NOT_FOUND, client.describe_subnets, "Subnets", SubnetIds=[subnet_id])
    return found[0]["VpcId"] if found else None


# --- tags ------------------------------------------------------------------------


def tags_of(resource: Mapping[str, Any]) -> dict[str, str]:
    """A described resource's tags as a dictionary."""
    return {tag["Key"]: tag.get("Value", "") for tag in resource.get("Tags") or []}


def create_tags(client: Client, resource_id: str, tags: Mapping[str, str]) -> None:
    """Adds or overwrites tags on any EC2 resource (key pairs by their ``key-`` id)."""
    if tags:
        client.create_tags(Resources=[resource_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])


def delete_tags(client: Client, resource_id: str, keys: Iterable[str]) -> None:
    """Removes tags, whatever their values."""
    keys = list(keys)
    if keys:
        client.delete_tags(Resources=[resource_id], Tags=[{"Key": key} for key in keys])
