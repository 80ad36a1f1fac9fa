"""aws_config's role keys (issue 18): the plugin signs with an assumed role's
session, which botocore renews itself, on the emulator (moto serves STS on the
same server; the tests' AWS_ENDPOINT_URL sends STS there, and sts_endpoint_url
overrides it)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import boto3
import pytest
import yaml
from botocore.credentials import InstanceMetadataProvider
from botocore.exceptions import ClientError
from cloudify.exceptions import NonRecoverableError, RecoverableError, WorkflowFailed

from ec2 import connection, keypair, utils
from ec2.errors import BadInput
from tests.support import ROOT, MotoServer, reference_topology
from tests.test_exactly_once import NOTHING, ONE_OF_EACH, inventory
from tools.ec2proxy import Ec2Proxy, signed_by

# A role of the emulator's default account, where the ec2 fixture looks.
ROLE = "arn:aws:iam::123456789012:role/cloudify-deployer"
OTHER_ACCOUNT = "111122223333"
OTHER_ACCOUNT_ROLE = f"arn:aws:iam::{OTHER_ACCOUNT}:role/cloudify-deployer"


def key_pair_node(tmp_path, aws_config: dict) -> dict:
    """The quickest node that calls AWS: a key pair."""
    properties = {"private_key_path": str(tmp_path / "keys" / "key.pem"), "aws_config": aws_config}
    return {"keypair": {"type": "cloudify.aws.nodes.KeyPair", "properties": properties}}


def client_in_account(url: str, account: str):
    """An EC2 client signed by a role session of ``account`` (the emulator keeps each account apart)."""
    sts = boto3.client(
        "sts", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    role = f"arn:aws:iam::{account}:role/inspector"
    session = sts.assume_role(RoleArn=role, RoleSessionName="inspector")["Credentials"]
    return boto3.client(
        "ec2",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=session["AccessKeyId"],
        aws_secret_access_key=session["SecretAccessKey"],
        aws_session_token=session["SessionToken"],
    )


# --- validation, before any call -----------------------------------------------------


def test_the_role_keys_become_client_settings():
    settings = connection.client_settings(
        {"role_arn": ROLE, "external_id": "ext-42", "role_session_name": "nightly", "duration_seconds": "1800"}
    )
    assert (settings["role_arn"], settings["external_id"], settings["role_session_name"]) == (ROLE, "ext-42", "nightly")
    assert settings["duration_seconds"] == 1800


def test_outside_an_operation_a_role_session_without_a_name_is_named_after_the_plugin():
    assert connection.client_settings({"role_arn": ROLE})["role_session_name"] == "cloudify-aws-ec2-plugin"


@pytest.mark.parametrize(
    "role_arn",
    [
        "arn:aws-cn:iam::123456789012:role/deployer",
        "arn:aws-us-gov:iam::123456789012:role/team/ci/deployer",
        "arn:aws-iso-b:iam::123456789012:role/d+e=f,g.h@i-j_k",
    ],
)
def test_role_arns_of_any_partition_and_with_a_path_are_accepted(role_arn):
    assert connection.client_settings({"role_arn": role_arn})["role_arn"] == role_arn


@pytest.mark.parametrize(
    "role_arn",
    [
        "cloudify-deployer",  # a name, not an ARN
        "arn:aws:iam::12345678901:role/deployer",  # 11 digits
        "arn:aws:iam::123456789012:user/deployer",  # a user
        "arn:aws:sts::123456789012:assumed-role/deployer/session",  # a session, not the role
        "arn:aws:iam::123456789012:role/",  # no name
        "arn:aws:iam::123456789012:role/dep loyer",
        f"arn:aws:iam::123456789012:role/{'r' * 65}",  # names have 64 characters at most
        "arn:azure:iam::123456789012:role/deployer",
    ],
)
def test_a_malformed_role_arn_is_refused_naming_aws_config_and_the_fix(role_arn):
    with pytest.raises(BadInput) as error:
        connection.client_settings({"role_arn": role_arn})
    assert str(error.value).startswith(f"property 'aws_config' has role_arn {role_arn!r}, which is not an IAM role's")
    assert "Fix: give the role's ARN" in str(error.value)


@pytest.mark.parametrize("external_id", ["ab", "x" * 1224, "a+b=c,d.e@f:g/h-i_j"])
def test_external_ids_within_sts_limits_are_accepted(external_id):
    assert connection.client_settings({"role_arn": ROLE, "external_id": external_id})["external_id"] == external_id


@pytest.mark.parametrize("external_id", ["x", "x" * 1225, "has space", "semi;colon"])
def test_an_external_id_outside_sts_limits_is_refused(external_id):
    with pytest.raises(BadInput, match="'aws_config' has an external_id of .* that STS refuses. Fix: give"):
        connection.client_settings({"role_arn": ROLE, "external_id": external_id})


@pytest.mark.parametrize("name", ["ab", "x" * 64, "a+b=c,d.e@f-g_h"])
def test_session_names_within_sts_limits_are_accepted(name):
    assert connection.client_settings({"role_arn": ROLE, "role_session_name": name})["role_session_name"] == name


@pytest.mark.parametrize("name", ["x", "x" * 65, "has space", "a:b"])
def test_a_session_name_outside_sts_limits_is_refused(name):
    with pytest.raises(BadInput, match="'aws_config' has role_session_name .* which STS refuses. Fix: give 2 to 64"):
        connection.client_settings({"role_arn": ROLE, "role_session_name": name})


@pytest.mark.parametrize("seconds", [900, 43200, "3600"])
def test_durations_from_15_minutes_to_12_hours_are_accepted(seconds):
    assert connection.client_settings({"role_arn": ROLE, "duration_seconds": seconds})["duration_seconds"] == int(
        seconds
    )


@pytest.mark.parametrize("seconds", [899, 43201, 0])
def test_a_duration_outside_sts_limits_is_refused(seconds):
    with pytest.raises(BadInput, match=f"'aws_config' has duration_seconds {seconds}, outside STS's 900 to 43200"):
        connection.client_settings({"role_arn": ROLE, "duration_seconds": seconds})


def test_a_duration_that_is_not_a_number_is_refused():
    with pytest.raises(BadInput, match="'aws_config.duration_seconds' is 'an hour'"):
        connection.client_settings({"role_arn": ROLE, "duration_seconds": "an hour"})


def test_mfa_serial_is_refused_because_no_one_can_type_a_code_during_a_workflow():
    with pytest.raises(BadInput) as error:
        connection.client_settings({"role_arn": ROLE, "mfa_serial": "arn:aws:iam::123456789012:mfa/me"})
    message = str(error.value)
    assert (
        message.startswith("property 'aws_config' sets 'mfa_serial'") and "cannot be assumed by a workflow" in message
    )
    assert "Fix: remove mfa_serial" in message


@pytest.mark.parametrize(
    "key, value", [("external_id", "ext-42"), ("role_session_name", "s1"), ("duration_seconds", 900)]
)
def test_a_role_setting_without_role_arn_is_refused(key, value):
    with pytest.raises(BadInput, match=f"sets \\['{key}'\\] without 'role_arn'"):
        connection.client_settings({key: value})


# --- the 3.1.7 spelling -----------------------------------------------------------------


def test_the_3_1_7_key_assume_role_is_role_arn():
    assert connection.client_settings({"assume_role": ROLE})["role_arn"] == ROLE


def test_assume_role_and_role_arn_may_repeat_the_same_role():
    assert connection.client_settings({"assume_role": ROLE, "role_arn": ROLE})["role_arn"] == ROLE


def test_assume_role_and_role_arn_naming_different_roles_are_refused():
    with pytest.raises(BadInput, match="both 'role_arn' and its cloudify-aws-plugin 3.x name 'assume_role'"):
        connection.client_settings({"assume_role": ROLE, "role_arn": OTHER_ACCOUNT_ROLE})


def test_a_malformed_assume_role_is_refused_like_role_arn():
    with pytest.raises(BadInput, match="has role_arn 'deployer', which is not an IAM role's ARN"):
        connection.client_settings({"assume_role": "deployer"})


def test_an_install_with_the_3_1_7_key_assumes_that_role(deploy, tmp_path, ec2, role_sessions):
    deploy(key_pair_node(tmp_path, {"assume_role": ROLE})).install()
    assert [request["RoleArn"] for request in role_sessions.requests] == [ROLE]
    assert len(ec2.describe_key_pairs()["KeyPairs"]) == 1


# --- the session's name -------------------------------------------------------------


def test_the_default_session_name_names_the_deployment():
    assert utils.role_session_name("web-prod") == "cloudify-web-prod"


def test_the_default_session_name_fits_sts_limits_whatever_the_deployment_id():
    name = utils.role_session_name("a deployment/with:odd*characters" + "x" * 80)
    assert connection.SESSION_NAME_PATTERN.fullmatch(name)
    assert name.startswith("cloudify-a-deployment-with-odd-characters")


def test_within_an_operation_a_role_without_a_session_name_gets_the_deployments():
    with utils.acting_for("web-prod"):
        common = utils.parse_common({"aws_config": {"role_arn": ROLE}})
    assert common.aws_config["role_session_name"] == "cloudify-web-prod"


def test_a_given_session_name_is_kept_within_an_operation():
    with utils.acting_for("web-prod"):
        common = utils.parse_common({"aws_config": {"role_arn": ROLE, "role_session_name": "nightly"}})
    assert common.aws_config["role_session_name"] == "nightly"


def test_an_install_names_the_role_session_after_the_deployment(deploy, tmp_path, role_sessions):
    deploy(key_pair_node(tmp_path, {"role_arn": ROLE})).install()
    assert [request["RoleSessionName"] for request in role_sessions.requests] == ["cloudify-test"]


def test_the_session_name_external_id_and_duration_given_are_sent_to_sts(deploy, tmp_path, role_sessions):
    aws_config = {"role_arn": ROLE, "role_session_name": "nightly", "external_id": "ext-42", "duration_seconds": 1800}
    deploy(key_pair_node(tmp_path, aws_config)).install()
    (request,) = role_sessions.requests
    assert request == {
        "RoleArn": ROLE,
        "RoleSessionName": "nightly",
        "ExternalId": "ext-42",
        "DurationSeconds": 1800,
    }


# --- where STS is reached ---------------------------------------------------------


def test_sts_is_reached_at_sts_endpoint_url():
    settings = connection.client_settings({"role_arn": ROLE, "sts_endpoint_url": "http://127.0.0.1:9"})
    assert connection._create_sts_client(settings).meta.endpoint_url == "http://127.0.0.1:9"


def test_sts_clients_get_the_proxy_retries_timeouts_and_tls_setting_of_aws_config():
    settings = connection.client_settings(
        {"role_arn": ROLE, "proxy": "proxy.example:3128", "max_attempts": 7, "read_timeout": 9, "verify": False}
    )
    client = connection._create_sts_client(settings)
    assert client.meta.config.proxies == {"http": "http://proxy.example:3128", "https": "http://proxy.example:3128"}
    assert (client.meta.config.retries["total_max_attempts"], client.meta.config.read_timeout) == (7, 9)
    assert client._endpoint.http_session._verify is False


def test_without_sts_endpoint_url_sts_is_where_aws_endpoint_url_sts_says(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:8")
    settings = connection.client_settings({"role_arn": ROLE, "endpoint_url": "http://127.0.0.1:9"})
    assert connection._create_sts_client(settings).meta.endpoint_url == "http://127.0.0.1:8"


def test_without_sts_endpoint_url_sts_is_not_sent_to_the_ec2_endpoint_url(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    settings = connection.client_settings({"role_arn": ROLE, "endpoint_url": "http://127.0.0.1:9"})
    endpoint = connection._create_sts_client(settings).meta.endpoint_url
    assert endpoint.startswith("https://sts.") and endpoint.endswith(".amazonaws.com")


# --- installs under a role, on the emulator -------------------------------------------


def test_the_reference_topology_installs_and_uninstalls_under_an_assumed_role(deploy, tmp_path, ec2, role_sessions):
    deployment = deploy(reference_topology({"role_arn": ROLE}, tmp_path / "key.pem"))
    deployment.install()
    assert inventory(ec2) == ONE_OF_EACH
    deployment.uninstall()
    assert inventory(ec2) == NOTHING
    assert {request["RoleArn"] for request in role_sessions.requests} == {ROLE}


def test_with_role_arn_every_ec2_call_of_an_install_is_signed_with_the_roles_session(
    moto_server, deploy, tmp_path, role_sessions
):
    with Ec2Proxy(moto_server.url) as proxy:
        deploy(reference_topology({"role_arn": ROLE, "endpoint_url": proxy.url}, tmp_path / "key.pem")).install()
        signers = {call.access_key_id for call in proxy.seen()}
    assert len(proxy.seen()) >= 9
    assert signers == set(role_sessions.access_key_ids) and len(signers) == 1
    assert "testing" not in signers  # the source credentials only called STS


def test_a_role_of_another_account_installs_in_that_account(moto_server, deploy, tmp_path, ec2):
    deploy(key_pair_node(tmp_path, {"role_arn": OTHER_ACCOUNT_ROLE})).install()
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    other = client_in_account(moto_server.url, OTHER_ACCOUNT)
    assert len(other.describe_key_pairs()["KeyPairs"]) == 1


def test_install_with_a_malformed_role_arn_fails_in_validation_before_any_call(moto_server, deploy, tmp_path, capsys):
    with Ec2Proxy(moto_server.url) as proxy:
        aws_config = {"role_arn": "arn:aws:iam::1234:role/deployer", "endpoint_url": proxy.url}
        aws_config["sts_endpoint_url"] = proxy.url
        with pytest.raises(WorkflowFailed):
            deploy(reference_topology(aws_config, tmp_path / "key.pem")).install()
    assert proxy.seen() == []
    assert "property 'aws_config' has role_arn 'arn:aws:iam::1234:role/deployer'" in capsys.readouterr().out


# --- one session per configuration, renewed -----------------------------------------------


def test_the_role_is_first_assumed_when_the_first_call_needs_it(role_sessions):
    client = connection.ec2_client({"role_arn": ROLE})
    assert role_sessions.requests == []
    client.describe_key_pairs()
    assert len(role_sessions.requests) == 1


def test_every_client_of_one_configuration_shares_one_role_session(role_sessions):
    aws_config = {"role_arn": ROLE, "role_session_name": "shared"}
    connection.ec2_client(aws_config).describe_key_pairs()
    connection.ec2_client(aws_config).describe_key_pairs()
    connection.sts_client(aws_config).get_caller_identity()
    assert len(role_sessions.sessions) == 1


def test_a_new_process_assumes_the_role_again(deploy, tmp_path, role_sessions):
    deployment = deploy(key_pair_node(tmp_path, {"role_arn": ROLE}))
    deployment.install()
    connection.clear_cache()  # what a new process starts with: no client, no role session
    deployment.uninstall()
    assert len(role_sessions.sessions) == 2


def role_session(fetches: list, lifetime: float) -> connection.RoleCredentials:
    """Role credentials whose every fetch (counted in ``fetches``) lasts ``lifetime`` seconds."""

    def fetch() -> dict:
        fetches.append(datetime.now(UTC))
        expiry = datetime.now(UTC) + timedelta(seconds=lifetime)
        return {"access_key": f"ASIA{len(fetches)}", "secret_key": "s", "token": "t", "expiry_time": expiry.isoformat()}

    return connection.RoleCredentials(fetch)


def test_a_fifteen_minute_session_is_fetched_once_for_many_calls():
    # botocore's own windows (renew 15 minutes before expiry) would fetch it for every call.
    fetches: list = []
    credentials = role_session(fetches, 900)
    for _ in range(5):
        credentials.get_frozen_credentials()
    assert len(fetches) == 1


@pytest.mark.parametrize(
    "lifetime, seconds_left, fetched",
    [
        (900, 230, 1),  # a quarter of 15 minutes is 225 seconds
        (900, 220, 2),
        (3600, 16 * 60, 1),  # an hour or more: botocore's 15 minutes
        (3600, 14 * 60, 2),
    ],
)
def test_a_session_is_renewed_15_minutes_before_it_expires_or_a_quarter_of_a_shorter_lifetime(
    lifetime, seconds_left, fetched
):
    fetches: list = []
    credentials = role_session(fetches, lifetime)
    credentials.get_frozen_credentials()
    credentials._expiry_time = datetime.now(UTC) + timedelta(seconds=seconds_left)
    credentials.get_frozen_credentials()
    assert len(fetches) == fetched


def test_the_role_session_is_renewed_before_it_expires_and_calls_go_on(
    moto_server, deploy, tmp_path, ec2, role_sessions
):
    with Ec2Proxy(moto_server.url) as proxy:
        deployment = deploy(reference_topology({"role_arn": ROLE, "endpoint_url": proxy.url}, tmp_path / "key.pem"))
        deployment.install()
        (credentials,) = connection._role_credentials.values()
        credentials._expiry_time = datetime.now(UTC) + timedelta(minutes=12)  # within botocore's 15 minutes
        proxy.reset()
        deployment.uninstall()
        signers = {call.access_key_id for call in proxy.seen()}
    assert len(role_sessions.sessions) == 2
    assert signers == {role_sessions.access_key_ids[1]}
    assert inventory(ec2) == NOTHING


SHORT_SESSION = 8.0  # seconds: renewal comes 2 s before the end, a margin for a loaded machine


def test_a_run_longer_than_the_role_session_lasts_succeeds(
    moto_server, deploy, tmp_path, ec2, role_sessions, monkeypatch
):
    # STS's shortest session is 15 minutes, and moto never expires one: STS's
    # answers are rewritten to expire after SHORT_SESSION seconds, and each
    # EC2 call must arrive signed by a session that had not expired yet.
    expiries: dict[str, float] = {}

    def shorten(parsed, **_) -> None:
        session = parsed.get("Credentials")
        if session:
            session["Expiration"] = datetime.now(UTC) + timedelta(seconds=SHORT_SESSION)
            expiries[session["AccessKeyId"]] = session["Expiration"].timestamp()

    create = connection._create_sts_client

    def shortening_client(settings, **credentials):
        client = create(settings, **credentials)
        client.meta.events.register("after-call.sts.AssumeRole", shorten)
        return client

    monkeypatch.setattr(connection, "_create_sts_client", shortening_client)
    to_wall_clock = time.time() - time.monotonic()
    with Ec2Proxy(moto_server.url) as proxy:
        deployment = deploy(reference_topology({"role_arn": ROLE, "endpoint_url": proxy.url}, tmp_path / "key.pem"))
        started = time.monotonic()
        deployment.install()
        time.sleep(SHORT_SESSION)
        deployment.uninstall()
        ran_for = time.monotonic() - started
        calls = proxy.seen()
    assert ran_for > SHORT_SESSION and len(role_sessions.sessions) >= 2
    assert inventory(ec2) == NOTHING
    late = [call.action for call in calls if call.started + to_wall_clock >= expiries[call.access_key_id]]
    assert late == [], f"signed by an expired session: {late}"


def test_the_role_session_is_written_to_no_file(deploy, tmp_path, role_sessions, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    deployment = deploy(key_pair_node(tmp_path, {"role_arn": ROLE}))
    deployment.install()
    deployment.uninstall()
    (session,) = role_sessions.sessions
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    for secret in (session["AccessKeyId"], session["SessionToken"]):
        assert not [path for path in written if secret.encode() in path.read_bytes()]


# --- STS refusals and failures -----------------------------------------------------------


def test_without_source_credentials_the_operation_fails_saying_so(make_ctx, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setattr(InstanceMetadataProvider, "load", lambda self: None)  # not an EC2 machine
    ctx = make_ctx({"private_key_path": str(tmp_path / "key.pem"), "aws_config": {"role_arn": ROLE}}, node_id="keys")
    with pytest.raises(NonRecoverableError, match="node 'keys': cannot reach EC2: Unable to locate credentials"):
        keypair.create(ctx=ctx)


def test_a_throttled_assume_role_is_left_to_the_workflow_to_retry(make_ctx, tmp_path, monkeypatch):
    create = connection._create_sts_client

    def throttled(settings, **credentials):
        client = create(settings, **credentials)

        def refuse(**_):
            raise ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "AssumeRole")

        client.meta.events.register("provide-client-params.sts.AssumeRole", refuse)
        return client

    monkeypatch.setattr(connection, "_create_sts_client", throttled)
    ctx = make_ctx({"private_key_path": str(tmp_path / "key.pem"), "aws_config": {"role_arn": ROLE}}, node_id="keys")
    with pytest.raises(RecoverableError, match="node 'keys': STS AssumeRole failed: Throttling: Rate exceeded"):
        keypair.create(ctx=ctx)


@pytest.fixture(scope="module")
def guarded_emulator():
    """A moto server that checks IAM permissions, and the keys of a user who
    may do nothing: (url, aws_config with those keys). Its first two calls
    (making the user) are let through unchecked."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "2")
        server = MotoServer()
    try:
        iam = boto3.client(
            "iam",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        yield {
            "aws_access_key_id": key["AccessKeyId"],
            "aws_secret_access_key": key["SecretAccessKey"],
            "endpoint_url": server.url,
            "sts_endpoint_url": server.url,
        }
    finally:
        server.stop()


def test_a_role_the_credentials_may_not_assume_fails_the_operation_naming_the_node_and_role(
    guarded_emulator, make_ctx, tmp_path
):
    ctx = make_ctx(
        {"private_key_path": str(tmp_path / "key.pem"), "aws_config": {**guarded_emulator, "role_arn": ROLE}},
        node_id="keys",
    )
    with pytest.raises(NonRecoverableError) as error:
        keypair.create(ctx=ctx)
    message = str(error.value)
    assert message.startswith(f"node 'keys': property 'aws_config' names role '{ROLE}', which AWS refused")
    refusal = "AccessDenied: User: arn:aws:iam::123456789012:user/nobody is not authorized to perform: sts:AssumeRole"
    assert f"({refusal})" in message
    assert "Fix: allow these credentials sts:AssumeRole on that role" in message


# --- preflight: who the plugin acts as -----------------------------------------------------


def test_preflight_reports_a_role_the_credentials_may_not_assume_once_for_its_nodes(guarded_emulator, deploy, tmp_path):
    deployment = deploy(reference_topology({**guarded_emulator, "role_arn": ROLE}, tmp_path / "key.pem"))
    with pytest.raises(NonRecoverableError) as error:
        deployment.execute("aws_preflight")
    message = str(error.value)
    assert message.startswith("aws_preflight found 1 problem(s)")
    assert f"- node(s) 'elastic_ip', 'keypair', 'security_group', 'vm': property 'aws_config' names role '{ROLE}'" in (
        message
    )


def test_preflight_names_the_account_and_arn_of_the_assumed_role(deploy, tmp_path, capsys):
    deploy(reference_topology({"role_arn": ROLE}, tmp_path / "key.pem")).execute("aws_preflight")
    assert (
        "act as arn:aws:sts::123456789012:assumed-role/cloudify-deployer/cloudify-test (account 123456789012)"
        in capsys.readouterr().out
    )


def test_preflight_asks_sts_who_it_is_once_per_distinct_aws_config(moto_server, deploy, tmp_path, capsys):
    with Ec2Proxy(moto_server.url) as proxy:
        plain = {"endpoint_url": proxy.url, "sts_endpoint_url": proxy.url}
        nodes = reference_topology(plain, tmp_path / "key.pem")
        nodes["keypair"]["properties"]["aws_config"] = {**plain, "role_arn": OTHER_ACCOUNT_ROLE}
        deploy(nodes).execute("aws_preflight")
    assert proxy.counts()["GetCallerIdentity"] == 2
    out = capsys.readouterr().out
    assert f"node(s) 'keypair' act as arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/cloudify-deployer/" in out
    assert "node(s) 'elastic_ip', 'security_group', 'vm' act as arn:aws:sts::123456789012:user/moto" in out


# --- the proxy ----------------------------------------------------------------------------------


def test_the_proxy_records_who_signed_a_call():
    header = "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE42/20261207/us-east-1/ec2/aws4_request, SignedHeaders=host"
    assert signed_by(header) == "ASIAEXAMPLE42"


# --- the documentation ---------------------------------------------------------------------------


def test_the_recommended_aws_config_of_the_reference_is_accepted():
    section = (ROOT / "docs" / "reference.md").read_text().split("### On a manager: the recommended setup", 1)[1]
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    secrets = {"customer_a_role_arn": ROLE, "customer_a_external_id": "a-long-random-id"}
    aws_config = yaml.safe_load(block)["node_templates"]["server"]["properties"]["aws_config"]
    resolved = {
        key: secrets[value["get_secret"]] if isinstance(value, dict) else value for key, value in aws_config.items()
    }
    settings = connection.client_settings(resolved)
    assert (settings["role_arn"], settings["external_id"]) == (ROLE, "a-long-random-id")
