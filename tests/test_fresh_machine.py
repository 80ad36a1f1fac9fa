"""A build host booted a minute ago: ``time.monotonic()`` counts from boot on
Linux, so it is small there. Only differences between two readings may mean
anything; the plugin must work whatever the first reading is."""

from __future__ import annotations

import time

import pytest

from ec2 import aws, connection
from tests.support import IMAGE_ID, live_instances, reference_topology


@pytest.fixture
def booted(monkeypatch):
    """Makes ``time.monotonic()`` read as on a machine up for ``seconds``, with
    no image described yet in this process."""

    def boot(seconds: float) -> None:
        real = time.monotonic
        offset = real() - seconds
        monkeypatch.setattr(time, "monotonic", lambda: real() - offset)
        monkeypatch.setattr(aws, "_images", aws.RecentAnswers(aws.IMAGE_CACHE_SECONDS, aws.IMAGE_CACHE_SIZE))

    return boot


@pytest.mark.parametrize("uptime", (0.5, 60.0))
def test_the_first_image_lookup_on_a_machine_just_booted_describes_the_image(booted, uptime):
    booted(uptime)
    assert time.monotonic() < uptime + 5
    image = aws.find_image(connection.ec2_client({}), IMAGE_ID)
    assert image is not None and image["ImageId"] == IMAGE_ID


def test_an_image_described_a_moment_ago_is_not_described_again(booted, calls):
    booted(1.0)
    client = connection.ec2_client({})
    aws.find_image(client, IMAGE_ID)
    aws.find_image(client, IMAGE_ID)
    assert calls.operations.count("DescribeImages") == 1


def test_the_reference_topology_installs_and_uninstalls_on_a_machine_booted_a_minute_ago(booted, deploy, tmp_path, ec2):
    booted(60.0)
    deployment = deploy(reference_topology({}, tmp_path / "key.pem"))
    deployment.install()
    assert len(live_instances(ec2)) == 1
    deployment.uninstall()
    assert live_instances(ec2) == []
