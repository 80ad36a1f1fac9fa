"""ec2/connection.py: the one client factory, driven by a node's aws_config."""

import pytest

from ec2 import connection
from ec2.errors import BadInput


def test_empty_aws_config_falls_back_to_the_standard_boto3_chain(ec2):
    client = connection.ec2_client({})
    ec2.create_key_pair(KeyName="seen-through-env")
    assert [k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]] == ["seen-through-env"]


def test_aws_endpoint_url_from_the_environment_is_honoured(moto_server):
    client = connection.ec2_client({})
    assert client.meta.endpoint_url == moto_server.url


@pytest.mark.parametrize(
    "key, value, setting, expected",
    [
        ("aws_access_key_id", "AKIDEXAMPLE", "aws_access_key_id", "AKIDEXAMPLE"),
        ("aws_secret_access_key", "secret", "aws_secret_access_key", "secret"),
        ("aws_session_token", "token", "aws_session_token", "token"),
        ("region_name", "eu-west-1", "region_name", "eu-west-1"),
        ("endpoint_url", "http://127.0.0.1:1", "endpoint_url", "http://127.0.0.1:1"),
        ("profile_name", "dev", "profile_name", "dev"),
        ("verify", False, "verify", False),
    ],
)
def test_boto3_names_are_accepted(key, value, setting, expected):
    assert connection.client_settings({key: value})[setting] == expected


@pytest.mark.parametrize(
    "classic, setting, expected",
    [
        ({"ec2_region_name": "eu-west-2"}, "region_name", "eu-west-2"),
        ({"security_token": "tok"}, "aws_session_token", "tok"),
        ({"validate_certs": False}, "verify", False),
        ({"validate_certs": "false"}, "verify", False),
        ({"ec2_region_endpoint": "ec2.eu-west-1.amazonaws.com"}, "endpoint_url", "https://ec2.eu-west-1.amazonaws.com"),
        (
            {"ec2_region_endpoint": "127.0.0.1", "is_secure": False, "port": 5000},
            "endpoint_url",
            "http://127.0.0.1:5000",
        ),
        ({"is_secure": "False"}, "use_ssl", False),
    ],
)
def test_classic_boto2_names_are_mapped_onto_boto3(classic, setting, expected):
    assert connection.client_settings(classic)[setting] == expected


def test_port_alone_targets_the_regional_endpoint():
    settings = connection.client_settings({"ec2_region_name": "eu-west-1", "port": 8443})
    assert settings["endpoint_url"] == "https://ec2.eu-west-1.amazonaws.com:8443"


def test_classic_proxy_settings_become_a_botocore_proxy():
    settings = connection.client_settings(
        {"proxy": "proxy.example", "proxy_port": 3128, "proxy_user": "me", "proxy_pass": "p@ss"}
    )
    assert settings["proxies"] == {
        "http": "http://me:p%40ss@proxy.example:3128",
        "https": "http://me:p%40ss@proxy.example:3128",
    }


def test_the_proxy_reaches_the_client_config():
    client = connection.ec2_client({"proxy": "proxy.example", "proxy_port": 3128})
    assert client.meta.config.proxies == {"http": "http://proxy.example:3128", "https": "http://proxy.example:3128"}


def test_an_unknown_key_is_refused_with_the_accepted_keys_listed():
    with pytest.raises(BadInput) as error:
        connection.client_settings({"region": "us-east-1"})
    message = str(error.value)
    assert "'aws_config'" in message and "'region'" in message
    for key in ("region_name", "ec2_region_name", "aws_access_key_id", "proxy_pass"):
        assert key in message


def test_aws_config_must_be_a_dictionary():
    with pytest.raises(BadInput, match="is a list"):
        connection.client_settings(["region_name"])


def test_retries_use_botocore_standard_mode_by_default():
    client = connection.ec2_client({})
    assert client.meta.config.retries["mode"] == "standard"


def test_retry_mode_and_max_attempts_are_configurable():
    client = connection.ec2_client({"retry_mode": "adaptive", "max_attempts": 9})
    assert client.meta.config.retries["mode"] == "adaptive"
    assert client.meta.config.retries["total_max_attempts"] == 9


def test_an_unknown_retry_mode_is_refused():
    with pytest.raises(BadInput, match="retry_mode"):
        connection.client_settings({"retry_mode": "eager"})


def test_an_explicit_region_wins_over_the_environment():
    assert connection.ec2_client({"region_name": "ap-south-1"}).meta.region_name == "ap-south-1"


def test_without_any_region_the_classic_default_us_east_1_is_used(monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    assert connection.ec2_client({}).meta.region_name == "us-east-1"


def test_the_same_settings_share_one_client():
    assert connection.ec2_client({"region_name": "us-east-1"}) is connection.ec2_client({"region_name": "us-east-1"})


def test_credentials_never_appear_in_error_messages():
    with pytest.raises(BadInput) as error:
        connection.client_settings({"aws_secret_access_key": "TOPSECRET", "bogus": 1})
    assert "TOPSECRET" not in str(error.value)


def test_an_unknown_profile_is_a_clear_error_naming_the_property():
    with pytest.raises(BadInput) as error:
        connection.ec2_client({"profile_name": "no-such-profile"})
    assert "'aws_config'" in str(error.value) and "profile_name" in str(error.value)


@pytest.mark.parametrize("text, expected", [("false", False), ("True", True), ("/etc/ssl/ca.pem", "/etc/ssl/ca.pem")])
def test_verify_as_text_is_a_boolean_or_a_ca_bundle_path(text, expected):
    assert connection.client_settings({"verify": text})["verify"] == expected


def test_a_classic_endpoint_with_a_scheme_is_used_as_given():
    settings = connection.client_settings({"ec2_region_endpoint": "http://127.0.0.1", "port": 5000})
    assert settings["endpoint_url"] == "http://127.0.0.1:5000"


def test_a_boto3_name_and_its_classic_twin_must_agree():
    with pytest.raises(BadInput, match="'region_name' and its classic name 'ec2_region_name'"):
        connection.client_settings({"region_name": "us-east-1", "ec2_region_name": "eu-west-1"})


def test_a_boto3_name_and_its_classic_twin_may_repeat_the_same_value():
    assert connection.client_settings({"region_name": "eu-west-1", "ec2_region_name": "eu-west-1"})["region_name"] == (
        "eu-west-1"
    )


def test_proxy_credentials_without_a_proxy_are_refused():
    with pytest.raises(BadInput, match="without 'proxy'"):
        connection.client_settings({"proxy_user": "me"})


def test_the_built_client_carries_the_session_credentials_and_tls_settings(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    client = connection.ec2_client(
        {"aws_access_key_id": "AKID", "aws_secret_access_key": "s", "aws_session_token": "tok", "is_secure": False}
    )
    credentials = client._request_signer._credentials
    assert (credentials.access_key, credentials.token) == ("AKID", "tok")
    assert client.meta.endpoint_url == "http://ec2.us-east-1.amazonaws.com"


def test_timeouts_default_to_short_values_so_a_hung_endpoint_does_not_hold_a_worker():
    config = connection.ec2_client({}).meta.config
    assert (config.connect_timeout, config.read_timeout) == (5, 20)


def test_timeouts_are_configurable():
    config = connection.ec2_client({"connect_timeout": 3, "read_timeout": 7}).meta.config
    assert (config.connect_timeout, config.read_timeout) == (3, 7)


@pytest.mark.parametrize(
    "aws_config",
    [{"region_name": "us east 1"}, {"endpoint_url": "not a url"}, {"max_attempts": 0}],
)
def test_settings_that_make_no_usable_client_are_a_clear_error_naming_the_property(aws_config):
    with pytest.raises(BadInput) as error:
        connection.ec2_client(aws_config)
    assert "'aws_config'" in str(error.value) and "Fix:" in str(error.value)


def test_a_region_botocore_does_not_know_is_refused_naming_the_property(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with pytest.raises(BadInput, match="'aws_config' names region 'us-nowhere-9'"):
        connection.client_settings({"region_name": "us-nowhere-9"})


def test_an_unknown_region_is_accepted_with_an_endpoint():
    assert connection.client_settings({"region_name": "lab-1", "endpoint_url": "http://127.0.0.1:1"})[
        "region_name"
    ] == ("lab-1")


def test_concurrent_first_uses_of_one_configuration_build_one_client():
    import threading

    built = []
    barrier = threading.Barrier(4)

    def use():
        barrier.wait()
        built.append(connection.ec2_client({"region_name": "eu-west-3"}))

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(client) for client in built}) == 1
