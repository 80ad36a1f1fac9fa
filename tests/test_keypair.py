"""cloudify.aws.nodes.KeyPair, operation by operation, against the moto server."""

import os
import stat

import pytest
from cloudify.exceptions import NonRecoverableError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ec2 import keypair
from tests.support import interrupted_create, made_long_ago, owned_by

PUBLIC_KEY = (
    ed25519.Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    .decode()
)


def key_ctx(make_ctx, path, deployment_id="dep", instance_id="key_abc123", **properties):
    properties = {"private_key_path": str(path), "public_key_material": "", "public_key_path": "", **properties}
    return make_ctx(properties, deployment_id=deployment_id, instance_id=instance_id)


def key_names(ec2):
    return [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]


# --- naming -----------------------------------------------------------------


def test_the_key_name_is_resource_id_when_given(make_ctx, tmp_path, ec2):
    ctx = key_ctx(make_ctx, tmp_path / "file.pem", resource_id="named")
    keypair.create(ctx=ctx)
    assert key_names(ec2) == ["named"]


def test_without_resource_id_the_key_name_is_the_private_key_files_base_name(make_ctx, tmp_path, ec2):
    keypair.create(ctx=key_ctx(make_ctx, tmp_path / "from-file.pem"))
    assert key_names(ec2) == ["from-file"]


def test_an_unusable_base_name_falls_back_to_deployment_and_instance_ids(make_ctx, tmp_path, ec2):
    ctx = key_ctx(make_ctx, tmp_path / "ключ.pem", deployment_id="dep", instance_id="key_1")
    keypair.create(ctx=ctx)
    assert key_names(ec2) == ["dep-key_1"]


# --- create -----------------------------------------------------------------


def test_create_sets_aws_resource_id_to_the_key_name(make_ctx, tmp_path):
    ctx = key_ctx(make_ctx, tmp_path / "k.pem")
    keypair.create(ctx=ctx)
    assert ctx.instance.runtime_properties["aws_resource_id"] == "k"


def test_create_writes_the_private_key_with_mode_0600_even_with_a_permissive_umask(make_ctx, tmp_path):
    path = tmp_path / "k.pem"
    old = os.umask(0)
    try:
        keypair.create(ctx=key_ctx(make_ctx, path))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN")


def test_create_leaves_no_temporary_file_behind(make_ctx, tmp_path):
    keypair.create(ctx=key_ctx(make_ctx, tmp_path / "k.pem"))
    assert os.listdir(tmp_path) == ["k.pem"]


def test_create_expands_a_tilde_in_the_private_key_path(make_ctx, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    ctx = key_ctx(make_ctx, "~/keys/k.pem")
    keypair.create(ctx=ctx)
    assert (tmp_path / "keys" / "k.pem").exists()


def test_create_refuses_an_existing_private_key_path_before_calling_aws(make_ctx, tmp_path, calls, ec2):
    path = tmp_path / "k.pem"
    path.write_text("precious")
    with pytest.raises(NonRecoverableError) as error:
        keypair.create(ctx=key_ctx(make_ctx, path))
    assert "'private_key_path'" in str(error.value) and "node 'node'" in str(error.value)
    assert calls.operations == []
    assert path.read_text() == "precious"


def test_create_never_overwrites_a_file_that_appears_meanwhile(tmp_path):
    path = tmp_path / "k.pem"
    path.write_text("precious")
    with pytest.raises(FileExistsError):
        keypair.write_private_key(str(path), "secret")
    assert path.read_text() == "precious"
    assert os.listdir(tmp_path) == ["k.pem"]


def test_when_writing_the_file_fails_the_key_pair_is_deleted(make_ctx, tmp_path, ec2):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(NonRecoverableError, match="private_key_path"):
        keypair.create(ctx=key_ctx(make_ctx, blocker / "k.pem"))
    assert key_names(ec2) == []


def test_create_applies_tags_in_the_same_call(make_ctx, tmp_path, ec2, calls):
    keypair.create(ctx=key_ctx(make_ctx, tmp_path / "k.pem", tags={"team": "qa"}))
    (key,) = ec2.describe_key_pairs()["KeyPairs"]
    assert {"Key": "team", "Value": "qa"} in key["Tags"]
    assert "CreateTags" not in calls.operations


def test_the_private_key_is_not_stored_in_runtime_properties(make_ctx, tmp_path):
    ctx = key_ctx(make_ctx, tmp_path / "k.pem")
    keypair.create(ctx=ctx)
    assert "PRIVATE KEY" not in repr(ctx.instance.runtime_properties)


def test_a_public_key_is_imported_and_no_private_file_is_written(make_ctx, tmp_path, ec2):
    path = tmp_path / "k.pem"
    keypair.create(ctx=key_ctx(make_ctx, path, public_key_material=PUBLIC_KEY))
    assert key_names(ec2) == ["k"]
    assert not path.exists()


def test_a_public_key_can_be_read_from_a_file(make_ctx, tmp_path, ec2):
    public = tmp_path / "id.pub"
    public.write_text(PUBLIC_KEY + "\n")
    keypair.create(ctx=key_ctx(make_ctx, tmp_path / "k.pem", public_key_path=str(public)))
    assert key_names(ec2) == ["k"]


def test_a_malformed_public_key_is_refused_before_calling_aws(make_ctx, tmp_path, calls):
    with pytest.raises(NonRecoverableError, match="public_key_material"):
        keypair.create(ctx=key_ctx(make_ctx, tmp_path / "k.pem", public_key_material="not a key"))
    assert calls.mutating == []


# --- delete -----------------------------------------------------------------


def test_delete_removes_the_key_pair_and_the_file_create_wrote(make_ctx, tmp_path, ec2):
    path = tmp_path / "k.pem"
    ctx = key_ctx(make_ctx, path)
    keypair.create(ctx=ctx)
    keypair.delete(ctx=ctx)
    assert key_names(ec2) == []
    assert not path.exists()
    assert ctx.instance.runtime_properties == {}


def test_delete_is_idempotent(make_ctx, tmp_path, ec2):
    ctx = key_ctx(make_ctx, tmp_path / "k.pem")
    keypair.create(ctx=ctx)
    made_long_ago(ctx.instance.runtime_properties)  # within its propagation window, delete would wait
    ec2.delete_key_pair(KeyName="k")
    keypair.delete(ctx=ctx)
    keypair.delete(ctx=ctx)
    assert key_names(ec2) == []


# --- external ---------------------------------------------------------------


@pytest.fixture
def existing_key(ec2, tmp_path):
    path = tmp_path / "existing.pem"
    path.write_text(ec2.create_key_pair(KeyName="existing")["KeyMaterial"])
    path.chmod(0o600)
    return path


def test_an_external_key_pair_is_recorded_when_it_exists(make_ctx, existing_key, calls):
    ctx = key_ctx(make_ctx, existing_key, use_external_resource=True, resource_id="existing")
    keypair.create(ctx=ctx)
    assert ctx.instance.runtime_properties["aws_resource_id"] == "existing"
    assert calls.mutating == []


def test_an_external_key_pair_missing_in_aws_fails(make_ctx, existing_key):
    ctx = key_ctx(make_ctx, existing_key, use_external_resource=True, resource_id="absent")
    with pytest.raises(NonRecoverableError, match="resource_id"):
        keypair.create(ctx=ctx)


def test_an_external_key_pair_needs_its_private_key_file(make_ctx, existing_key, tmp_path):
    ctx = key_ctx(make_ctx, tmp_path / "elsewhere.pem", use_external_resource=True, resource_id="existing")
    with pytest.raises(NonRecoverableError, match="does not exist"):
        keypair.create(ctx=ctx)


def test_an_external_key_file_readable_by_others_is_refused(make_ctx, existing_key):
    existing_key.chmod(0o644)
    ctx = key_ctx(make_ctx, existing_key, use_external_resource=True, resource_id="existing")
    with pytest.raises(NonRecoverableError, match="chmod 600"):
        keypair.create(ctx=ctx)


def test_an_external_key_file_with_stricter_mode_is_accepted(make_ctx, existing_key):
    existing_key.chmod(0o400)
    ctx = key_ctx(make_ctx, existing_key, use_external_resource=True, resource_id="existing")
    keypair.create(ctx=ctx)
    assert ctx.instance.runtime_properties["aws_resource_id"] == "existing"


def test_deleting_an_external_key_pair_keeps_the_key_and_the_file(make_ctx, existing_key, ec2):
    ctx = key_ctx(make_ctx, existing_key, use_external_resource=True, resource_id="existing")
    keypair.create(ctx=ctx)
    keypair.delete(ctx=ctx)
    assert key_names(ec2) == ["existing"]
    assert existing_key.exists()
    assert "aws_resource_id" not in ctx.instance.runtime_properties


# --- creation_validation ----------------------------------------------------


def test_validation_of_a_new_key_passes_when_name_and_path_are_free(make_ctx, tmp_path, calls):
    keypair.creation_validation(ctx=key_ctx(make_ctx, tmp_path / "free.pem"))
    assert calls.dry_runs == ["CreateKeyPair"]
    assert calls.mutating == []
    assert not (tmp_path / "free.pem").exists()


def test_validation_of_a_new_key_fails_when_the_name_is_taken(make_ctx, tmp_path, ec2):
    ec2.create_key_pair(KeyName="taken")
    with pytest.raises(NonRecoverableError, match="already exists"):
        keypair.creation_validation(ctx=key_ctx(make_ctx, tmp_path / "taken.pem"))


def test_validation_of_a_new_key_fails_when_the_path_exists(make_ctx, tmp_path):
    (tmp_path / "k.pem").write_text("")
    with pytest.raises(NonRecoverableError, match="private_key_path"):
        keypair.creation_validation(ctx=key_ctx(make_ctx, tmp_path / "k.pem"))


def test_validation_of_an_external_key_passes_when_key_and_file_exist(make_ctx, existing_key, calls):
    ctx = key_ctx(make_ctx, existing_key, use_external_resource=True, resource_id="existing")
    keypair.creation_validation(ctx=ctx)
    assert calls.operations == ["DescribeKeyPairs"]  # found, and nothing else: an external key is not made
    assert ctx.instance.runtime_properties == {}


def test_validation_of_an_external_key_fails_when_the_key_does_not_exist(make_ctx, existing_key):
    with pytest.raises(NonRecoverableError, match="does not exist"):
        keypair.creation_validation(ctx=key_ctx(make_ctx, existing_key, use_external_resource=True, resource_id="nope"))


def test_private_key_path_is_required(make_ctx):
    with pytest.raises(NonRecoverableError, match="'private_key_path' is empty"):
        keypair.creation_validation(ctx=make_ctx({"private_key_path": ""}))


def test_a_rerun_after_a_create_that_died_before_writing_the_file_makes_a_fresh_key(make_ctx, tmp_path, ec2):
    path = tmp_path / "k.pem"
    ctx = key_ctx(make_ctx, path)
    ec2.create_key_pair(KeyName="k", TagSpecifications=owned_by(ctx, "key-pair"))
    keypair.create(ctx=ctx)
    assert key_names(ec2) == ["k"]
    assert path.exists()


def test_a_key_pair_of_another_node_instance_is_never_removed(make_ctx, tmp_path, ec2):
    ec2.create_key_pair(KeyName="k")
    with pytest.raises(NonRecoverableError, match="Duplicate"):
        keypair.create(ctx=key_ctx(make_ctx, tmp_path / "k.pem"))
    assert key_names(ec2) == ["k"]


def test_a_rerun_after_a_create_that_died_after_writing_the_file_makes_a_fresh_key(make_ctx, tmp_path, ec2):
    path = tmp_path / "k.pem"
    ctx = key_ctx(make_ctx, path)
    keypair.create(ctx=ctx)
    old_key = path.read_text()
    keypair.create(ctx=ctx)
    assert key_names(ec2) == ["k"]
    assert path.read_text() != old_key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_delete_after_a_create_that_died_before_recording_finds_the_key_by_its_tags(make_ctx, tmp_path, ec2):
    ctx = key_ctx(make_ctx, tmp_path / "k.pem")
    interrupted_create(ctx)
    ec2.create_key_pair(KeyName="k", TagSpecifications=owned_by(ctx, "key-pair"))
    keypair.delete(ctx=ctx)
    assert key_names(ec2) == []


def test_when_the_file_appears_meanwhile_it_is_kept_and_nothing_stays_recorded(make_ctx, tmp_path, ec2, monkeypatch):
    path = tmp_path / "k.pem"
    ctx = key_ctx(make_ctx, path)

    def someone_else_writes_first(target, material):
        path.write_text("theirs")
        raise FileExistsError(target)

    monkeypatch.setattr(keypair, "write_private_key", someone_else_writes_first)
    with pytest.raises(NonRecoverableError):
        keypair.create(ctx=ctx)
    keypair.delete(ctx=ctx)
    assert path.read_text() == "theirs"
    assert key_names(ec2) == []


def test_validation_accepts_the_key_an_interrupted_create_of_this_node_instance_left(make_ctx, tmp_path, ec2):
    ctx = key_ctx(make_ctx, tmp_path / "k.pem")
    interrupted_create(ctx)
    ec2.create_key_pair(KeyName="k", TagSpecifications=owned_by(ctx, "key-pair"))
    keypair.creation_validation(ctx=ctx)
    keypair.create(ctx=ctx)
    assert key_names(ec2) == ["k"]
