"""The private key file's folders: made with mode 0700 when missing, and
removed again by delete when they are empty; folders that existed stay."""

import stat

from ec2 import keypair


def key_ctx(make_ctx, path):
    return make_ctx({"private_key_path": str(path)}, node_id="key", instance_id="key_1")


def test_missing_key_folders_are_made_private_to_the_user_at_every_level(make_ctx, tmp_path):
    keypair.create(ctx=key_ctx(make_ctx, tmp_path / "a" / "b" / "k.pem"))
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_delete_removes_the_folders_create_made(make_ctx, tmp_path):
    ctx = key_ctx(make_ctx, tmp_path / "a" / "b" / "k.pem")
    keypair.create(ctx=ctx)
    keypair.delete(ctx=ctx)
    assert list(tmp_path.iterdir()) == []


def test_delete_keeps_a_folder_that_existed_before(make_ctx, tmp_path):
    (tmp_path / "a").mkdir()
    ctx = key_ctx(make_ctx, tmp_path / "a" / "b" / "k.pem")
    keypair.create(ctx=ctx)
    keypair.delete(ctx=ctx)
    assert [path.name for path in tmp_path.iterdir()] == ["a"]
    assert list((tmp_path / "a").iterdir()) == []


def test_delete_keeps_a_made_folder_that_is_no_longer_empty(make_ctx, tmp_path):
    ctx = key_ctx(make_ctx, tmp_path / "a" / "k.pem")
    keypair.create(ctx=ctx)
    (tmp_path / "a" / "notes.txt").write_text("mine")
    keypair.delete(ctx=ctx)
    assert [path.name for path in (tmp_path / "a").iterdir()] == ["notes.txt"]
