"""The exactly-once rule (ec2/ownership.py) on its own: plain values and a
small fake client stand in for Cloudify and EC2; no call reaches the emulator."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from ec2 import aws, ownership
from ec2.errors import AlreadyExists, PluginError
from tests.support import advancing_clock, listings

OWNER = ownership.owner_tags("dep", "node_1")


class FakeAddresses:
    """Answers DescribeAddresses from a list, as EC2 does (NotFound for an unknown id or IP); notes each call."""

    def __init__(self, *addresses: dict) -> None:
        self.addresses = list(addresses)
        self.asked: list[dict] = []

    def can_paginate(self, _name: str) -> bool:
        return False

    def describe_addresses(self, **params) -> dict:
        self.asked.append(params)
        field, wanted, code = (
            ("AllocationId", params["AllocationIds"], "InvalidAllocationID.NotFound")
            if "AllocationIds" in params
            else ("PublicIp", params["PublicIps"], "InvalidAddress.NotFound")
        )
        found = [address for address in self.addresses if address[field] in wanted]
        if not found:
            raise ClientError({"Error": {"Code": code, "Message": "not found"}}, "DescribeAddresses")
        return {"Addresses": found}


def never() -> list:
    pytest.fail("asked AWS although it did not need to")


def duplicate() -> dict:
    raise AlreadyExists("key pair 'k' already exists (InvalidKeyPair.Duplicate)")


def resent_duplicate() -> dict:
    """The Duplicate answer to a call botocore had sent before (its first answer lost)."""
    raise AlreadyExists("security group 'g' already exists (InvalidGroup.Duplicate)", resent=True)


# --- the tags -------------------------------------------------------------------


def test_the_ownership_tags_name_the_deployment_and_the_node_instance():
    assert ownership.owner_tags("dep", "node_1") == {
        "cloudify:deployment-id": "dep",
        "cloudify:node-instance-id": "node_1",
    }


def test_a_deployment_without_an_id_owns_as_local():
    assert ownership.owner_tags(None, "node_1")["cloudify:deployment-id"] == "local"


def test_a_users_tag_cannot_override_an_ownership_tag():
    tags = ownership.creation_tags(OWNER, {"cloudify:node-instance-id": "someone_else", "team": "qa"}, "web")
    assert tags == {"Name": "web", "cloudify:node-instance-id": "node_1", "team": "qa", "cloudify:deployment-id": "dep"}


def test_creation_tags_without_a_name_have_no_name_tag():
    assert "Name" not in ownership.creation_tags(OWNER, {"team": "qa"})


# --- what a node instance may own ----------------------------------------------------


def test_a_node_instance_that_never_began_a_create_owns_nothing():
    assert not ownership.may_exist({"ip": "10.0.0.1"})


def test_a_begun_create_may_have_left_something():
    assert ownership.may_exist({"create_started": True})


def test_an_id_recorded_by_the_classic_plugin_counts_as_owned():
    assert ownership.may_exist({"aws_resource_id": "sg-12345678"})


def test_nothing_left_behind_is_looked_for_when_no_create_began():
    assert ownership.left_behind({}, never) == []


def test_what_a_begun_create_left_is_found_by_the_tags():
    assert ownership.left_behind({"create_started": True}, lambda: ["i-1"]) == ["i-1"]


# --- the recorded id ------------------------------------------------------------------


def test_the_recorded_id_comes_before_the_fallback():
    assert ownership.recorded({"aws_resource_id": "sg-1"}, "sg-external") == "sg-1"


def test_without_a_recorded_id_the_fallback_is_used():
    assert ownership.recorded({}, "sg-external") == "sg-external"


def test_an_empty_record_and_fallback_are_none():
    assert ownership.recorded({"aws_resource_id": ""}, "") is None


def test_a_missing_record_fails_naming_the_runtime_property_and_the_fix():
    with pytest.raises(PluginError) as error:
        ownership.require_recorded({}, "key pair", "run install first")
    assert str(error.value) == "no key pair is recorded (runtime property aws_resource_id). Fix: run install first"


# --- the recorded address -------------------------------------------------------------


def test_no_address_is_looked_up_when_none_is_recorded():
    client = FakeAddresses()
    assert ownership.recorded_address(client, {}) is None
    assert client.asked == []


def test_a_recorded_address_is_looked_up_by_its_allocation_id():
    client = FakeAddresses({"AllocationId": "eipalloc-1", "PublicIp": "203.0.113.1"})
    found = ownership.recorded_address(client, {"allocation_id": "eipalloc-1", "aws_resource_id": "203.0.113.1"})
    assert found == {"AllocationId": "eipalloc-1", "PublicIp": "203.0.113.1"}
    assert client.asked == [{"AllocationIds": ["eipalloc-1"]}]


def test_an_address_the_classic_plugin_recorded_is_looked_up_by_its_public_ip():
    client = FakeAddresses({"AllocationId": "eipalloc-1", "PublicIp": "203.0.113.1"})
    assert ownership.recorded_address(client, {"aws_resource_id": "203.0.113.1"})["AllocationId"] == "eipalloc-1"
    assert client.asked == [{"PublicIps": ["203.0.113.1"]}]


def test_a_recorded_address_that_is_gone_is_an_empty_answer_not_none():
    assert ownership.recorded_address(FakeAddresses(), {"allocation_id": "eipalloc-1"}) == {}


# --- create once --------------------------------------------------------------------


def test_a_create_that_succeeds_looks_for_no_copies():
    assert ownership.create_once(lambda: "made", never, never, "fix it") == "made"


def test_a_duplicate_that_is_not_ours_fails_with_the_fix():
    with pytest.raises(AlreadyExists) as error:
        ownership.create_once(duplicate, lambda: [], never, "choose another resource_id")
    assert "InvalidKeyPair.Duplicate" in str(error.value)
    assert str(error.value).endswith("and is not this node instance's. Fix: choose another resource_id")


def test_our_duplicate_is_adopted_without_creating_again():
    created = []

    def create() -> str:
        created.append(1)
        return duplicate()

    assert ownership.create_once(create, lambda: [{"GroupId": "sg-1"}], lambda copies: copies[0]["GroupId"], "") == (
        "sg-1"
    )
    assert len(created) == 1


def test_our_duplicate_that_is_removed_is_created_again():
    answers = iter([duplicate, lambda: "made"])
    removed = []
    made = ownership.create_once(lambda: next(answers)(), lambda: ["k"], removed.append, "")
    assert made == "made" and removed == [["k"]]


def test_after_a_resent_call_our_copy_the_listing_does_not_show_yet_is_looked_for_again_and_adopted(monkeypatch):
    pauses: list[float] = []
    monkeypatch.setattr(aws.time, "sleep", pauses.append)
    own_copies, asked = listings([], [], [{"GroupId": "sg-1"}])
    adopted = ownership.create_once(
        resent_duplicate, own_copies, lambda copies: copies[0]["GroupId"], "", fresh_for=120
    )
    assert adopted == "sg-1"
    assert len(asked) == 3 and pauses == [1.0, 1.0]


def test_after_a_resent_call_a_copy_never_listed_within_the_window_is_not_ours(monkeypatch):
    clock = advancing_clock(monkeypatch)
    own_copies, asked = listings([])
    with pytest.raises(AlreadyExists, match="is not this node instance's. Fix: choose another name$"):
        ownership.create_once(resent_duplicate, own_copies, never, "choose another name", fresh_for=10)
    assert len(asked) > 1 and clock[0] == 10


def test_in_a_rerun_of_create_our_copy_the_listing_does_not_show_yet_is_looked_for_again(monkeypatch):
    # An earlier process made the group and died; this rerun's call is sent once and answered Duplicate.
    monkeypatch.setattr(aws.time, "sleep", lambda _seconds: None)
    own_copies, asked = listings([], [{"GroupId": "sg-1"}])
    adopted = ownership.create_once(
        duplicate, own_copies, lambda copies: copies[0]["GroupId"], "", fresh_for=120, made_before=True
    )
    assert adopted == "sg-1" and len(asked) == 2


def test_a_duplicate_answering_the_first_attempt_is_not_ours_without_looking_again(monkeypatch):
    monkeypatch.setattr(aws.time, "sleep", lambda _seconds: pytest.fail("no pause: the call was sent once"))
    own_copies, asked = listings([])
    with pytest.raises(AlreadyExists, match="is not this node instance's"):
        ownership.create_once(duplicate, own_copies, never, "fix", fresh_for=120)
    assert len(asked) == 1


def test_creating_again_stops_after_the_attempts_allowed():
    removed = []
    with pytest.raises(AlreadyExists, match=r"\(InvalidKeyPair.Duplicate\)$"):
        ownership.create_once(duplicate, lambda: ["k"], removed.append, "", attempts=3)
    assert len(removed) == 2


# --- sweeping duplicates ----------------------------------------------------------------


def test_every_copy_but_the_kept_one_is_swept():
    removed = []
    owned = [{"InstanceId": "i-1"}, {"InstanceId": "i-2"}, {"InstanceId": "i-3"}]
    swept = ownership.sweep_others(lambda: owned, "InstanceId", "i-2", removed.append)
    assert removed == swept == [{"InstanceId": "i-1"}, {"InstanceId": "i-3"}]


def test_nothing_is_swept_when_only_the_kept_copy_is_owned():
    assert ownership.sweep_others(lambda: [{"AllocationId": "a-1"}], "AllocationId", "a-1", never) == []


def test_a_listing_that_does_not_show_the_kept_copy_yet_is_asked_again_before_sweeping(monkeypatch):
    # EC2 lists by tag with a lag: until the newest copy (the kept one) is listed, an older duplicate may be missing.
    monkeypatch.setattr(aws.time, "sleep", lambda _seconds: None)
    removed = []
    own_copies, asked = listings([], [{"AllocationId": "a-1"}, {"AllocationId": "a-2"}])
    swept = ownership.sweep_others(own_copies, "AllocationId", "a-2", removed.append, fresh_for=120)
    assert removed == swept == [{"AllocationId": "a-1"}] and len(asked) == 2


def test_a_listing_that_never_shows_the_kept_copy_sweeps_nothing_and_says_so(monkeypatch):
    clock = advancing_clock(monkeypatch)
    own_copies, asked = listings([{"AllocationId": "a-1"}])
    assert ownership.sweep_others(own_copies, "AllocationId", "a-2", never, fresh_for=10) is None
    assert len(asked) > 1 and clock[0] == 10


# --- the recorded id, else what the tags find ---------------------------------------------


def test_a_recorded_id_is_used_without_asking_for_the_tags():
    assert ownership.recorded_or_owned("sg-1", never) == ["sg-1"]


def test_without_a_recorded_id_the_tags_find_what_was_made():
    assert ownership.recorded_or_owned(None, lambda: ["sg-1", "sg-2"]) == ["sg-1", "sg-2"]


def test_after_a_resent_call_the_recorded_id_comes_first_and_once():
    assert ownership.recorded_or_owned("i-2", lambda: ["i-1", "i-2"], also_owned=True) == ["i-2", "i-1"]


def test_a_recorded_id_the_listing_does_not_show_yet_is_kept():
    assert ownership.recorded_or_owned("i-2", lambda: ["i-1"], also_owned=True) == ["i-2", "i-1"]


def test_each_removal_is_reported_as_deleted_or_already_gone():
    reported: list[str] = []
    ownership.remove_each(["sg-1", "sg-2"], lambda group_id: group_id == "sg-1", "security group", reported.append)
    assert reported == ["Deleted security group sg-1.", "Security group sg-2 was already gone."]
