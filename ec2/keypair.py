"""cloudify.aws.nodes.KeyPair: an EC2 key pair and its private key file.

create: parse and check the properties, create (or import) the key, write the
private key file atomically with mode 0600, record ``aws_resource_id``.
delete: remove the key this node instance made and the file create wrote
(for a key the classic plugin made, the file at ``private_key_path``, as it did).
An external key is only checked and recorded.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ec2 import aws, connection, constants, deployment, errors, ownership, utils
from ec2.constants import KEY_NAME_PATTERN
from ec2.errors import BadInput, PluginError
from ec2.properties import as_text

KIND = "key pair"
KEY_FINGERPRINT = "key_fingerprint"  # runtime property: what AWS answered at create, for check_drift
PUBLIC_KEY_PREFIXES = ("ssh-rsa ", "ssh-ed25519 ", "ecdsa-sha2-")


@dataclass(frozen=True)
class KeyPairSpec:
    common: utils.Common
    key_name: str
    key_path: str
    public_key: str  # empty: AWS makes the pair and returns the private key


# --- operations -------------------------------------------------------------


@utils.ec2_operation
def create(ctx, **_):
    spec = parse(ctx.node.properties, utils.generated_name(ctx.deployment.id, ctx.instance.id))
    check_key_file(spec, ctx.instance.runtime_properties.get(constants.KEY_FILE_WRITTEN))
    client = connection.ec2_client(spec.common.aws_config)
    if spec.common.external:
        utils.adopt_external(ctx.instance, ctx.logger.info, spec.common, KIND, lambda name: _find(client, name))
        return

    owner = ownership.owner_tags(ctx.deployment.id, ctx.instance.id)
    rerun = ownership.may_exist(ctx.instance.runtime_properties)
    if rerun:  # the earlier private key may be lost
        _remove_own_key_and_file(client, ctx.instance, owner, spec.common.propagation, ctx.logger)
    tags = ownership.creation_tags(owner, spec.common.tags)
    utils.mark_create_started(ctx.instance)
    created = _create_once(client, owner, spec, tags, ctx.logger.warning, rerun)
    if spec.public_key:
        utils.record(
            ctx.instance,
            **{
                constants.AWS_RESOURCE_ID: spec.key_name,
                constants.CREATED_AT: utils.now(),
                KEY_FINGERPRINT: created.get("KeyFingerprint"),
            },
        )
        ctx.logger.info(f"Imported public key as key pair {spec.key_name}.")
        return

    folders = missing_folders(spec.key_path)
    # Saved before the file is written, so that an interrupted create leaves all of it recorded.
    utils.record(
        ctx.instance,
        save=True,
        **{
            constants.AWS_RESOURCE_ID: spec.key_name,
            constants.CREATED_AT: utils.now(),
            constants.KEY_FILE_WRITTEN: spec.key_path,
            constants.KEY_FOLDERS_CREATED: folders,
        },
    )
    try:
        write_private_key(spec.key_path, created["KeyMaterial"])
    except OSError as error:
        aws.delete_key_pair(client, spec.key_name, fresh_for=spec.common.propagation)
        _remove_folders(folders)
        utils.forget(
            ctx.instance,
            constants.AWS_RESOURCE_ID,
            constants.CREATED_AT,
            constants.KEY_FILE_WRITTEN,
            constants.KEY_FOLDERS_CREATED,
            save=True,
        )
        raise BadInput(
            "private_key_path",
            f"points at '{spec.key_path}', where the private key could not be written ({error}); "
            f"key pair {spec.key_name} was deleted again",
            "point it into a writable folder",
        ) from None
    utils.record(ctx.instance, **{KEY_FINGERPRINT: created.get("KeyFingerprint")})
    ctx.logger.info(f"Created key pair {spec.key_name}; private key saved to {spec.key_path}.")


@utils.ec2_operation
def delete(ctx, **_):
    common = utils.common_if_created(ctx.node.properties, ctx.instance.runtime_properties, KIND, ctx.logger.info)
    if common is None:
        return
    client = connection.ec2_client(common.aws_config)
    if common.external:
        utils.release_external(ctx.instance, ctx.logger.info, common, KIND, lambda name: _find(client, name))
        return
    _adopt_classic_key_file(ctx.node.properties, ctx.instance.runtime_properties)
    owner = ownership.owner_tags(ctx.deployment.id, ctx.instance.id)
    _remove_own_key_and_file(client, ctx.instance, owner, common.propagation, ctx.logger)
    utils.forget(ctx.instance, constants.CREATE_STARTED)


@utils.ec2_operation
def creation_validation(ctx, **_):
    check(utils.node_facts(ctx), ctx.logger.info)
    deployment.check_deployment_quotas(ctx)


def check(node: utils.NodeFacts, report: ownership.Report) -> None:
    """validation.create's checks, plain: the aws_preflight workflow runs them too."""
    spec = parse(node.properties, node.generated_name)
    check_key_file(spec, node.runtime_properties.get(constants.KEY_FILE_WRITTEN))
    client = connection.ec2_client(spec.common.aws_config)
    utils.check_existence(
        spec.common,
        KIND,
        lambda name: _find(client, name),
        spec.key_name,
        lambda: ownership.left_behind(node.runtime_properties, lambda: aws.find_owned_key_pairs(client, node.owner)),
    )
    dry_run_key_pair(client, spec, node.owner)
    report(f"Key pair {spec.key_name} at {spec.key_path} is valid.")


def dry_run_key_pair(client, spec: KeyPairSpec, owner: dict[str, str]) -> None:
    """CreateKeyPair (ImportKeyPair for a given public key) with DryRun, for a new key pair."""
    if spec.common.external:
        return
    tags = ownership.creation_tags(owner, spec.common.tags)
    if spec.public_key:
        refusal = aws.dry_run_import_key_pair(client, spec.key_name, spec.public_key, tags)
        errors.check_dry_run(
            "ImportKeyPair", refusal, "public_key_material", "give an OpenSSH RSA or ED25519 public key"
        )
    else:
        refusal = aws.dry_run_create_key_pair(client, spec.key_name, tags)
        errors.check_dry_run("CreateKeyPair", refusal, "resource_id", "give a key pair name AWS accepts")


# --- properties ---------------------------------------------------------------


def parse(properties: Mapping[str, Any], generated_name: str) -> KeyPairSpec:
    """The KeyPair properties, checked without calling AWS."""
    common = utils.parse_common(properties)
    key_path = private_key_path(properties)
    return KeyPairSpec(common, key_pair_name(common, key_path, generated_name), key_path, public_key(properties))


def private_key_path(properties: Mapping[str, Any]) -> str:
    raw = as_text(properties.get("private_key_path"))
    if not raw:
        raise BadInput("private_key_path", "is empty", "set it to the file where the private key is (to be) stored")
    return os.path.abspath(os.path.expanduser(raw))


def key_pair_name(common: utils.Common, key_path: str, generated_name: str) -> str:
    """resource_id; else the key file's base name; else deployment and instance ids."""
    if common.resource_id:
        if not KEY_NAME_PATTERN.match(common.resource_id):
            raise BadInput(
                "resource_id",
                f"is not a valid key pair name ({common.resource_id!r})",
                "use at most 255 printable ASCII characters",
            )
        return common.resource_id
    if common.external:
        raise BadInput(
            "resource_id",
            "is empty while use_external_resource is true",
            "set resource_id to the name of the existing key pair",
        )
    base = os.path.splitext(os.path.basename(key_path))[0].strip()
    return base if KEY_NAME_PATTERN.match(base) else generated_name


def public_key(properties: Mapping[str, Any]) -> str:
    """The optional public key to import, given inline or as a file path."""
    material = as_text(properties.get("public_key_material"))
    path = as_text(properties.get("public_key_path"))
    if material and path:
        raise BadInput("public_key_path", "is set together with public_key_material", "set only one of them")
    if path:
        try:
            with open(os.path.expanduser(path), encoding="ascii") as handle:
                material = handle.read().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise BadInput(
                "public_key_path", f"cannot be read ({error})", "point it at an OpenSSH public key file"
            ) from None
    if material and not material.startswith(PUBLIC_KEY_PREFIXES):
        raise BadInput(
            "public_key_path" if path else "public_key_material",
            "does not hold an OpenSSH public key",
            "give a key such as 'ssh-ed25519 AAAA... comment'",
        )
    return material


def check_key_file(spec: KeyPairSpec, written_by_this_node: str | None) -> None:
    """An external key's file must exist, private to this user; a new key's
    file must not exist yet (unless this node wrote it) and its folder must be
    creatable and writable."""
    if spec.common.external:
        _check_existing_key_file(spec.key_path)
        return
    if spec.public_key:
        return
    if os.path.lexists(spec.key_path) and spec.key_path != written_by_this_node:
        raise BadInput(
            "private_key_path",
            f"points at '{spec.key_path}', which already exists",
            "choose a path that does not exist yet (the plugin never overwrites a key file), "
            "or set use_external_resource to true to use an existing key pair",
        )
    folder = os.path.dirname(spec.key_path)
    while not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(
            "private_key_path",
            f"points at '{spec.key_path}', but '{folder}' is not a folder this user can write to",
            "point it into a writable folder",
        )


def _check_existing_key_file(key_path: str) -> None:
    try:
        info = os.stat(key_path)
    except FileNotFoundError:
        raise BadInput(
            "private_key_path",
            f"points at '{key_path}', which does not exist",
            "put the existing key pair's private key there, with mode 0600",
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise BadInput(
            "private_key_path", f"points at '{key_path}', which is not a file", "point it at the private key file"
        )
    if info.st_mode & 0o077:
        raise BadInput(
            "private_key_path",
            f"points at '{key_path}', which others can access (mode {stat.S_IMODE(info.st_mode):04o})",
            f"run: chmod 600 {key_path}",
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise BadInput(
            "private_key_path",
            f"points at '{key_path}', which belongs to another user",
            "give the file to the user that runs the plugin",
        )


# --- AWS and files ----------------------------------------------------------


def _find(client, key_name: str) -> str | None:
    return key_name if aws.find_key_pair(client, key_name) else None


def _create_once(client, owner: dict[str, str], spec: KeyPairSpec, tags: dict[str, str], warn, rerun: bool) -> dict:
    """Creates (or imports) the key. A Duplicate answer for a key tagged as
    this node instance's (a resent call whose first answer, with the private
    key, was lost) replaces that key; one that is not ours is refused."""

    def replace(_copies: list) -> None:
        warn(f"Key pair {spec.key_name} was made by an attempt whose answer was lost; replacing it.")
        aws.delete_key_pair(client, spec.key_name, fresh_for=spec.common.propagation)

    return ownership.create_once(
        lambda: (
            aws.import_key_pair(client, spec.key_name, spec.public_key, tags)
            if spec.public_key
            else aws.create_key_pair(client, spec.key_name, tags)
        ),
        lambda: [key for key in aws.find_owned_key_pairs(client, owner) if key["KeyName"] == spec.key_name],
        replace,
        "choose another resource_id (or private_key_path base name), or set use_external_resource to true to use it",
        fresh_for=spec.common.propagation,
        made_before=rerun,
    )


def _adopt_classic_key_file(node_properties: Mapping[str, Any], runtime_properties: dict) -> None:
    """A key pair the classic plugin created (its name recorded, none of this
    plugin's markers) had its private key written at ``private_key_path``, and
    the classic delete removed that file: record it so that delete removes it too."""
    if not runtime_properties.get(constants.AWS_RESOURCE_ID) or runtime_properties.get(constants.CREATE_STARTED):
        return
    imported = as_text(node_properties.get("public_key_material")) or as_text(node_properties.get("public_key_path"))
    if runtime_properties.get(constants.KEY_FILE_WRITTEN) or imported:
        return
    key_path = private_key_path(node_properties)
    if os.path.isfile(key_path) and not os.path.islink(key_path):
        runtime_properties[constants.KEY_FILE_WRITTEN] = key_path


def _remove_own_key_and_file(client, instance, owner: dict[str, str], window: float, logger) -> None:
    """Deletes the key pair this node instance made (recorded, or found by its
    ownership tags after an interrupted create), the file and the folders create made.
    A key made less than ``window`` seconds ago is deleted once EC2 shows it."""
    properties = instance.runtime_properties
    names = ownership.recorded_or_owned(
        ownership.recorded(properties), lambda: [key["KeyName"] for key in aws.find_owned_key_pairs(client, owner)]
    )
    fresh_for = utils.fresh_for(properties, window)
    ownership.remove_each(names, lambda name: aws.delete_key_pair(client, name, fresh_for), KIND, logger.info)
    key_file = properties.get(constants.KEY_FILE_WRITTEN)
    if key_file and os.path.lexists(key_file):
        try:
            os.remove(key_file)
        except OSError as error:
            raise PluginError(
                f"the private key file '{key_file}' cannot be removed ({error}). Fix: remove it by hand"
            ) from None
        logger.info(f"Removed private key file {key_file}.")
    _remove_folders(properties.get(constants.KEY_FOLDERS_CREATED) or [])
    utils.forget(instance, constants.AWS_RESOURCE_ID, constants.KEY_FILE_WRITTEN, constants.KEY_FOLDERS_CREATED)
    utils.forget(instance, KEY_FINGERPRINT, constants.CREATED_AT)


def missing_folders(path: str) -> list[str]:
    """The folders above ``path`` that do not exist yet, outermost first."""
    missing = []
    folder = os.path.dirname(path)
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing[::-1]


def _remove_folders(folders: list[str]) -> None:
    """Removes folders create made, innermost first, as long as they are empty."""
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except OSError:
            return


def write_private_key(path: str, material: str) -> None:
    """Writes a private key atomically with mode 0600; never overwrites a file.

    Missing folders are made with mode 0700. The key goes to a temporary file
    created with mode 0600 in the same folder, which is then hard-linked to the
    final name (that fails if the name exists) and unlinked. Readers never see
    a partial or loosely-permitted file.
    """
    for missing in missing_folders(path):
        os.mkdir(missing, mode=0o700)
    folder = os.path.dirname(path)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(material if material.endswith("\n") else material + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    finally:
        os.unlink(temporary)
