"""The reference topology's EC2 calls, counted by a proxy in front of the
emulator: install and uninstall make exactly the calls of the lower bound."""

from collections import Counter

import pytest

from tests.support import reference_topology
from tools import topology
from tools.ec2proxy import Ec2Proxy


@pytest.fixture
def counted(moto_server, deploy, tmp_path):
    """The reference topology deployed through a counting proxy; yields (proxy, deployment)."""
    with Ec2Proxy(moto_server.url) as proxy:
        deployment = deploy(reference_topology({"endpoint_url": proxy.url}, tmp_path / "key.pem"))
        yield proxy, deployment


INSTALL = Counter(
    {
        "DescribeKeyPairs": 1,  # validation: the key name is free
        "CreateKeyPair": 1,
        "CreateSecurityGroup": 1,
        "AuthorizeSecurityGroupIngress": 1,  # both rules in one call
        "DescribeImages": 1,  # validation: the AMI is available
        "RunInstances": 1,
        "DescribeInstances": 1,  # start: running, with its addresses
        "AllocateAddress": 1,
        "AssociateAddress": 1,
    }
)
# validation.create's deployment-wide quota check (ec2/quotas.py), made once per install in this
# process, not once per node instance: the addresses' limit and use, and the key pairs in use. (The
# vCPU quota is read from Service Quotas, which the emulator cannot answer: no EC2 call follows.)
QUOTA_CHECK = Counter({"DescribeAccountAttributes": 1, "DescribeAddresses": 1, "DescribeKeyPairs": 1})
UNINSTALL = Counter(
    {
        "DisassociateAddress": 1,
        "ReleaseAddress": 1,
        "TerminateInstances": 1,  # no stop first: terminate shuts the instance down
        "DescribeInstances": 1,  # terminated
        "DeleteSecurityGroup": 1,
        "DeleteKeyPair": 1,
    }
)


def test_install_of_the_reference_topology_makes_no_more_calls_than_the_lower_bound(counted):
    # Nine: the group's generated name needs no check that it is free (the
    # lower bound of ten counted that DescribeSecurityGroups).
    # The quota check's three calls come on top: the lower bound counts what creating needs.
    proxy, deployment = counted
    deployment.install(task_retries=5)
    assert proxy.counts() == INSTALL + QUOTA_CHECK
    assert sum(INSTALL.values()) <= topology.REFERENCE_LOWER_BOUND["install"]


def test_install_of_the_reference_topology_dry_runs_each_create_once(counted):
    # validation.create proves each node with AWS's own dry run (issue 12);
    # the proxy counts those apart from the calls that act.
    proxy, deployment = counted
    deployment.install(task_retries=5)
    assert Counter(proxy.dry_runs) == Counter(
        ["CreateKeyPair", "CreateSecurityGroup", "RunInstances", "AllocateAddress"]
    )


def test_uninstall_of_the_reference_topology_makes_the_six_calls_of_the_lower_bound(counted):
    proxy, deployment = counted
    deployment.install(task_retries=5)
    proxy.reset()
    deployment.uninstall(task_retries=5)
    assert proxy.counts() == UNINSTALL
    assert sum(UNINSTALL.values()) == topology.REFERENCE_LOWER_BOUND["uninstall"]


# --- under an assumed role: STS counted apart ----------------------------------------------


def test_install_of_the_reference_topology_under_a_role_makes_one_assume_role_and_the_same_ec2_calls(
    moto_server, deploy, tmp_path
):
    # STS is sent through the proxy too (sts_endpoint_url), so that it is counted over HTTP.
    with Ec2Proxy(moto_server.url) as proxy:
        aws_config = {
            "role_arn": "arn:aws:iam::123456789012:role/cloudify-deployer",
            "endpoint_url": proxy.url,
            "sts_endpoint_url": proxy.url,
        }
        deploy(reference_topology(aws_config, tmp_path / "key.pem")).install(task_retries=5)
        counts = proxy.counts()
    sts = Counter({action: n for action, n in counts.items() if action in ("AssumeRole", "GetCallerIdentity")})
    assert sts == Counter({"AssumeRole": 1})
    assert counts - sts == INSTALL + QUOTA_CHECK
