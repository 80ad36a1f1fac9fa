"""cloudify.aws.nodes.KeyPair: an EC2 key pair and its private key file.

create: validate, create (or import) the key, write the private key file
atomically with mode 0600, record ``aws_resource_id``. delete: remove the key
and the file that create wrote. An external key is only checked and recorded.
"""

from __future__ import annotations

import os
import re
import stat

from cloudify.decorators import operation
from cloudify.exceptions import NonRecoverableError

from ec2 import constants, utils

KEY_NAME_PATTERN = re.compile(r"^[\x20-\x7e]{1,255}$")


# --- operations -------------------------------------------------------------


@operation(resumable=True)
def create(ctx, **_):
    key_name, key_path, public_key = validate(ctx)
    client = utils.client_for(ctx.node)
    if utils.adopt_external(ctx, "key pair", lambda name: _find(ctx, client, name)):
        return

    # A rerun after an interrupted create starts afresh: the old private key may be lost.
    _remove_own_key_and_file(ctx, client)
    tags = utils.creation_tags(ctx, "key-pair")
    if public_key:
        utils.call(
            ctx, client, "import_key_pair", KeyName=key_name, PublicKeyMaterial=public_key, TagSpecifications=tags
        )
        utils.record(ctx.instance, **{constants.AWS_RESOURCE_ID: key_name})
        ctx.logger.info(f"Imported public key as key pair {key_name}.")
        return

    created = utils.call(ctx, client, "create_key_pair", KeyName=key_name, TagSpecifications=tags)
    # Saved before the file is written, so that an interrupted create leaves both recorded.
    utils.record(ctx.instance, save=True, **{constants.AWS_RESOURCE_ID: key_name, constants.KEY_FILE_WRITTEN: key_path})
    try:
        write_private_key(key_path, created["KeyMaterial"])
    except Exception as error:
        utils.call(ctx, client, "delete_key_pair", not_found_ok=True, KeyName=key_name)
        utils.forget(ctx.instance, constants.AWS_RESOURCE_ID, constants.KEY_FILE_WRITTEN, save=True)
        raise NonRecoverableError(
            f"{utils.node_label(ctx)}: could not write the private key to '{key_path}' ({error}); "
            f"key pair {key_name} was deleted again. Fix: make property 'private_key_path' "
            "point into a writable folder."
        ) from None
    ctx.logger.info(f"Created key pair {key_name}; private key saved to {key_path}.")


@operation(resumable=True)
def delete(ctx, **_):
    client = utils.client_for(ctx.node)
    if utils.release_external(ctx, "key pair", lambda name: _find(ctx, client, name)):
        return
    _remove_own_key_and_file(ctx, client)


@operation(resumable=True)
def creation_validation(ctx, **_):
    key_name, key_path, _public_key = validate(ctx)
    client = utils.client_for(ctx.node)
    utils.check_existence(
        ctx,
        "key pair",
        lambda name: _find(ctx, client, name),
        key_name,
        lambda: bool(utils.find_own(ctx, client, "describe_key_pairs", "KeyPairs")),
    )
    ctx.logger.info(f"Key pair {key_name} at {key_path} is valid.")


# --- validation -------------------------------------------------------------


def validate(ctx) -> tuple[str, str, str]:
    """Checks the properties before AWS is called; returns the key name, the
    private key path and the public key to import (empty: AWS makes the pair)."""
    key_path = private_key_path(ctx)
    key_name = key_pair_name(ctx, key_path)
    public_key = _public_key_material(ctx)
    utils.validate_tags(ctx)
    if utils.use_external(ctx.node):
        _check_existing_key_file(ctx, key_path)
    elif (
        not public_key
        and os.path.lexists(key_path)
        and key_path != ctx.instance.runtime_properties.get(constants.KEY_FILE_WRITTEN)
    ):
        raise utils.bad_input(
            ctx,
            "private_key_path",
            f"points at '{key_path}', which already exists",
            "choose a path that does not exist yet (the plugin never overwrites a key file), "
            "or set use_external_resource to true to use an existing key pair",
        )
    return key_name, key_path, public_key


def private_key_path(ctx) -> str:
    raw = str(ctx.node.properties.get("private_key_path") or "").strip()
    if not raw:
        raise utils.bad_input(
            ctx, "private_key_path", "is empty", "set it to the file where the private key is (to be) stored"
        )
    return os.path.abspath(os.path.expanduser(raw))


def key_pair_name(ctx, key_path: str) -> str:
    """resource_id; else the key file's base name; else deployment and instance ids."""
    name = utils.resource_id(ctx.node)
    if name:
        if not KEY_NAME_PATTERN.match(name):
            raise utils.bad_input(
                ctx,
                "resource_id",
                f"is not a valid key pair name ({name!r})",
                "use at most 255 printable ASCII characters",
            )
        return name
    if utils.use_external(ctx.node):
        raise utils.bad_input(
            ctx,
            "resource_id",
            "is empty while use_external_resource is true",
            "set resource_id to the name of the existing key pair",
        )
    base = os.path.splitext(os.path.basename(key_path))[0].strip()
    return base if KEY_NAME_PATTERN.match(base) else utils.generated_name(ctx)


def _check_existing_key_file(ctx, key_path: str) -> None:
    try:
        info = os.stat(key_path)
    except FileNotFoundError:
        raise utils.bad_input(
            ctx,
            "private_key_path",
            f"points at '{key_path}', which does not exist",
            "put the existing key pair's private key there, with mode 0600",
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise utils.bad_input(
            ctx, "private_key_path", f"points at '{key_path}', which is not a file", "point it at the private key file"
        )
    if info.st_mode & 0o077:
        raise utils.bad_input(
            ctx,
            "private_key_path",
            f"points at '{key_path}', which others can access (mode {stat.S_IMODE(info.st_mode):04o})",
            f"run: chmod 600 {key_path}",
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise utils.bad_input(
            ctx,
            "private_key_path",
            f"points at '{key_path}', which belongs to another user",
            "give the file to the user that runs the plugin",
        )


def _public_key_material(ctx) -> str:
    """The optional public key to import, given inline or as a file path."""
    material = str(ctx.node.properties.get("public_key_material") or "").strip()
    path = str(ctx.node.properties.get("public_key_path") or "").strip()
    if material and path:
        raise utils.bad_input(
            ctx, "public_key_path", "is set together with public_key_material", "set only one of them"
        )
    if path:
        try:
            with open(os.path.expanduser(path), encoding="ascii") as handle:
                material = handle.read().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise utils.bad_input(
                ctx, "public_key_path", f"cannot be read ({error})", "point it at an OpenSSH public key file"
            ) from None
    if material and not material.startswith(("ssh-rsa ", "ssh-ed25519 ", "ecdsa-sha2-")):
        raise utils.bad_input(
            ctx,
            "public_key_material" if not path else "public_key_path",
            "does not hold an OpenSSH public key",
            "give a key such as 'ssh-ed25519 AAAA... comment'",
        )
    return material


# --- AWS and files ----------------------------------------------------------


def _find(ctx, client, key_name: str) -> str | None:
    return key_name if utils.existing(ctx, client, "describe_key_pairs", "KeyPairs", KeyNames=[key_name]) else None


def _remove_own_key_and_file(ctx, client) -> None:
    """Deletes the key pair this node instance made (recorded, or found by its
    ownership tags after an interrupted create) and the file create wrote."""
    for key_name in utils.own_ids(ctx, client, "describe_key_pairs", "KeyPairs", "KeyName"):
        utils.call(ctx, client, "delete_key_pair", not_found_ok=True, KeyName=key_name)
        ctx.logger.info(f"Deleted key pair {key_name}.")
    key_file = ctx.instance.runtime_properties.get(constants.KEY_FILE_WRITTEN)
    if key_file and os.path.lexists(key_file):
        try:
            os.remove(key_file)
        except OSError as error:
            raise utils.bad_input(
                ctx, "private_key_path", f"names '{key_file}', which cannot be removed ({error})", "remove it by hand"
            ) from None
        ctx.logger.info(f"Removed private key file {key_file}.")
    utils.forget(ctx.instance, constants.AWS_RESOURCE_ID, constants.KEY_FILE_WRITTEN)


def write_private_key(path: str, material: str) -> None:
    """Writes a private key atomically with mode 0600; never overwrites a file.

    The key goes to a temporary file created with mode 0600 in the same folder,
    which is then hard-linked to the final name (that fails if the name exists)
    and unlinked. Readers never see a partial or loosely-permitted file.
    """
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
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
