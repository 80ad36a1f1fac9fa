"""The ctx-free AWS layer (ec2/aws.py): waiting for an instance's state, and
what a delete's answers mean."""

from __future__ import annotations

import pytest
from cloudify.exceptions import OperationRetry

from ec2 import aws, connection, errors, utils
from tests.support import HttpAnswer, advancing_clock, listings, stubbed_error

# --- waiting for a state -------------------------------------------------------


class NoClient:
    """Stands in for a client where find_instances is replaced."""


NO_CLIENT = NoClient()


class States:
    """A stand-in for find_instances that answers a given series of states."""

    def __init__(self, monkeypatch, *states: str) -> None:
        self.states = list(states)
        monkeypatch.setattr(aws, "find_instances", self.find)

    def find(self, client, instance_ids):
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {instance_id: {"InstanceId": instance_id, "State": {"Name": state}} for instance_id in instance_ids}


def test_waiting_returns_at_once_when_the_state_is_already_reached(monkeypatch):
    States(monkeypatch, "running")
    assert aws.wait_for_instance(NO_CLIENT, "i-1", ("running",), ("pending",), 5, 0)["State"]["Name"] == "running"


def test_waiting_hands_back_to_the_workflow_after_the_timeout(make_ctx, monkeypatch):
    States(monkeypatch, "pending")
    ctx = make_ctx({"retry_after": 7})
    with pytest.raises(OperationRetry) as retry:
        waiting(ctx=ctx)
    assert retry.value.retry_after == 7


def test_waiting_logs_every_poll(monkeypatch):
    States(monkeypatch, "pending", "pending", "running")
    lines = []
    aws.wait_for_instance(NO_CLIENT, "i-1", ("running",), ("pending",), 5, 0, lines.append)
    assert len(lines) == 3 and all("i-1" in line for line in lines)


def test_a_state_that_is_neither_pending_nor_wanted_stops_the_wait_naming_it(monkeypatch):
    States(monkeypatch, "pending", "terminated")
    with pytest.raises(errors.UnexpectedState, match="terminated"):
        aws.wait_for_instance(NO_CLIENT, "i-1", ("running",), ("pending",), 5, 0)


@utils.ec2_operation
def waiting(ctx, **_):
    aws.wait_for_instance(NO_CLIENT, "i-1", ("running",), ("pending",), timeout=0, interval=0)


# --- deletes ----------------------------------------------------------------------


def test_not_found_on_delete_means_already_gone():
    assert aws.delete_security_group(connection.ec2_client({}), "sg-12345678") is False


def test_a_dependency_violation_on_delete_means_not_ready_yet():
    client = stubbed_error("DependencyViolation", 400, "delete_security_group")
    with pytest.raises(errors.NotReady):
        aws.delete_security_group(client, "sg-12345678")


def duplicate_after(*attempts: dict):
    """A CreateKeyPair whose earlier attempts ended as ``attempts`` say (botocore's
    needs-retry arguments) and whose last answered Duplicate."""

    def call():
        for attempt in attempts:
            aws.note_attempt(**attempt)
        raise aws.missing("InvalidKeyPair.Duplicate", "CreateKeyPair", "taken")

    return call


LOST = {"caught_exception": ConnectionError("reset")}
SERVER_ERROR = {"response": (HttpAnswer(500), {"Error": {"Code": "InternalError"}})}
THROTTLED = {"response": (HttpAnswer(503), {"Error": {"Code": "RequestLimitExceeded"}})}


@pytest.mark.parametrize(
    ("attempts", "resent"),
    [((), False), ((LOST,), True), ((SERVER_ERROR,), True), ((THROTTLED,), False), ((THROTTLED, LOST), True)],
    ids=["sent once", "answer lost", "server error", "throttled", "throttled then lost"],
)
def test_a_duplicate_answer_says_whether_an_earlier_attempt_may_have_made_it(attempts, resent):
    with pytest.raises(errors.AlreadyExists, match=r"InvalidKeyPair\.Duplicate") as error:
        aws._create("InvalidKeyPair.Duplicate", "key pair 'k'", duplicate_after(*attempts))
    assert error.value.resent is resent


@pytest.mark.parametrize(
    ("wait", "goal"),
    [(aws.wait_running, "running"), (aws.wait_started, "started"), (aws.wait_stopped, "stopped")],
)
def test_each_named_wait_returns_once_its_state_is_reached(monkeypatch, wait, goal):
    (target,) = aws.INSTANCE_WAITS[goal][0]
    States(monkeypatch, aws.INSTANCE_WAITS[goal][1][0], target)
    assert wait(NO_CLIENT, "i-1", 5, 0, lambda _line: None)["State"]["Name"] == target


def test_a_launched_instance_that_stops_is_not_waited_for_but_a_started_one_is(monkeypatch):
    States(monkeypatch, "stopped")
    with pytest.raises(errors.UnexpectedState, match="stopped"):
        aws.wait_running(NO_CLIENT, "i-1", 5, 0, lambda _line: None)
    with pytest.raises(errors.StillWaiting):
        aws.wait_started(NO_CLIENT, "i-1", 0, 0, lambda _line: None)


def test_termination_is_done_when_the_instance_is_no_longer_known(monkeypatch):
    monkeypatch.setattr(aws, "find_instances", lambda client, ids: {})
    assert aws.wait_terminated(NO_CLIENT, "i-1", 5, 0, lambda _line: None) == {}


# --- a listing that does not show what was made a moment ago yet --------------------


def test_a_listing_is_asked_again_until_it_shows_everything_asked_for(monkeypatch):
    advancing_clock(monkeypatch)
    find, asked = listings(["a"], ["a", "b"])
    assert aws.until_found(find, 10, "a listing", lambda found: {"a", "b"} <= set(found)) == ["a", "b"]
    assert len(asked) == 2


def test_a_listing_that_never_shows_everything_gives_its_last_answer_once_the_window_has_passed(monkeypatch):
    clock = advancing_clock(monkeypatch)
    find, asked = listings(["a"])
    assert aws.until_found(find, 10, "a listing", lambda found: {"a", "b"} <= set(found)) == ["a"]
    assert len(asked) > 1 and clock[0] == 10


def test_without_a_window_a_listing_is_asked_once():
    find, asked = listings([])
    assert aws.until_found(find, 0, "a listing") == []
    assert len(asked) == 1
