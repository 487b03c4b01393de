"""``run.storage``: a local path or a filesystem URI (here S3, served by moto on 127.0.0.1), written
through a local directory, read back, pruned, and probed before a run."""

from pathlib import Path

import pytest

from proctor.learner.storage import Storage, StorageError


def _write_checkpoint(storage: Storage, tag: str, payload: bytes) -> None:
    with storage.writing() as d:
        (d / "actor" / tag).mkdir(parents=True)
        (d / "actor" / tag / "states.pt").write_bytes(payload)
        (d / "actor" / "latest").write_text(tag)
        (d / "rng").mkdir(exist_ok=True)
        (d / "rng" / f"{tag}_rank0.pt").write_bytes(b"rng")


def _files(storage: Storage) -> dict[str, bytes]:
    with storage.reading() as d:
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "storage")
    uri, _ = request.getfixturevalue("s3_bucket")
    return uri.format(tmp_path.name)


def test_a_checkpoint_written_pruned_and_read_back(location):
    from proctor.learner.checkpoint import prune

    root = Storage(location)
    ckpt = Storage(root.child("checkpoint"))
    assert ckpt.local == ("://" not in location)
    _write_checkpoint(ckpt, "step1", b"one")
    _write_checkpoint(ckpt, "step2", b"two")
    assert set(_files(ckpt)) == {"actor/latest", "actor/step1/states.pt", "actor/step2/states.pt",
                                 "rng/step1_rank0.pt", "rng/step2_rank0.pt"}
    prune(ckpt, ["actor"], "step2")
    assert _files(ckpt) == {"actor/latest": b"step2", "actor/step2/states.pt": b"two", "rng/step2_rank0.pt": b"rng"}
    ckpt.write_text("driver.json", '{"iterations_done": 2}')
    assert Storage(root.child("checkpoint")).read_text("driver.json") == '{"iterations_done": 2}'
    assert root.exists("checkpoint/driver.json") and not root.exists("policy")


def test_the_probe_tells_a_shared_storage_from_a_node_local_one(location, tmp_path):
    token = Storage(location).probe()
    assert Storage(location).sees(token)
    assert not Storage(tmp_path / "another-disk").sees(token)  # what a rank on a node with its own disk reads
    Storage(location).clear_probe()
    assert not Storage(location).sees(token)


def test_a_storage_that_cannot_be_written_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StorageError, match=r"a-file/checkpoints.*cannot be written"):
        Storage(blocker / "checkpoints").probe()
    with pytest.raises(StorageError, match=r"run.storage='nosuchfs://x'"):
        Storage("nosuchfs://x")


def test_a_relative_run_dir_in_a_ray_job_is_taken_from_home(monkeypatch):
    from proctor.cluster.ray_local import job_path

    assert job_path("runs/a") == Path("runs/a")
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    assert job_path("runs/a") == Path.home() / "runs/a"
    assert job_path("/abs/a") == Path("/abs/a")
