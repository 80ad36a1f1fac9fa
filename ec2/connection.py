"""The one place that builds EC2 clients. Ctx-free.

A node's ``aws_config`` property is translated into boto3 session and client
arguments. Keys left out fall back to boto3's standard chain: environment
variables (including ``AWS_ENDPOINT_URL``), shared config and credentials
files, ``AWS_PROFILE`` and the instance role. Old blueprints may still use the
boto 2 ``EC2Connection`` names; they are mapped onto their boto3 equivalents.
One client is built per distinct configuration per process, under a lock, so
the workflow engine's threads share it.

With ``role_arn`` the clients sign with an assumed role's credentials, which
botocore renews itself before they expire; the credentials above are only
the source that calls AssumeRole (see "assuming a role" below).
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    CredentialProvider,
    CredentialResolver,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ProfileNotFound
from botocore.utils import parse_timestamp

from ec2 import aws, constants, errors, pacing, secrets
from ec2.errors import BadInput
from ec2.properties import as_bool, as_int, is_boolean_text

BOTO3_KEYS = (
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "region_name",
    "endpoint_url",
    "profile_name",
    "verify",
)
RETRY_KEYS = ("retry_mode", "max_attempts", "pace_after_throttle")
TIMEOUT_KEYS = ("connect_timeout", "read_timeout")
BOTO2_KEYS = (
    "ec2_region_name",
    "ec2_region_endpoint",
    "security_token",
    "is_secure",
    "port",
    "validate_certs",
    "proxy",
    "proxy_port",
    "proxy_user",
    "proxy_pass",
)
# Classic names that are the same setting as a boto3 name.
BOTO2_ALIASES = {"ec2_region_name": "region_name", "security_token": "aws_session_token", "validate_certs": "verify"}
# The role to assume (see "assuming a role" below), and cloudify-aws-plugin
# 3.x's name for role_arn.
ROLE_KEYS = ("role_arn", "external_id", "role_session_name", "duration_seconds", "sts_endpoint_url")
ROLE_ALIASES = {"assume_role": "role_arn"}
# Settings of the plugin itself, not of the client.
PLUGIN_KEYS = ("propagation_timeout",)
ACCEPTED_KEYS = BOTO3_KEYS + RETRY_KEYS + TIMEOUT_KEYS + BOTO2_KEYS + ROLE_KEYS + tuple(ROLE_ALIASES) + PLUGIN_KEYS
RETRY_MODES = ("legacy", "standard", "adaptive")
CACHE_SIZE = 32

_clients: OrderedDict[str, Any] = OrderedDict()
_clients_lock = threading.Lock()
# One loader for every session: the EC2 service model is read from disk once,
# when the plugin is imported, so that no operation pays for it.
_DATA_LOADER = botocore.loaders.create_loader()
for _model in ("service-2", "paginators-1"):
    _DATA_LOADER.load_service_model("ec2", _model)
for _data in ("endpoints", "partitions", "_retry", "sdk-default-configuration"):
    _DATA_LOADER.load_data(_data)


def ec2_client(aws_config: dict | None) -> Any:
    """The EC2 client for a node's ``aws_config`` (boto3 or boto 2 keys)."""
    return _cached_client(aws_config, "")


def service_quotas_client(aws_config: dict | None) -> Any:
    """The Service Quotas client with the EC2 client's credentials, region and
    endpoint_url (an emulator serves both; a real account has no endpoint_url)."""
    return _cached_client(aws_config, "service-quotas")


def _cached_client(aws_config: dict | None, service: str) -> Any:
    """One client per service and settings (``service`` "" is EC2)."""
    settings = json.dumps(client_settings(aws_config or {}), sort_keys=True)
    key = f"{service}:{settings}" if service else settings
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            create = _create_quotas_client if service else None
            client = _clients[key] = _build(json.loads(settings), create)
            while len(_clients) > CACHE_SIZE:
                _clients.popitem(last=False)
        return client


def clear_cache() -> None:
    """Forgets every client (and assumed role session), as a new process starts."""
    with _clients_lock:
        _clients.clear()
    with _role_lock:
        _role_credentials.clear()


def _build(settings: dict, create: Callable[[dict], Any] | None = None) -> Any:
    """A client made by ``create`` (the EC2 client by default), botocore's complaints about the settings as BadInput."""
    try:
        return (create or _create_client)(settings)
    except ProfileNotFound as error:
        raise BadInput(
            "aws_config",
            f"names a profile that does not exist ({error})",
            "correct 'profile_name' (or AWS_PROFILE), or add that profile to the shared AWS config and credentials "
            "files",
        ) from None
    except (BotoCoreError, ValueError) as error:  # a bad region name, endpoint or retry setting
        raise BadInput(
            "aws_config",
            f"does not make a usable EC2 client ({error})",
            "correct region_name, endpoint_url (or the classic endpoint keys) and the retry settings",
        ) from None


def _core_session() -> botocore.session.Session:
    """A botocore session that reads the service data from the shared loader."""
    session = botocore.session.Session()
    session.register_component("data_loader", _DATA_LOADER)
    return session


@functools.cache
def ec2_service_model() -> Any:
    """The EC2 API description, from the loader every client shares."""
    return _core_session().get_service_model("ec2")


@functools.cache
def known_regions() -> frozenset[str]:
    """Every region botocore's partition data knows for EC2."""
    session = _core_session()
    return frozenset(
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("ec2", partition_name=partition)
    )


def client_settings(aws_config: Any) -> dict:
    """Normalises ``aws_config`` into plain boto3 session and client settings:
    each step reads the given keys and returns its part, none changes another's."""
    config = _given(aws_config)
    settings = _credentials_and_region(config)
    settings.update(_endpoint(config, settings))
    _check_region(settings)
    settings.update(_retries(config))
    settings.update(_timeouts(config))
    settings.update(_proxy_settings(config))
    settings.update(_role_settings(config))
    return settings


def _given(aws_config: Any) -> dict:
    """The keys given a value, once the dictionary and its key names are known to be acceptable."""
    if not isinstance(aws_config, dict):
        raise BadInput(
            "aws_config", f"is a {type(aws_config).__name__}", "give a dictionary with keys such as region_name"
        )
    _refuse_mfa(aws_config)
    unknown = sorted(set(aws_config) - set(ACCEPTED_KEYS))
    if unknown:
        raise BadInput(
            "aws_config", f"has unknown key(s) {unknown}", f"use only the accepted keys: {', '.join(ACCEPTED_KEYS)}"
        )
    return {key: value for key, value in aws_config.items() if value not in (None, "")}


def _credentials_and_region(config: dict) -> dict:
    """The boto3 session keys, with the classic names read as their boto3 twins."""
    settings = {key: config[key] for key in BOTO3_KEYS if key in config}
    classic = {key: config[key] for key in BOTO2_ALIASES if key in config}
    if "validate_certs" in classic:
        classic["validate_certs"] = as_bool(classic["validate_certs"], "aws_config.validate_certs")
    if "verify" in settings and is_boolean_text(settings["verify"]):
        settings["verify"] = as_bool(settings["verify"], "aws_config.verify")
    return _with_twins(settings, classic, BOTO2_ALIASES, "classic")


def _endpoint(config: dict, settings: dict) -> dict:
    """endpoint_url from the classic ec2_region_endpoint/port/is_secure, unless given."""
    is_secure = as_bool(config.get("is_secure", True), "aws_config.is_secure")
    endpoint: dict[str, Any] = {} if is_secure else {"use_ssl": False}
    if "endpoint_url" in settings or not ("ec2_region_endpoint" in config or "port" in config):
        return endpoint
    host = str(config.get("ec2_region_endpoint") or "").rstrip("/") or (
        f"ec2.{settings.get('region_name', constants.DEFAULT_REGION)}.amazonaws.com"
    )
    if "://" not in host:
        host = f"{'https' if is_secure else 'http'}://{host}"
    port = f":{as_int(config['port'], 'aws_config.port')}" if "port" in config else ""
    return {**endpoint, "endpoint_url": f"{host}{port}"}


def _retries(config: dict) -> dict:
    mode = config.get("retry_mode", constants.DEFAULT_RETRY_MODE)
    if mode not in RETRY_MODES:
        raise BadInput("aws_config", f"has retry_mode {mode!r}", f"use one of {', '.join(RETRY_MODES)}")
    attempts = as_int(config.get("max_attempts", constants.DEFAULT_MAX_ATTEMPTS), "aws_config.max_attempts")
    paced = as_bool(config.get("pace_after_throttle", True), "aws_config.pace_after_throttle")
    return {"retry_mode": mode, "max_attempts": attempts, "pace_after_throttle": paced}


def _timeouts(config: dict) -> dict:
    return {key: as_int(config[key], f"aws_config.{key}") for key in TIMEOUT_KEYS if key in config}


def _proxy_settings(config: dict) -> dict:
    for key in ("proxy_port", "proxy_user", "proxy_pass"):
        if key in config and "proxy" not in config:
            raise BadInput("aws_config", f"sets '{key}' without 'proxy'", "add the proxy host")
    return {"proxies": _proxies(config)} if "proxy" in config else {}


def propagation_timeout(aws_config: dict) -> float:
    """Seconds after a create during which EC2's NotFound for the new resource
    means "not visible yet" (``aws_config.propagation_timeout``)."""
    value = aws_config.get("propagation_timeout")
    if value in (None, ""):
        return float(constants.DEFAULT_PROPAGATION_TIMEOUT)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not 0 <= seconds <= 3600:
        raise BadInput(
            "aws_config",
            f"has propagation_timeout {value!r}",
            f"give a number of seconds from 0 to 3600 (default {constants.DEFAULT_PROPAGATION_TIMEOUT})",
        )
    return seconds


def _check_region(settings: dict) -> None:
    """A region botocore does not know is refused unless an endpoint is given:
    on AWS its DNS name would not resolve, and every call would be retried."""
    region = settings.get("region_name")
    if not region or settings.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL"):
        return
    if region not in known_regions():
        raise BadInput(
            "aws_config",
            f"names region {region!r}, which botocore does not know",
            "correct region_name (such as us-east-1 or eu-west-1), or give endpoint_url for a private endpoint",
        )


def _proxies(config: dict) -> dict:
    proxy = str(config["proxy"])
    if "://" not in proxy:
        proxy = f"http://{proxy}"
    scheme, host = proxy.split("://", 1)
    credentials = ""
    if config.get("proxy_user"):
        credentials = quote(str(config["proxy_user"]), safe="")
        if config.get("proxy_pass"):
            credentials += ":" + quote(str(config["proxy_pass"]), safe="")
        credentials += "@"
    port = f":{as_int(config['proxy_port'], 'aws_config.proxy_port')}" if "proxy_port" in config else ""
    url = f"{scheme}://{credentials}{host}{port}"
    return {"http": url, "https": url}


def _create_client(settings: dict) -> Any:
    secrets.install_log_filter(settings)
    session = _session(settings)
    client = session.client("ec2", **_client_arguments(session, settings))
    # Tells the propagation retries which NotFound may follow a lost answer (ec2.aws.while_propagating).
    client.meta.events.register("needs-retry.ec2", aws.note_attempt)
    if settings.get("pace_after_throttle", True):
        pacing.register(client, client.meta.endpoint_url)
    return client


def _create_quotas_client(settings: dict) -> Any:
    secrets.install_log_filter(settings)
    session = _session(settings)
    return session.client("service-quotas", **_client_arguments(session, settings))


def _client_arguments(session: boto3.session.Session, settings: dict) -> dict[str, Any]:
    """What every client of these settings is made with."""
    return {
        "region_name": session.region_name or constants.DEFAULT_REGION,
        "endpoint_url": settings.get("endpoint_url"),
        "verify": settings.get("verify"),
        "use_ssl": settings.get("use_ssl", True),
        "config": _client_config(settings),
    }


def _source_session(settings: dict) -> boto3.session.Session:
    """A session with the credentials aws_config gives (keys, session token or
    profile), else boto3's chain: the environment, the shared files, the instance role."""
    return boto3.session.Session(
        botocore_session=_core_session(),
        aws_access_key_id=settings.get("aws_access_key_id"),
        aws_secret_access_key=settings.get("aws_secret_access_key"),
        aws_session_token=settings.get("aws_session_token"),
        region_name=settings.get("region_name"),
        profile_name=settings.get("profile_name"),
    )


def _session(settings: dict) -> boto3.session.Session:
    """The session a client of these settings signs with: the source session,
    or, with role_arn, one that holds the role's renewing credentials."""
    source = _source_session(settings)
    if not settings.get("role_arn"):
        return source
    core_session = _core_session()
    core_session.register_component(
        "credential_provider", CredentialResolver([_AssumedRole(_credentials_of_role(settings))])
    )
    return boto3.session.Session(botocore_session=core_session, region_name=source.region_name)


def _client_config(settings: dict) -> Config:
    return Config(
        retries={"mode": settings["retry_mode"], "total_max_attempts": settings["max_attempts"]},
        proxies=settings.get("proxies"),
        connect_timeout=settings.get("connect_timeout", constants.DEFAULT_CONNECT_TIMEOUT),
        read_timeout=settings.get("read_timeout", constants.DEFAULT_READ_TIMEOUT),
    )


# --- assuming a role ------------------------------------------------------------
#
# With role_arn, every client of a configuration signs with the credentials of
# one role session: botocore's AssumeRoleCredentialFetcher calls STS with the
# source credentials (the rest of aws_config, or boto3's chain), and its
# DeferredRefreshableCredentials call it first when a request needs them and
# again before they expire. The session is shared by every client of the same
# settings in this process: one AssumeRole per configuration, not per call.

# The default session name when the caller gives none (the operation layer
# names the deployment instead: ec2.utils.parse_common).
DEFAULT_ROLE_SESSION_NAME = "cloudify-aws-ec2-plugin"
# STS's limits (AssumeRole API reference).
ROLE_ARN_PATTERN = re.compile(r"arn:aws(?:-[a-z]+)*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}", re.ASCII)
EXTERNAL_ID_PATTERN = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
SESSION_NAME_PATTERN = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
DURATION_LIMITS = (900, 43200)
# botocore renews refreshable credentials this long before they expire, and
# blocks every call for new ones when this close (RefreshableCredentials).
RENEW_BEFORE = 15 * 60
MUST_RENEW_BEFORE = 10 * 60

_role_credentials: OrderedDict[str, RoleCredentials] = OrderedDict()
_role_lock = threading.Lock()


def _refuse_mfa(aws_config: dict) -> None:
    if "mfa_serial" in aws_config:
        raise BadInput(
            "aws_config",
            "sets 'mfa_serial', but a role that needs an MFA code cannot be assumed by a workflow: "
            "each AssumeRole would wait for someone to type the code",
            "remove mfa_serial, and give the plugin source credentials that the role's trust policy admits "
            "without MFA (such as the manager's instance role, with an external_id)",
        )


def _with_twins(values: dict, config: dict, twins: dict[str, str], era: str) -> dict:
    """``values`` with each name of ``twins`` given in ``config`` under its older
    name (an ``era`` spelling) set under its current name; both given, differently, is refused."""
    values = dict(values)
    for old, current in twins.items():
        if old not in config:
            continue
        if current in values and values[current] != config[old]:
            raise BadInput(
                "aws_config",
                f"sets both '{current}' and its {era} name '{old}', differently",
                f"keep only '{current}'",
            )
        values[current] = config[old]
    return values


def _role_settings(config: dict) -> dict:
    """The role keys of aws_config, checked against STS's limits before any call."""
    config = _with_twins(config, config, ROLE_ALIASES, "cloudify-aws-plugin 3.x")
    settings: dict[str, Any] = {}
    if "sts_endpoint_url" in config:
        settings["sts_endpoint_url"] = str(config["sts_endpoint_url"])
    if "role_arn" not in config:
        given = [key for key in ("external_id", "role_session_name", "duration_seconds") if key in config]
        if given:
            raise BadInput("aws_config", f"sets {given} without 'role_arn'", "add the role to assume as role_arn")
        return settings

    role_arn = str(config["role_arn"]).strip()
    if not ROLE_ARN_PATTERN.fullmatch(role_arn):
        raise BadInput(
            "aws_config",
            f"has role_arn {role_arn!r}, which is not an IAM role's ARN",
            "give the role's ARN as IAM shows it, such as arn:aws:iam::123456789012:role/cloudify-deployer",
        )
    settings["role_arn"] = role_arn
    if "external_id" in config:
        external_id = str(config["external_id"])
        if not EXTERNAL_ID_PATTERN.fullmatch(external_id):
            raise BadInput(
                "aws_config",
                f"has an external_id of {len(external_id)} character(s) that STS refuses",
                "give the external id the role's trust policy names: 2 to 1224 characters of letters, digits "
                "and _+=,.@:/-",
            )
        settings["external_id"] = external_id
    session_name = str(config.get("role_session_name", DEFAULT_ROLE_SESSION_NAME))
    if not SESSION_NAME_PATTERN.fullmatch(session_name):
        raise BadInput(
            "aws_config",
            f"has role_session_name {session_name!r}, which STS refuses",
            "give 2 to 64 characters of letters, digits and _+=,.@-, or leave it out to name the deployment",
        )
    settings["role_session_name"] = session_name
    if "duration_seconds" in config:
        duration = as_int(config["duration_seconds"], "aws_config.duration_seconds")
        if not DURATION_LIMITS[0] <= duration <= DURATION_LIMITS[1]:
            raise BadInput(
                "aws_config",
                f"has duration_seconds {duration}, outside STS's {DURATION_LIMITS[0]} to {DURATION_LIMITS[1]}",
                "give 900 (15 minutes) to 43200 (12 hours), and no more than the role's maximum session duration "
                "(1 hour unless raised; 1 hour at most when the source credentials are themselves a role's), "
                "or leave it out for STS's 1 hour",
            )
        settings["duration_seconds"] = duration
    return settings


class RoleCredentials(DeferredRefreshableCredentials):
    """botocore's deferred, self-renewing credentials of a role session.

    botocore renews 15 minutes before expiry and insists at 10: a session of
    15 minutes would be renewed before every call. The windows shrink to a
    quarter and a sixth of the lifetime of the session just received, which
    leaves botocore's own for sessions of an hour or more."""

    def __init__(self, fetch: Callable[[], dict]) -> None:
        super().__init__(refresh_using=self._renew, method="assume-role")
        self._fetch = fetch

    def _renew(self) -> dict:
        fetched = self._fetch()
        lifetime = (parse_timestamp(fetched["expiry_time"]) - datetime.now(UTC)).total_seconds()
        self._advisory_refresh_timeout = min(RENEW_BEFORE, lifetime / 4)
        self._mandatory_refresh_timeout = min(MUST_RENEW_BEFORE, lifetime / 6)
        return fetched


class _AssumedRole(CredentialProvider):
    """Hands a session the role's credentials, in place of boto3's chain."""

    METHOD = "assume-role"
    CANONICAL_NAME = "custom-cloudify-assume-role"

    def __init__(self, credentials: RoleCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> RoleCredentials:
        return self._credentials


class _NeverCached(dict):
    """A cache for botocore's fetcher that never answers: the fetcher would
    otherwise hand the last session out again until 15 minutes before its
    expiry, while RoleCredentials, which asks, has decided when to renew."""

    def __contains__(self, key: object) -> bool:
        return False


def _credentials_of_role(settings: dict) -> RoleCredentials:
    """The role session of these settings, shared by every client made with them."""
    key = json.dumps(settings, sort_keys=True)
    with _role_lock:
        credentials = _role_credentials.get(key)
        if credentials is None:
            credentials = _role_credentials[key] = _assume_role(settings)
            while len(_role_credentials) > CACHE_SIZE:
                _role_credentials.popitem(last=False)
        return credentials


def _assume_role(settings: dict) -> RoleCredentials:
    """Renewing credentials that call AssumeRole with the source credentials when needed."""
    source = _source_session(settings).get_credentials()
    extra_args: dict[str, Any] = {"RoleSessionName": settings["role_session_name"]}
    if "external_id" in settings:
        extra_args["ExternalId"] = settings["external_id"]
    if "duration_seconds" in settings:
        extra_args["DurationSeconds"] = settings["duration_seconds"]
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=lambda _service, **keys: _create_sts_client(settings, **keys),
        source_credentials=source,
        role_arn=settings["role_arn"],
        extra_args=extra_args,
        cache=_NeverCached(),
    )

    def fetch() -> dict:
        if source is None:
            raise NoCredentialsError()
        try:
            fetched = fetcher.fetch_credentials()
        except ClientError as error:
            if errors.describe(error)[0]:  # throttled or unavailable: worth another try later
                raise
            raise errors.role_refused(settings["role_arn"], error) from None
        secrets.remember(fetched[key] for key in ("access_key", "secret_key", "token"))
        return fetched

    return RoleCredentials(fetch)


def _create_sts_client(settings: dict, **credentials: Any) -> Any:
    """The STS client that calls AssumeRole, signed with ``credentials`` (the source's)."""
    secrets.install_log_filter(settings)
    region = _source_session(settings).region_name
    session = boto3.session.Session(botocore_session=_core_session(), region_name=region, **credentials)
    return _sts_client_of(session, settings)


def _create_identity_client(settings: dict) -> Any:
    """An STS client signed like the EC2 client of these settings (with the same role session)."""
    secrets.install_log_filter(settings)
    return _sts_client_of(_session(settings), settings)


def _sts_client_of(session: boto3.session.Session, settings: dict) -> Any:
    """STS at sts_endpoint_url if given, else where boto3 finds it (AWS_ENDPOINT_URL_STS,
    AWS_ENDPOINT_URL, or AWS's endpoint for the region); never at the EC2 endpoint_url."""
    return session.client(
        "sts",
        region_name=session.region_name or constants.DEFAULT_REGION,
        endpoint_url=settings.get("sts_endpoint_url"),
        verify=settings.get("verify"),
        config=_client_config(settings),
    )


def sts_client(aws_config: dict | None) -> Any:
    """An STS client with the credentials the EC2 client of ``aws_config`` signs
    with (the same role session): for asking STS who the plugin acts as."""
    return _build(client_settings(aws_config or {}), _create_identity_client)
