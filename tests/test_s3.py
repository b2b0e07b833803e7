"""Object-store outputs against a real S3 API (moto's server on 127.0.0.1, tests/s3.py): build,
resume after SIGKILL, lock contention, verify, report and a Ray build, each compared byte for
byte with a local build of the same recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthfer.io.folder import open_folder
from synthfer.io.shards import ShardStore
from tests.conftest import REPO, SMALL
from tests.s3 import BUCKET, objects

# 8 identities x 5 targets, one identity per shard: 8 shards.
EIGHT = SMALL.replace("count: 4", "count: 8").replace("samples_per_shard: 10", "samples_per_shard: 5")
DATA = ("data/", "_synthfer/parts/", "manifest.parquet")


def _data(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k.startswith(DATA)}


def _local(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The EIGHT recipe built into a local folder: the bytes every s3 build must equal."""
    from typer.testing import CliRunner

    from synthfer.cli import app
    folder = tmp_path_factory.mktemp("local")
    recipe = folder / "recipe.yaml"
    recipe.write_text(EIGHT)
    result = CliRunner().invoke(app, ["build", str(recipe), "-q", "--output", str(folder / "out")])
    assert result.exit_code == 0, result.output
    return recipe, _data(_local(folder / "out"))


def _build(*args: str, kill: tuple[str, str, int] | None = None) -> subprocess.CompletedProcess:
    """`synthfer build` in a child process (optionally with a kill point, tests/killpoints.py)."""
    prefix = ["-m", "tests.killpoints", *kill[:2], str(kill[2]), "--"] if kill else ["-m", "synthfer"]
    return subprocess.run([sys.executable, *prefix, "build", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO, timeout=600)


def test_build_to_s3_equals_local_build(cli, s3_endpoint, reference):
    recipe, local = reference
    url = f"s3://{BUCKET}/plain"
    result = cli("build", recipe, "-q", "--output", url)
    assert result.exit_code == 0, result.output
    stored = objects(url)
    assert _data(stored) == local
    assert {"run.json", "_synthfer/fingerprint.json", "README.md"} <= set(stored)
    assert not [k for k in stored if ".lease-" in k or ".tmp-" in k]   # the lease is released, no temporaries
    assert json.loads(stored["run.json"])["recipe"]["output"]["dir"] == url


def test_sigkill_mid_commit_then_resume_is_byte_identical(s3_endpoint, reference):
    recipe, local = reference
    url = f"s3://{BUCKET}/killed"
    # writes: fingerprint.json, then files + marker per shard; the 6th is the shards' 5th: with one
    # lane shard 2's files without their marker. With two lanes committing side by side the order
    # varies, and the other lane may finish one more write before the kill lands: some shards are
    # marked, and each lane may have left one shard's files unmarked
    killed = _build(str(recipe), "-q", "--output", url, kill=("synthfer.io.object_folder:ObjectFolder.write_all", "after", 6))
    assert killed.returncode == -9, killed.stderr
    store = ShardStore(open_folder(url))
    visible = store.marker_indices()
    assert 1 <= len(visible) <= 3, visible
    for index in visible:
        assert store.problem(index, store.read_marker(index), hashes=True) is None
    marked = {rel for index in visible for rel in store.read_marker(index)["files"]}
    unmarked = {k for k in objects(url) if k.startswith("data/") and k not in marked}
    assert len(unmarked) <= 2                       # at most one shard per lane, invisible to readers
    assert "manifest.parquet" not in objects(url)
    resumed = _build(str(recipe), "--output", url)   # the dead build's lease names a dead pid here
    assert resumed.returncode == 0, resumed.stderr
    assert _data(objects(url)) == local


def test_a_live_lease_refuses_a_second_build_and_an_expired_one_is_taken_over(cli, s3_endpoint, reference):
    recipe, local = reference
    url = f"s3://{BUCKET}/leased"
    folder = open_folder(url)
    holder = {"pid": 4242, "host": "other-node", "started": "2026-11-29T02:30:00Z", "token": "x",
              "expires": time.time() + 600, "generation": 0}
    folder.write(".lease-000000.json", json.dumps(holder).encode())
    refused = cli("build", recipe, "-q", "--output", url)
    assert refused.exit_code == 75
    assert refused.stderr.startswith(f"Error: {url}: another build holds the lease (pid 4242 on other-node, "
                                     f"started 2026-11-29T02:30:00Z, expires in ")
    assert not any(k.startswith(DATA) for k in objects(url))   # nothing written
    folder.write(".lease-000000.json", json.dumps(dict(holder, expires=time.time() - 1)).encode())
    taken = cli("build", recipe, "-q", "--output", url)
    assert taken.exit_code == 0, taken.output
    assert _data(objects(url)) == local
    assert not [k for k in objects(url) if ".lease-" in k]


def test_verify_and_report_read_through_s3(cli, s3_endpoint, reference):
    recipe, _ = reference
    url = f"s3://{BUCKET}/checked"
    assert cli("build", recipe, "-q", "--output", url).exit_code == 0
    ok = cli("verify", url)
    assert ok.exit_code == 0 and ok.stdout.startswith(f"OK: {url}: 8/8 shards valid, 40 manifest rows")
    report = cli("report", url)
    assert report.exit_code == 0, report.output
    assert report.stdout.strip() == f"report: {url}/report/report.html"
    assert objects(url)["report/report.html"].startswith(b"<!DOCTYPE html>")
    folder = open_folder(url)
    tar = bytearray(folder.read_bytes("data/val-000003.tar"))
    tar[600] ^= 0xFF
    folder.write("data/val-000003.tar", bytes(tar))
    damaged = cli("verify", url)
    assert damaged.exit_code == 1
    assert "Problem: shard-000003: data/val-000003.tar does not match its sha256" in damaged.stderr


def test_ray_build_to_s3_equals_local_build(cli, s3_endpoint, reference):
    pytest.importorskip("ray")
    recipe, local = reference
    url = f"s3://{BUCKET}/ray"
    result = cli("build", recipe, "-q", "--output", url, "--set", "execution.executor=ray",
                 "--set", "execution.ray.workers=2")
    assert result.exit_code == 0, result.output
    assert _data(objects(url)) == local


def test_storage_mistakes_are_one_line(cli, s3_endpoint, write_recipe):
    recipe = write_recipe(SMALL)
    missing = cli("build", recipe, "-q", "--output", "s3://no-such-bucket/x")
    assert missing.exit_code == 1
    assert missing.stderr == ("Error: s3://no-such-bucket/x: cannot create the output folder: no such bucket "
                              "(synthfer does not create buckets)\n")
    unknown = cli("build", recipe, "-q", "--output", "foo://bucket/x")
    assert unknown.exit_code == 2
    assert unknown.stderr == ("Error: --output foo://bucket/x: output.dir: unknown storage protocol foo:// "
                              "(local paths, s3://, gs://, memory:// and other fsspec URLs)\n")

    # a protocol fsspec knows but cannot open from a URL alone: one line, no "Exception ignored" report
    ftp = subprocess.run([sys.executable, "-m", "synthfer", "build", str(recipe), "-q", "--output", "ftp://host/x"],
                         capture_output=True, text=True, timeout=300)
    assert ftp.returncode == 2, ftp.stderr
    assert ftp.stderr == ("Error: ftp://host/x: ftp:// cannot be opened as an output (FTPFileSystem.__init__() missing 1 "
                          "required positional argument: 'host'); synthfer writes to local folders and object stores "
                          "(s3://, gs://)\n")


def test_synthfer_data_reads_an_s3_output(cli, s3_endpoint, reference):
    import io

    import pyarrow.parquet as pq
    import torch

    import synthfer.data as sd
    recipe, _ = reference
    url = f"s3://{BUCKET}/loader"
    assert cli("build", recipe, "-q", "--output", url).exit_code == 0
    rows = pq.read_table(io.BytesIO(objects(url)["manifest.parquet"])).to_pylist()
    for split in ("train", "val"):   # the small recipe has no test split
        wanted = sum(r["status"] == "accepted" and r["split"] == split for r in rows)
        loader = torch.utils.data.DataLoader(sd.dataset(url, split=split, seed=0), batch_size=4, num_workers=2)
        assert sum(images.shape[0] for images, _ in loader) == wanted


def test_storage_errors_are_classified_by_status_not_by_their_text():
    # An object name like shard-000404 in a 503's message must not read as "not found" (a
    # remove would then pass silently) nor a lease number 412 as "taken".
    import errno

    from synthfer.io.object_folder import _classified as _call

    class ClientError(Exception):           # botocore's shape
        def __init__(self, status, code, message):
            super().__init__(message)
            self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}

    class HttpError(Exception):             # gcsfs's / aiohttp's shape
        def __init__(self, code, message):
            super().__init__(message)
            self.code = code

    def raising(err):
        def fn():
            raise err
        return fn

    cases = [(ClientError(412, "PreconditionFailed", "At least one of the pre-conditions failed"), FileExistsError),
             (ClientError(404, "NoSuchKey", "The specified key does not exist."), FileNotFoundError),
             (ClientError(503, "SlowDown", "shard-000404.done.json: please slow down"), None),
             (HttpError(412, "conditionNotMet"), FileExistsError),
             (HttpError(404, "No such object"), FileNotFoundError),
             (HttpError(503, "backend error for .lease-000412.json"), None),
             (RuntimeError("Not Found in 404 places"), None)]
    for err, kind in cases:
        with pytest.raises(OSError) as got:
            _call(raising(err))
        if kind is None:
            assert type(got.value) is OSError and got.value.errno == errno.EIO, err
        else:
            assert isinstance(got.value, kind), err


def test_a_store_that_fails_again_and_again_stops_the_build_and_a_blip_does_not(monkeypatch):
    # A call is tried ATTEMPTS times; a store that never answers is StoreUnavailable, which stops
    # the build (each shard would fail alike and be rendered again for nothing); a timeout counts.
    import errno

    from synthfer.executors.core import classify
    from synthfer.io import object_folder
    from synthfer.io.object_folder import StoreUnavailable, _call

    monkeypatch.setattr(object_folder, "BACKOFF_S", (0.0,))
    calls = []

    def flaky(fails, exc):
        def fn(**kwargs):
            calls.append(kwargs)
            if len(calls) <= fails:
                raise exc
            return "ok"
        return fn

    assert _call(flaky(2, RuntimeError("Could not connect to the endpoint URL"))) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(StoreUnavailable) as err:
        _call(flaky(9, TimeoutError()), timeout=61.0)
    assert len(calls) == object_folder.ATTEMPTS and not isinstance(err.value, OSError)   # see StoreUnavailable
    assert str(err.value) == "the object store failed 3 times in a row: no answer within 61 s"
    failure = classify(err.value, "shard-000002")
    assert failure.fatal and failure.message == ("the object store failed 3 times in a row: no answer within 61 s; "
                                                 "committed shards are intact")
    calls.clear()
    with pytest.raises(FileNotFoundError):   # an answer: not tried again
        _call(flaky(9, FileNotFoundError(errno.ENOENT, "gone")))
    assert len(calls) == 1
    # once down, a folder's next calls (the build's last records, its lease) fail after one try
    from synthfer.io.object_folder import ObjectFolder

    class DeadStore:
        async_impl = False
        calls = 0

        def _strip_protocol(self, url):
            return url.split("://", 1)[1]

        def exists(self, path):
            DeadStore.calls += 1
            raise RuntimeError("Could not connect to the endpoint URL")

    folder = ObjectFolder("memory://dead")
    folder._fs = DeadStore()
    for expected in (3, 4):
        with pytest.raises(StoreUnavailable) as err:
            folder.exists("run.json")
        assert DeadStore.calls == expected
    assert str(err.value) == ("memory://dead: the object store failed 1 time: Could not connect to the endpoint URL")


def test_an_object_store_url_without_a_bucket_is_one_line(cli):
    from tests.conftest import REPO

    result = cli("build", REPO / "recipes" / "demo.yaml", "-o", "s3://")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("Error: --output s3://: output.dir: s3:// names no bucket or folder; write e.g. "
                                     "s3://bucket/path")


def test_a_store_that_never_answers_fails_every_kind_of_call_including_streamed_reads(monkeypatch):
    # A server that accepts connections and never answers: listings, reads and a streamed digest
    # (resume's sha256 check, verify) each end in StoreUnavailable, none hangs.
    import socket
    import threading

    from synthfer.errors import StoreUnavailable
    from synthfer.io import object_folder

    monkeypatch.setattr(object_folder, "CALL_TIMEOUT_S", 1.0)
    monkeypatch.setattr(object_folder, "BACKOFF_S", (0.0,))
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        options = {"endpoint_url": f"http://127.0.0.1:{server.getsockname()[1]}", "key": "k", "secret": "s"}
        for call in ("list", "read_bytes", "digest"):   # a fresh folder each: not yet known down
            folder = object_folder.ObjectFolder("s3://stalled/out", options)
            with pytest.raises(StoreUnavailable, match=r"^s3://stalled/out: the object store failed 3 times"):
                getattr(folder, call)("data/train-000000.tar")
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_a_store_failing_while_a_resume_reads_a_marker_stops_the_build_and_deletes_nothing(cli, write_recipe,
                                                                                           monkeypatch):
    # An unreadable marker because the store is down is no evidence the shard is broken: the
    # resume must stop (exit 1), not rebuild the shard or remove its files as garbage.
    from fsspec.implementations.memory import MemoryFileSystem

    from synthfer.io import object_folder

    monkeypatch.setattr(object_folder, "BACKOFF_S", (0.0,))
    recipe = write_recipe(SMALL)
    url = "memory://bkt-down/out"
    assert cli("build", recipe, "-q", "--output", url).exit_code == 0
    fs = MemoryFileSystem()
    before = {p: fs.cat_file(p) for p in fs.find("/bkt-down/out")}
    real = MemoryFileSystem.cat_file

    def down(self, path, *args, **kwargs):
        if path.endswith("shard-000001.done.json"):
            raise RuntimeError("503 SlowDown")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "cat_file", down)
    result = cli("build", recipe, "-q", "--output", url)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines()[-1] == (f"Error: {url}: the object store failed 3 times in a row: "
                                                      f"503 SlowDown")
    monkeypatch.setattr(MemoryFileSystem, "cat_file", real)
    after = {p: fs.cat_file(p) for p in fs.find("/bkt-down/out") if "lease" not in p}
    assert after == {p: b for p, b in before.items() if "lease" not in p}
    fs.rm("/bkt-down", recursive=True)


def test_a_lease_create_that_landed_but_reported_an_error_is_kept_not_called_taken(monkeypatch):
    # The create-if-absent PUT reached the store, the answer was lost (a 503, a timeout): the
    # retry finds the lease. It is this build's own, so the build holds it (not exit 75).
    from fsspec.implementations.memory import MemoryFileSystem

    from synthfer.io import object_folder
    from synthfer.io.layout import CURRENT
    from synthfer.io.lock import Lease

    monkeypatch.setattr(object_folder, "BACKOFF_S", (0.0,))
    real, failed = MemoryFileSystem.pipe_file, []

    def lossy(self, path, value, *args, **kwargs):
        result = real(self, path, value, *args, **kwargs)
        if kwargs.get("mode") == "create" and not failed:
            failed.append(path)
            raise RuntimeError("503 SlowDown")
        return result

    monkeypatch.setattr(MemoryFileSystem, "pipe_file", lossy)
    folder = object_folder.ObjectFolder("memory://bkt-lease/out")
    with Lease(folder, CURRENT) as lease:
        assert failed and lease.generation == 0 and Lease(folder, CURRENT).current_holder() is not None
    assert Lease(folder, CURRENT).current_holder() is None   # released on the way out
