"""An HTTP proxy in front of the EC2 emulator that counts calls and misbehaves on purpose.

Start it with the emulator's URL and give its ``url`` to boto3 as
``endpoint_url``. Each request's form body is parsed (EC2's query API:
``Action=...``), and then, each feature switched on in :class:`ProxyConfig`:

1. **counting**: every call is recorded by Action, in order; dry runs apart.
2. **refusals**: a given Action (optionally only its dry runs) is answered
   with a given error, such as 403 ``UnauthorizedOperation``.
3. **token bucket**: EC2's documented default request limits per action
   class; an empty bucket answers ``RequestLimitExceeded``.
4. **request faults** (before forwarding): throttling, unavailable, internal error.
5. **dropped connections** (before forwarding): closed without an answer.
6. **ClientToken deduplication** for RunInstances, which moto ignores: the
   same token gets the first call's answer, without forwarding.
7. **forwarding**, then optionally **lost responses** (EC2 acted, the answer
   is dropped or replaced by a 500) or **delays** past the client's read
   timeout (EC2 acted, the answer comes too late).
8. **latency mode**: instances report ``pending``, ``stopping`` or
   ``shutting-down`` for T seconds after Run/Start, Stop and Terminate.
9. **eventual-consistency mode**: for W seconds after a create's answer, a
   request that names the new resource (key pair, group, instance, address,
   association) is answered with that resource's NotFound code, dry runs
   included; DeleteKeyPair is answered as EC2 answers it for a key it does
   not know (success, without a ``keyPairId``). For W seconds after a
   TerminateInstances, DeleteSecurityGroup answers ``DependencyViolation``.
   Only requests that name a resource are affected: listings by filter see
   new resources at once.
10. **elastic-IP limit**: once that many addresses allocated through the
    proxy are held, AllocateAddress answers ``AddressLimitExceeded``;
    DescribeAccountAttributes answers that limit as ``vpc-max-elastic-ips``.

Random choices are seeded: one ``random.Random`` per Action, seeded from the
config's seed and the Action's name, so a run is repeatable whatever order
concurrent calls of different Actions arrive in. Every wait is bounded and
:meth:`Ec2Proxy.stop` joins every thread.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MUTATING_PREFIXES = (
    "Create",
    "Delete",
    "Run",
    "Terminate",
    "Start",
    "Stop",
    "Authorize",
    "Revoke",
    "Allocate",
    "Release",
    "Associate",
    "Disassociate",
    "Import",
    "Modify",
)
NON_MUTATING_PREFIXES = ("Describe", "List", "Search", "Get")

# EC2's documented default API request limits: (bucket maximum capacity,
# refill rate in tokens per second), from "Request throttling for the Amazon
# EC2 API" in the EC2 Developer Guide. Each API has its own bucket of its
# class's size ("each API is evaluated individually").
CLASS_LIMITS: dict[str, tuple[float, float]] = {
    "non-mutating": (100, 20),
    "unfiltered non-mutating": (50, 10),
    "mutating": (50, 5),
    "resource-intensive": (50, 5),
}
# Non-mutating actions that draw from the smaller bucket when called without
# a filter and without pagination (MaxResults / NextToken).
UNFILTERED_ACTIONS = frozenset(
    {
        "DescribeInstances",
        "DescribeInstanceStatus",
        "DescribeNetworkInterfaces",
        "DescribeSecurityGroups",
        "DescribeSnapshots",
        "DescribeSpotInstanceRequests",
        "DescribeVolumes",
    }
)
RESOURCE_INTENSIVE_ACTIONS = frozenset(
    {
        "AcceptVpcPeeringConnection",
        "AuthorizeSecurityGroupIngress",
        "CancelSpotInstanceRequests",
        "CreateKeyPair",
        "CreateVpcPeeringConnection",
        "DeleteVpcPeeringConnection",
        "RejectVpcPeeringConnection",
        "RevokeSecurityGroupIngress",
        "RequestSpotInstances",
    }
)
# "Uncategorized" actions with their own sizes (the documented ones near this plugin).
ACTION_LIMITS: dict[str, tuple[float, float]] = {
    "RunInstances": (5, 2),
    "StartInstances": (5, 2),
    "TerminateInstances": (100, 5),
    "CreateTags": (100, 10),
    "DeleteTags": (100, 10),
    "CreateNetworkInterface": (100, 5),
    "DeleteNetworkInterface": (100, 5),
    "CreateVolume": (100, 5),
    "DeleteVolume": (100, 5),
    "AssociateIamInstanceProfile": (100, 5),
    "ModifyInstanceMetadataOptions": (100, 5),
}
# Resource buckets: one token per instance the call acts on, beside the request bucket.
RESOURCE_LIMITS: dict[str, tuple[float, float]] = {
    "RunInstances": (1000, 2),
    "TerminateInstances": (1000, 20),
    "StartInstances": (1000, 2),
    "StopInstances": (1000, 20),
}

# Request faults: error code -> HTTP status.
FAULT_STATUS = {"RequestLimitExceeded": 400, "Unavailable": 503, "ServiceUnavailable": 503, "InternalError": 500}
# Instance state names and codes, and the transitional state each action starts.
STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}
TRANSITIONS = {
    "RunInstances": "pending",
    "StartInstances": "pending",
    "StopInstances": "stopping",
    "TerminateInstances": "shutting-down",
}
LATENCY_ACTIONS = frozenset(TRANSITIONS) | {"DescribeInstances"}
# Eventual consistency: what a create's answer (or request) names, and the
# NotFound code EC2 gives for that resource while it is not visible yet.
CREATED_NAMES: dict[str, dict[str, str]] = {
    "CreateKeyPair": {"KeyName": "InvalidKeyPair.NotFound", "keyPairId": "InvalidKeyPair.NotFound"},
    "ImportKeyPair": {"KeyName": "InvalidKeyPair.NotFound", "keyPairId": "InvalidKeyPair.NotFound"},
    "CreateSecurityGroup": {"GroupName": "InvalidGroup.NotFound", "groupId": "InvalidGroup.NotFound"},
    "RunInstances": {"instanceId": "InvalidInstanceID.NotFound"},
    "AllocateAddress": {"allocationId": "InvalidAllocationID.NotFound", "publicIp": "InvalidAddress.NotFound"},
    "AssociateAddress": {"associationId": "InvalidAssociationID.NotFound"},
}
# The fields of a described item that name it (a lagging listing leaves out the unseen ones).
LISTED_IDS = frozenset({"keyName", "keyPairId", "groupId", "instanceId", "allocationId", "publicIp"})
# Request parameters that name a resource (the last part of a key such as
# "InstanceId.1" or "IpPermissions.1.Groups.1.GroupId").
NAMING_PARAMETERS = frozenset(
    {
        "KeyName",
        "KeyPairId",
        "GroupId",
        "GroupName",
        "SecurityGroupId",
        "SecurityGroup",
        "InstanceId",
        "AllocationId",
        "AssociationId",
        "PublicIp",
        "ResourceId",
    }
)
FORGETFUL_DELETE_KEY_PAIR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<DeleteKeyPairResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    b"<requestId>00000000-0000-4000-8000-000000000000</requestId><return>true</return></DeleteKeyPairResponse>"
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade", "te"}


def is_mutating(action: str) -> bool:
    return action.startswith(MUTATING_PREFIXES)


def action_class(action: str, params: dict[str, str]) -> str:
    """The documented throttling class of a call."""
    if action.startswith(NON_MUTATING_PREFIXES):
        filtered = any(key.startswith("Filter.") or key in ("MaxResults", "NextToken") for key in params)
        return "unfiltered non-mutating" if action in UNFILTERED_ACTIONS and not filtered else "non-mutating"
    return "resource-intensive" if action in RESOURCE_INTENSIVE_ACTIONS else "mutating"


@dataclass(frozen=True)
class Refusal:
    """Answer ``action`` (only its dry runs if ``dry_run_only``, only the calls
    that act if ``real_only``) with this error, without forwarding."""

    action: str
    code: str = "UnauthorizedOperation"
    status: int = 403
    message: str = "You are not authorized to perform this operation."
    dry_run_only: bool = False
    real_only: bool = False

    def refuses(self, action: str, dry_run: bool) -> bool:
        return action == self.action and not (self.dry_run_only and not dry_run) and not (self.real_only and dry_run)


def _local(tag: str) -> str:
    """An XML tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def _lists_by_filter(params: dict) -> bool:
    """Whether a request is a describe filtered (by a tag, a group name, ...): a listing, not a lookup by id."""
    return any(re.fullmatch(r"Filter\.\d+\.Name", key) for key in params)


@dataclass(frozen=True)
class ProxyConfig:
    """What the proxy does; everything off (plain counting) by default."""

    seed: int = 0
    count: bool = True
    # Answered before forwarding, at fault_rate, with one of fault_kinds (keys of FAULT_STATUS).
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = tuple(FAULT_STATUS)
    # Connection closed without an answer, before forwarding.
    drop_rate: float = 0.0
    # Forwarded (EC2 acts), then the answer is lost: "drop" closes the connection, "error" answers 500.
    lost_rate: float = 0.0
    lost_kinds: tuple[str, ...] = ("drop", "error")
    # Forwarded (EC2 acts), then the answer is held for delay_seconds (set it past the client's read timeout).
    delay_rate: float = 0.0
    delay_seconds: float = 0.0
    # Faults, drops, losses and delays only hit these actions (None: every action).
    fault_actions: frozenset[str] | None = None
    # EC2's default request limits; limits overrides a class ("mutating") or an action ("RunInstances").
    token_bucket: bool = False
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Repeated RunInstances ClientTokens get the first answer.
    client_token_dedup: bool = False
    # Seconds instances stay pending / stopping / shutting-down (0: off).
    latency: float = 0.0
    # Seconds a new resource stays unknown to requests that name it, and
    # DeleteSecurityGroup answers DependencyViolation after a terminate (0: off).
    consistency_window: float = 0.0
    # With consistency_window: a describe filtered (by a tag, a group name, ...) leaves out what was made
    # less than the window ago.
    listing_lag: bool = False
    refusals: tuple[Refusal, ...] = ()
    # Addresses the account may hold (EC2's default is 5), counted from the
    # allocations and releases that pass through the proxy (None: moto's own, unenforced).
    elastic_ip_limit: int | None = None


@dataclass
class Call:
    """One request the proxy received."""

    action: str
    dry_run: bool
    started: float
    outcome: str = "pending"
    status: int = 0
    ended: float = 0.0
    access_key_id: str = ""  # who signed it: the Credential= of its Authorization header


class TokenBucket:
    def __init__(self, capacity: float, refill: float, now: float) -> None:
        self.capacity, self.refill = capacity, refill
        self.tokens, self.updated = capacity, now

    def fill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill)
        self.updated = now


class Ec2Proxy:
    """The proxy; a context manager that starts and stops it."""

    def __init__(self, upstream: str, config: ProxyConfig | None = None) -> None:
        self.upstream = urlsplit(upstream)
        self.config = config or ProxyConfig()
        self.port = 0  # and url: set by start(), on a port the system picked
        self.url = ""
        self.records: list[Call] = []
        self.throttled: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._rngs: dict[str, random.Random] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._tokens: dict[str, tuple[dict, int, list, bytes]] = {}
        self._token_locks: dict[str, threading.Lock] = {}
        self._states: dict[str, tuple[str, float]] = {}
        self._unseen: dict[str, tuple[str, float]] = {}  # name or id -> (its NotFound code, until)
        self._terminated_until = float("-inf")
        self._addresses: set[str] = set()  # allocation ids held, under the elastic-IP limit
        self._allocating = 0  # AllocateAddress calls forwarded and not yet answered
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Ec2Proxy:
        """Serves on a free port of 127.0.0.1 (once: a stopped proxy stays stopped)."""
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving, closes open connections and joins every thread."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()  # joins the request threads
        if self._thread:
            self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> Ec2Proxy:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()

    # -- what was seen -----------------------------------------------------

    def seen(self, since: float = 0.0, until: float = float("inf")) -> list[Call]:
        """The calls that arrived between two ``time.monotonic()`` readings (on Linux the
        clock is system-wide, so readings taken in another process compare)."""
        with self._lock:
            return [c for c in self.records if since <= c.started <= until]

    def calls(self, since: float = 0.0, until: float = float("inf")) -> list[str]:
        """Actions of every call but dry runs, in the order they arrived."""
        return [c.action for c in self.seen(since, until) if not c.dry_run]

    @property
    def mutating(self) -> list[str]:
        return [action for action in self.calls() if is_mutating(action)]

    @property
    def dry_runs(self) -> list[str]:
        return [c.action for c in self.seen() if c.dry_run]

    def counts(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        return Counter(self.calls(since, until))

    def outcomes(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        """How many calls were forwarded, refused, throttled, faulted, dropped, lost, delayed, deduplicated."""
        return Counter(c.outcome for c in self.seen(since, until))

    def busy_seconds(self, since: float = 0.0, until: float = float("inf")) -> float:
        """Time during which at least one call was in the proxy (overlapping calls count once)."""
        spans = sorted((c.started, c.ended) for c in self.seen(since, until) if c.ended)
        total, end = 0.0, float("-inf")
        for start, stop in spans:
            if stop > end:
                total += stop - max(start, end)
                end = stop
        return total

    def reset(self) -> None:
        """Forgets the calls seen (not the tokens, buckets or instance states)."""
        with self._lock:
            self.records.clear()
            self.throttled.clear()

    # -- per request -------------------------------------------------------

    def handle(self, handler: _Handler, body: bytes) -> None:
        params = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        query = urlsplit(handler.path).query
        params.update({k: v[0] for k, v in parse_qs(query).items() if k not in params})
        action = params.get("Action")
        if not action:  # not an EC2 call (moto's own API, for instance): pass it through
            handler.reply(*self._forward(handler, body))
            return
        call = Call(action, params.get("DryRun", "").lower() == "true", time.monotonic())
        call.access_key_id = signed_by(handler.headers.get("Authorization", ""))
        if self.config.count:
            with self._lock:
                self.records.append(call)
        try:
            self._handle(handler, body, action, params, call)
        finally:
            call.ended = time.monotonic()

    def _handle(self, handler: _Handler, body: bytes, action: str, params: dict, call: Call) -> None:
        config = self.config
        for refusal in config.refusals:
            if refusal.refuses(action, call.dry_run):
                call.outcome, call.status = "refused", refusal.status
                handler.reply(*self._error(action, refusal.status, refusal.code, refusal.message))
                return
        if config.token_bucket and not self._take_tokens(action, params):
            with self._lock:
                self.throttled[action] += 1
            call.outcome, call.status = "throttled", 400
            handler.reply(*self._error(action, 400, "RequestLimitExceeded", "Request limit exceeded."))
            return
        fate, kind = self._fate(action)
        if fate == "fault":
            call.outcome, call.status = "fault", FAULT_STATUS[kind]
            handler.reply(*self._error(action, FAULT_STATUS[kind], kind, f"Injected {kind}."))
            return
        if fate == "drop":
            call.outcome = "dropped"
            handler.drop()
            return
        if config.consistency_window:
            lagging = self._not_caught_up(action, params)
            if lagging is not None:
                call.outcome, call.status = "not caught up", lagging[0]
                handler.reply(*lagging)
                return
        token = params.get("ClientToken") if config.client_token_dedup and action == "RunInstances" else None
        limited = config.elastic_ip_limit is not None and action == "AllocateAddress" and not call.dry_run
        if limited and not self._reserve_address():
            call.outcome, call.status = "refused", 400
            handler.reply(
                *self._error(action, 400, "AddressLimitExceeded", "The maximum number of addresses has been reached.")
            )
            return
        if token and not call.dry_run:
            status, headers, answer = self._run_once(handler, body, token, params, call)
        elif limited:
            try:
                status, headers, answer = self._forward(handler, body)
            finally:
                with self._lock:
                    self._allocating -= 1
            call.outcome = "forwarded"
            if status == 200:
                self._note_allocated(answer)
        else:
            status, headers, answer = self._forward(handler, body)
            call.outcome = "forwarded"
        if config.consistency_window and status == 200 and call.outcome == "forwarded" and not call.dry_run:
            self._note_created(action, params, answer)
        if config.consistency_window and config.listing_lag and status == 200 and _lists_by_filter(params):
            answer = self._without_unseen(answer)
        if config.elastic_ip_limit is not None and status == 200 and not call.dry_run:
            if action == "ReleaseAddress":
                with self._lock:
                    self._addresses.discard(params.get("AllocationId", ""))
            elif action == "DescribeAccountAttributes":
                answer = _with_attribute(answer, "vpc-max-elastic-ips", str(config.elastic_ip_limit))
        if config.latency and action in LATENCY_ACTIONS and status == 200:
            answer = self._apply_latency(action, answer, starts=call.outcome == "forwarded" and not call.dry_run)
        call.status = status
        if fate == "lost":
            call.outcome = f"lost ({kind})"
            if kind == "drop":
                handler.drop()
            else:
                handler.reply(*self._error(action, 500, "InternalError", "Injected lost response."))
            return
        if fate == "delay":
            call.outcome = "delayed"
            self._stopping.wait(config.delay_seconds)
        handler.reply(status, headers, answer)

    def _fate(self, action: str) -> tuple[str, str]:
        """What happens to this call: one draw from the Action's own generator."""
        config = self.config
        rates = (
            ("fault", config.fault_rate, config.fault_kinds),
            ("drop", config.drop_rate, ("",)),
            ("lost", config.lost_rate, config.lost_kinds),
            ("delay", config.delay_rate, ("",)),
        )
        if not any(rate for _, rate, _ in rates):
            return "", ""
        if config.fault_actions is not None and action not in config.fault_actions:
            return "", ""
        with self._lock:
            rng = self._rngs.setdefault(action, random.Random(f"{config.seed}:{action}"))
            draw, pick = rng.random(), rng.random()
        for fate, rate, kinds in rates:
            if draw < rate:
                return fate, kinds[int(pick * len(kinds))]
            draw -= rate
        return "", ""

    def _take_tokens(self, action: str, params: dict) -> bool:
        """Takes a request token (and one resource token per instance) if all are there."""
        klass = action_class(action, params)
        limits = self.config.limits
        wanted = [((action, klass), limits.get(action) or limits.get(klass) or _default_limit(action, klass), 1.0)]
        if action in RESOURCE_LIMITS:
            if action == "RunInstances":
                count = float(params.get("MaxCount") or params.get("MinCount") or 1)
            else:
                count = float(sum(key.startswith("InstanceId.") for key in params) or 1)
            wanted.append(((action, "resource"), limits.get(f"{action} resource") or RESOURCE_LIMITS[action], count))
        now = time.monotonic()
        with self._lock:
            buckets = []
            for key, (capacity, refill), cost in wanted:
                bucket = self._buckets.setdefault(key, TokenBucket(capacity, refill, now))
                bucket.fill(now)
                buckets.append((bucket, cost))
            if any(bucket.tokens < cost for bucket, cost in buckets):
                return False
            for bucket, cost in buckets:
                bucket.tokens -= cost
            return True

    def _reserve_address(self) -> bool:
        """Counts an AllocateAddress in flight if the addresses held and in flight are under the limit."""
        with self._lock:
            if len(self._addresses) + self._allocating >= (self.config.elastic_ip_limit or 0):
                return False
            self._allocating += 1
            return True

    def _note_allocated(self, answer: bytes) -> None:
        """Records the allocation id an AllocateAddress answer names as held."""
        try:
            root = ET.fromstring(answer)
        except ET.ParseError:
            return
        ids = [e.text.strip() for e in root.iter() if _local(e.tag) == "allocationId" and e.text]
        with self._lock:
            self._addresses.update(ids)

    def _not_caught_up(self, action: str, params: dict) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """EC2's answer while it has not caught up with a create or a terminate
        that this request depends on; None when it has."""
        now = time.monotonic()
        with self._lock:
            unseen = dict(self._unseen)
            terminated_until = self._terminated_until
        if action == "DeleteSecurityGroup" and now < terminated_until:
            return self._error(
                action, 400, "DependencyViolation", f"resource {params.get('GroupId')} has a dependent object"
            )
        created_names = CREATED_NAMES.get(action, {})
        for key, value in params.items():
            name = next((part for part in reversed(key.split(".")) if not part.isdigit()), "")
            code, until = unseen.get(value, ("", now))
            if name not in NAMING_PARAMETERS or name in created_names or now >= until:
                continue
            if action == "DeleteKeyPair":  # EC2 deletes nothing and says so only by naming no keyPairId
                return 200, [("Content-Type", "text/xml;charset=UTF-8")], FORGETFUL_DELETE_KEY_PAIR
            return self._error(action, 400, code, f"The {name} '{value}' does not exist")
        return None

    def _without_unseen(self, answer: bytes) -> bytes:
        """A describe's answer without the items (and reservations left empty) made
        less than the consistency window ago: a listing by filter that lags."""
        now = time.monotonic()
        with self._lock:
            unseen = {value for value, (_code, until) in self._unseen.items() if now < until}
        try:
            root = ET.fromstring(answer)
        except ET.ParseError:
            return answer
        parents = {child: parent for parent in root.iter() for child in parent}

        def listed(item: ET.Element) -> bool:
            """An item of the answer's list (or an instance of a reservation), not one nested in it."""
            return parents.get(parents[item]) is root or _local(parents[item].tag) == "instancesSet"

        for item in [e for e in root.iter() if _local(e.tag) == "item" and listed(e)]:
            if any(_local(child.tag) in LISTED_IDS and (child.text or "").strip() in unseen for child in item):
                parents[item].remove(item)
        for reservation in [e for e in root.iter() if _local(e.tag) == "item"]:
            instances = next((child for child in reservation if _local(child.tag) == "instancesSet"), None)
            if instances is not None and not len(instances):
                parents[reservation].remove(reservation)
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)

    def _note_created(self, action: str, params: dict, answer: bytes) -> None:
        """Records what a create made (unknown for the window from now), or a terminate's time."""
        until = time.monotonic() + self.config.consistency_window
        if action == "TerminateInstances":
            with self._lock:
                self._terminated_until = until
            return
        names = CREATED_NAMES.get(action)
        if not names:
            return
        found = {params[key]: code for key, code in names.items() if params.get(key)}
        try:
            root = ET.fromstring(answer)
        except ET.ParseError:
            root = None
        for element in root.iter() if root is not None else ():
            tag = _local(element.tag)
            if tag in names and element.text:
                found[element.text.strip()] = names[tag]
        with self._lock:
            for value, code in found.items():
                self._unseen[value] = (code, until)

    def _run_once(self, handler: _Handler, body: bytes, token: str, params: dict, call: Call) -> tuple:
        """RunInstances with EC2's ClientToken idempotency: a repeated token gets the first answer."""
        compared = {k: v for k, v in params.items() if k != "DryRun"}
        with self._lock:
            lock = self._token_locks.setdefault(token, threading.Lock())
        with lock:  # a resend while the first call is still in flight waits for it
            seen = self._tokens.get(token)
            if seen is not None:
                first, status, headers, answer = seen
                if first != compared:
                    call.outcome = "refused"
                    return self._error(
                        "RunInstances", 400, "IdempotentParameterMismatch", "The client token was used before."
                    )
                call.outcome = "deduplicated"
                return status, headers, answer
            status, headers, answer = self._forward(handler, body)
            call.outcome = "forwarded"
            if status == 200:
                self._tokens[token] = (compared, status, headers, answer)
            return status, headers, answer

    def _apply_latency(self, action: str, answer: bytes, starts: bool) -> bytes:
        """Records the transitional state a forwarded action ``starts``, and shows it for ``latency`` seconds."""
        now = time.monotonic()
        state_tag = "instanceState" if action in ("DescribeInstances", "RunInstances") else "currentState"

        def show_states(root: ET.Element, prefix: str) -> bool:
            changed = False
            for item in root.iter(f"{prefix}item"):
                instance_id = item.findtext(f"{prefix}instanceId")
                state = item.find(f"{prefix}{state_tag}")
                if not instance_id or state is None:
                    continue
                with self._lock:
                    if action in TRANSITIONS and starts:
                        self._states[instance_id] = (TRANSITIONS[action], now + self.config.latency)
                    shown = self._states.get(instance_id)
                if shown is None or now >= shown[1]:
                    continue
                code, name = state.find(f"{prefix}code"), state.find(f"{prefix}name")
                if code is not None and name is not None:
                    code.text, name.text = str(STATE_CODES[shown[0]]), shown[0]
                    changed = True
            return changed

        return _edited(answer, show_states)

    def _forward(self, handler: _Handler, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Sends the request on to the emulator; one fresh-connection retry if a kept one went stale."""
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        for attempt in (1, 2):
            connection = handler.upstream(self.upstream.hostname, self.upstream.port, fresh=attempt == 2)
            try:
                connection.request(handler.command, handler.path, body=body or None, headers=headers)
                response = connection.getresponse()
                answer = response.read()
            except (ConnectionError, http.client.HTTPException):
                connection.close()
                if attempt == 2:
                    raise
                continue
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            return response.status, kept, answer
        raise AssertionError("unreachable")

    def _error(self, action: str, status: int, code: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """An answer in EC2's XML error format, with a seeded request id."""
        with self._lock:
            rng = self._rngs.setdefault(f"request-id:{action}", random.Random(f"{self.config.seed}:ids:{action}"))
            request_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{code}</Code><Message>{_escape(message)}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        ).encode()
        return status, [("Content-Type", "text/xml;charset=UTF-8")], body


def signed_by(authorization: str) -> str:
    """The access key id of a SigV4 ``Authorization`` header ("" if unsigned)."""
    match = re.search(r"Credential=([^/,\s]+)/", authorization)
    return match.group(1) if match else ""


def _default_limit(action: str, klass: str) -> tuple[float, float]:
    return ACTION_LIMITS.get(action) or CLASS_LIMITS[klass]


def _with_attribute(answer: bytes, name: str, value: str) -> bytes:
    """A DescribeAccountAttributes answer with attribute ``name``'s value(s) replaced by ``value``."""

    def replace(root: ET.Element, prefix: str) -> bool:
        changed = False
        for item in root.iter(f"{prefix}item"):
            if item.findtext(f"{prefix}attributeName") != name:
                continue
            for element in item.iter(f"{prefix}attributeValue"):
                element.text = value
                changed = True
        return changed

    return _edited(answer, replace)


def _edited(answer: bytes, edit: Callable[[ET.Element, str], bool]) -> bytes:
    """The XML ``answer`` after ``edit(root, tag prefix)``, which says whether it changed anything; the
    answer as it was when it does not parse, nothing changed, or it cannot be written again."""
    try:
        root = ET.fromstring(answer)
    except ET.ParseError:
        return answer
    namespace = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
    prefix = f"{{{namespace}}}" if namespace else ""
    if not edit(root, prefix):
        return answer
    try:
        return ET.tostring(root, encoding="utf-8", xml_declaration=True, default_namespace=namespace or None)
    except ValueError:  # elements outside the namespace: leave the answer as it was
        return answer


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _Server(ThreadingHTTPServer):
    """One thread per client connection; server_close() joins them all."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: type, proxy: Ec2Proxy) -> None:
        self.proxy = proxy
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, handler)

    def close_connections(self) -> None:
        with self.sockets_lock:
            for sock in self.open_sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    timeout = 60  # an idle kept-alive connection ends by itself
    server: _Server

    def setup(self) -> None:
        super().setup()
        self._upstream: http.client.HTTPConnection | None = None
        with self.server.sockets_lock:
            self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        if self._upstream is not None:
            self._upstream.close()
        with self.server.sockets_lock:
            self.server.open_sockets.discard(self.connection)

    def upstream(self, host: str | None, port: int | None, fresh: bool = False) -> http.client.HTTPConnection:
        """This client connection's own kept-alive connection to the emulator."""
        if fresh and self._upstream is not None:
            self._upstream.close()
            self._upstream = None
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(host or "127.0.0.1", port, timeout=60)
        return self._upstream

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            self.server.proxy.handle(self, body)
        except (ConnectionError, TimeoutError, http.client.HTTPException, OSError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

    def reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def drop(self) -> None:
        """Closes the connection without a word."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass
