"""What an unattended build must survive in a shared folder: leftovers of dead builds, planted
symbolic links, folders that are not synthfer's, edited or damaged records, repeated signals,
full disks. Each test is a regression test of a failure an independent torture run found."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synthfer.io.verify import verify
from tests.conftest import PARTS, REPO, SMALL, dataset_files, error_lines


def _one_error(result, code):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    return lines[0]


def _child(*args, kill=None, cwd=None, stdin=None):
    prefix = ["-m", "tests.killpoints", *kill, "--"] if kill else ["-m", "synthfer"]
    return subprocess.run([sys.executable, *prefix, *map(str, args)], capture_output=True, text=True, cwd=cwd or REPO,
                          input=stdin, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=900)


@pytest.fixture
def built(cli, write_recipe, tmp_path):
    recipe = write_recipe(SMALL)
    assert cli("build", recipe, "-q").exit_code == 0
    return recipe, tmp_path / "out"


# ---------------------------------------------------------------- leftovers and links


def test_temporaries_of_dead_builds_are_removed_whatever_their_pid_now_is(cli, built):
    recipe, out = built
    leftovers = [out / ".manifest.parquet.tmp-1", out / "_synthfer" / ".fingerprint.json.tmp-99999",
                 out / ".run.json.tmp-1", out / "data" / ".train-000000.tar.tmp-1",
                 out / PARTS / ".shard-000001.parquet.tmp-4f2a9c"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    assert cli("build", recipe, "-q").exit_code == 0
    assert [p for p in leftovers if p.exists()] == []   # pid 1 is alive, yet its "temporary" was no build's


def test_a_lock_symlink_is_never_followed(cli, write_recipe, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".lock").symlink_to(victim)
    recipe = write_recipe(SMALL)
    line = _one_error(cli("build", recipe), 1)
    assert line == (f"Error: {tmp_path / 'out' / '.lock'}: is a symbolic link; synthfer never follows links in an "
                    f"output folder; remove it")
    assert victim.read_text() == "precious"
    (tmp_path / "out" / ".lock").unlink()
    (tmp_path / "out" / ".lock").symlink_to(tmp_path / "created-by-a-link")   # dangling
    _one_error(cli("build", recipe), 1)
    assert not (tmp_path / "created-by-a-link").exists()


def test_links_planted_at_final_names_or_folders_redirect_nothing(cli, built, tmp_path):
    recipe, out = built
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / "run.json").unlink()
    (out / "run.json").symlink_to(victim)
    assert cli("build", recipe, "-q").exit_code == 0
    assert victim.read_text() == "precious" and not (out / "run.json").is_symlink()   # replaced, not followed
    # a linked folder (another output's data/, a shared report/): refused before anything is
    # removed, by a resume as by an overwrite, and nothing behind the link is touched
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(out / "data", elsewhere)
    (elsewhere / ".train-000050.tar.tmp-abcdef").write_text("someone else's")
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    shutil.rmtree(out / "data")
    (out / "data").symlink_to(elsewhere)
    for mode in ("resume", "overwrite"):
        line = _one_error(cli("build", recipe, "-q", "--mode", mode), 2)
        assert line == (f"Error: {out / 'data'}: is a symbolic link; synthfer never follows links in an output: "
                        f"make it a folder, or build elsewhere")
        assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before
    (out / "data").unlink()
    shared = tmp_path / "shared-report"
    shared.mkdir()
    (shared / "report.html").write_text("mine")
    (out / "report").symlink_to(shared)
    assert _one_error(cli("build", recipe, "-q", "--mode", "overwrite"), 2).startswith(f"Error: {out / 'report'}: ")
    assert (shared / "report.html").read_text() == "mine"
    (out / "report").unlink()
    os.rename(out / "_synthfer", tmp_path / "bookkeeping")   # the lock lives there: refused before it is taken
    (out / "_synthfer").symlink_to(tmp_path / "bookkeeping")
    assert _one_error(cli("build", recipe, "-q"), 2).startswith(f"Error: {out / '_synthfer'}: is a symbolic link")


def test_the_local_folder_refuses_a_linked_folder_on_the_way_to_any_file(tmp_path):
    # The last line of defence under every caller: list, read, remove and write below a link.
    from synthfer.io.local_folder import LocalFolder

    other = tmp_path / "other"
    other.mkdir()
    (other / "train-000000.tar").write_bytes(b"theirs")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "data").symlink_to(other)
    folder = LocalFolder(tmp_path / "out")
    for call in (lambda: folder.list("data"), lambda: folder.read_bytes("data/train-000000.tar"),
                 lambda: folder.remove("data/train-000000.tar"), lambda: folder.write("data/new.tar", b"x"),
                 lambda: folder.remove_temporaries(["data"])):
        with pytest.raises(OSError) as err:
            call()
        assert err.value.errno == errno.ELOOP and err.value.filename == str(tmp_path / "out" / "data")
    assert sorted(p.name for p in other.iterdir()) == ["train-000000.tar"]
    assert (other / "train-000000.tar").read_bytes() == b"theirs"


# ---------------------------------------------------------------- folders that are not synthfer's


def test_a_folder_with_a_foreign_run_json_is_not_an_output(cli, write_recipe, tmp_path):
    recipe = write_recipe(SMALL.replace("dir: out", "dir: ."))   # the output is the recipe's own folder
    (tmp_path / "run.json").write_text('{"mine": true}')
    line = _one_error(cli("build", recipe), 2)
    assert line.startswith(f"Error: {tmp_path}: output.dir is a non-empty folder that is not a synthfer output "
                           f"(it holds recipe.yaml, run.json); choose an empty or new folder")
    assert _one_error(cli("build", recipe, "--mode", "overwrite"), 2) == line   # overwrite refuses it too
    assert (tmp_path / "run.json").read_text() == '{"mine": true}'


def test_overwrite_deletes_only_what_synthfer_wrote(cli, built):
    recipe, out = built
    (out / "report").mkdir()
    foreign = {out / "data" / "mydata.tar": b"mine", out / PARTS / "config.json": b"{}",
               out / "report" / "notes.txt": b"notes", out / "README.txt": b"hello"}
    for path, data in foreign.items():
        path.write_bytes(data)
    (out / "report" / "metrics.md").write_text("an old report")
    assert cli("build", recipe, "-q", "--mode", "overwrite", "--set", "seed=8").exit_code == 0
    assert {p: p.read_bytes() for p in foreign} == foreign
    assert not (out / "report" / "metrics.md").exists()
    assert verify(out)[0] == []


def test_an_output_below_a_regular_file_is_a_usage_error(cli, write_recipe, tmp_path):
    (tmp_path / "afile").write_text("x")
    line = _one_error(cli("build", write_recipe(SMALL), "--output", tmp_path / "afile" / "out"), 2)
    assert line == (f"Error: {tmp_path / 'afile' / 'out'}: {tmp_path / 'afile'} (above output.dir) exists and "
                    f"is not a folder")


# ---------------------------------------------------------------- records edited or damaged


def test_an_edited_fingerprint_value_is_named(cli, built):
    recipe, out = built
    record = json.loads((out / "_synthfer" / "fingerprint.json").read_text())
    (out / "_synthfer" / "fingerprint.json").write_text(json.dumps(dict(record, fingerprint="0123456789abcdef")))
    line = _one_error(cli("build", recipe), 2)
    assert line.startswith(f"Error: {out / '_synthfer' / 'fingerprint.json'}: its fingerprint '0123456789abcdef' does not match "
                           f"its own inputs (")
    assert line.endswith("): the file was edited; use --mode overwrite or another --output")


def test_verify_finds_a_changed_value_in_the_manifest(cli, built):
    recipe, out = built
    path = out / "manifest.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[3]["target_valence"] = 0.25
    pq.write_table(table.from_pylist(rows, schema=table.schema), path)   # readable, metadata kept
    problems, _ = verify(out)
    assert problems == [f"shard-000000: manifest.parquet row {rows[3]['key']!r} differs from its part in "
                        f"target_valence (0.25, part {table.column('target_valence')[3].as_py()!r})"]


def test_a_damaged_shard_is_named_alone_not_paired_with_its_neighbour(cli, built):
    """With shard 0 invalid, the manifest's record of merged parts is compared by part name:
    it was compared by position, and the message then set shard 0's part against shard 1's."""
    recipe, out = built
    tar = next((out / "data").glob("*-000000.tar"))
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 1
    tar.write_bytes(bytes(data))
    problems, counts = verify(out)
    assert problems[0] == f"shard-000000: data/{tar.name} does not match its sha256"
    merged = [p for p in problems if "merged from other parts" in p]
    assert merged == ["manifest.parquet was merged from other parts than the committed shards (it lists "
                      "_synthfer/parts/shard-000000.parquet, which no valid committed shard has)"], problems
    assert counts["valid_shards"] == counts["shards"] - 1


def test_the_first_difference_of_merged_parts_is_found_by_name():
    from synthfer.io.verify import _first_difference

    a, b, c = ("p/0", "aaaaaaaaaaaaaaaa"), ("p/1", "bbbbbbbbbbbbbbbb"), ("p/2", "cccccccccccccccc")
    assert _first_difference([a, b, c], [a, c]) == "it lists p/1, which no valid committed shard has"
    assert _first_difference([a, c], [a, b, c]) == "it misses p/1"
    assert _first_difference([a, (b[0], "dddddddddddddddd"), c], [a, b, c]) == \
        "it lists p/1 with sha256 dddddddddddd, the shard has bbbbbbbbbbbb"
    assert _first_difference([a, a, b], [a, b]) == "it lists a part more than once"
    assert _first_difference([b, a], [a, b]) == "the same parts in another order"


def test_an_empty_marker_is_not_trusted(cli, built):
    recipe, out = built
    marker = out / PARTS / "shard-000001.done.json"
    marker.write_text(json.dumps(dict(json.loads(marker.read_text()), files={})))
    (out / PARTS / "shard-000001.parquet").unlink()
    assert "Problem: shard-000001: its marker lists no manifest part" in cli("verify", out).stderr
    rebuilt = cli("build", recipe)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "shard-000001: its marker lists no manifest part: rebuilding it" in rebuilt.stderr
    assert verify(out)[0] == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(["manifest.parquet", "_synthfer/parts/shard-000000.parquet",
                               "_synthfer/parts/shard-000001.parquet"]),
       position=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_verify_reports_every_bit_flip_that_changes_something(built, target, position, bit):
    from synthfer.io.local_folder import LocalFolder
    from synthfer.io.manifest import merged_from, read_manifest
    recipe, out = built
    path = out / target
    original = path.read_bytes()
    folder = LocalFolder(out)
    before = (read_manifest(folder, "manifest.parquet"), merged_from(folder, "manifest.parquet"))
    data = bytearray(original)
    data[int(position * len(data))] ^= 1 << bit
    path.write_bytes(bytes(data))
    try:
        problems, _ = verify(out)
        if not problems:   # nothing reported: then nothing a reader sees may have changed
            assert target == "manifest.parquet"
            after = (read_manifest(folder, "manifest.parquet"), merged_from(folder, "manifest.parquet"))
            assert after[0].equals(before[0]) and after[1] == before[1]
    finally:
        path.write_bytes(original)


def test_verify_during_a_build_says_a_build_is_running(cli, built):
    from synthfer.io.layout import CURRENT
    from synthfer.io.local_folder import LocalFolder
    from synthfer.io.lock import output_lock
    recipe, out = built
    with output_lock(LocalFolder(out), CURRENT):
        line = _one_error(cli("verify", out), 75)
    assert line.startswith(f"Error: {out}: a build is running (pid {os.getpid()} on ")
    assert line.endswith("), so nothing was checked; verify when it has finished")



def test_verify_of_a_missing_or_foreign_folder_says_so_and_writes_nothing(cli, tmp_path):
    """A read-only command: no .lock file is left in a folder that is not a synthfer output."""
    assert _one_error(cli("verify", tmp_path / "nothere"), 2) == f"Error: {tmp_path / 'nothere'}: no such folder"
    assert not (tmp_path / "nothere").exists()
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "thesis.tex").write_text("x")
    assert _one_error(cli("verify", tmp_path / "thesis"), 2) == (
        f"Error: {tmp_path / 'thesis'}: not a synthfer output (no _synthfer/parts/ and no manifest.parquet)")
    assert sorted(p.name for p in (tmp_path / "thesis").iterdir()) == ["thesis.tex"]

def test_verify_of_an_unreadable_tar_is_one_problem(cli, built, monkeypatch):
    from synthfer.io import local_folder
    recipe, out = built
    real = local_folder.LocalFolder.open

    def denied(self, rel):
        if rel.endswith("-000001.tar"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self._path(rel)))
        return real(self, rel)
    monkeypatch.setattr(local_folder.LocalFolder, "open", denied)
    result = cli("verify", out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Problem: shard-000001: cannot be read (Permission denied)" in result.stderr


# ---------------------------------------------------------------- signals, full disks, odd inputs


def test_repeated_sigterm_during_a_commit_lets_the_commit_finish(write_recipe, tmp_path):
    recipe = write_recipe(SMALL.replace("count: 4", "count: 12"))
    # _write_temp calls: 1 fingerprint.json, then the first commit's tar (2), part (3), marker (4):
    # two SIGTERMs land while a shard is being committed (shard 0 on a GPU's writer thread; on a
    # CPU whichever of the two lanes commits first)
    proc = _child("build", recipe, "-q", kill=("synthfer.io.local_folder:LocalFolder._write_temp", "before", "2:SIGTERM",
                                               "synthfer.io.local_folder:LocalFolder._write_temp", "before", "3:SIGTERM"))
    assert proc.returncode == 143, proc.stderr
    assert error_lines(proc.stderr) == ["Error: SIGTERM: interrupted; committed shards are intact, run again to finish"]
    assert list((tmp_path / "out" / PARTS).glob("shard-*.done.json"))   # the commit under way finished
    assert not list((tmp_path / "out").rglob("*.tmp-*"))
    from tests.crash import violations
    assert violations(tmp_path / "out") == []


def test_a_signal_before_the_build_starts_has_the_documented_code(write_recipe, tmp_path):
    proc = _child("build", write_recipe(SMALL), kill=("synthfer.models.load:load_models", "before", "1:SIGINT"))
    assert proc.returncode == 130
    assert error_lines(proc.stderr) == ["Error: SIGINT: interrupted; committed shards are intact, run again to finish"]
    assert not (tmp_path / "out").exists()


def test_a_full_disk_when_taking_the_lock_is_one_line(cli, write_recipe, monkeypatch):
    from synthfer.io import lock
    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(lock.os, "pwrite", full)
    line = _one_error(cli("build", write_recipe(SMALL)), 1)
    assert line.endswith("/out/.lock: cannot write the build lock: No space left on device")


def test_convert_to_a_read_only_destination_is_one_line(cli, tmp_path, monkeypatch):
    from synthfer.io import local_folder
    from tests import checkpoint_files as cf
    src = tmp_path / "g.pt"
    cf.write_rosinality_pt(src, cf.random_generator())
    def read_only(path, flags, mode=0o777):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    monkeypatch.setattr(local_folder.os, "open", read_only)
    line = _one_error(cli("models", "convert", src, tmp_path / "g.safetensors"), 1)
    assert line == f"Error: {tmp_path / 'g.safetensors'}: cannot write: Read-only file system"


def test_a_fifo_is_refused_and_dash_reads_standard_input(cli, write_recipe, tmp_path):
    fifo = tmp_path / "recipe.fifo"
    os.mkfifo(fifo)
    assert _one_error(cli("validate", fifo), 2) == (f"Error: {fifo}: not a regular file; give a recipe file, or - "
                                                    f"for standard input")
    assert _one_error(cli("models", "info", fifo), 2) == f"Error: {fifo}: not a regular file"
    work = tmp_path / "here"
    work.mkdir()
    proc = _child("build", "-", "-q", cwd=work, stdin=SMALL)
    assert proc.returncode == 0, proc.stderr
    assert (work / "out" / "manifest.parquet").exists()   # relative to the current folder, not /dev


def test_help_lists_the_exit_codes(cli):
    text = " ".join(cli("--help").stdout.split())
    assert "70 internal error (please report), 75 output locked by another build, 130 / 143 interrupted" in text


def test_a_build_stops_before_committing_once_its_lease_is_expired_gone_or_taken(tmp_path):
    # Every commit checks the lease first: a build whose lease was not renewed in time (store
    # unreachable), was removed by a build that took it over and finished, or was taken over,
    # must not publish another shard.
    import time

    from synthfer.errors import LockedError
    from synthfer.io.layout import CURRENT
    from synthfer.io.local_folder import LocalFolder
    from synthfer.io.lock import Lease, check_lease

    folder = LocalFolder(tmp_path / "out")
    folder.ensure()
    with Lease(folder, CURRENT) as lease:
        check_lease(folder, CURRENT)   # fresh: fine
        rel = CURRENT.lease(lease.generation)
        record = json.loads(folder.read_bytes(rel))
        folder.write(rel, json.dumps(dict(record, expires=time.time() - 1)).encode())
        with pytest.raises(LockedError, match=r"this build's lease expired \(not renewed within 120 s\); this "
                                              r"build stops so that no two builds write at once; run it again"):
            check_lease(folder, CURRENT)
        folder.remove(rel)
        with pytest.raises(LockedError, match="this build's lease is gone"):
            check_lease(folder, CURRENT)
        folder.write(CURRENT.lease(lease.generation + 1), json.dumps(dict(record, expires=time.time() + 99)).encode())
        with pytest.raises(LockedError, match="another build took over the lease; this build stops"):
            check_lease(folder, CURRENT)


def test_a_local_lease_build_lets_go_of_its_file_lock_only_after_its_lease_is_removed(tmp_path, monkeypatch):
    # Else a build that gets the file lock in between still sees a live lease and exits 75.
    from synthfer.io.layout import CURRENT
    from synthfer.io.local_folder import LocalFolder
    from synthfer.io.lock import FlockLock, Lease

    folder = LocalFolder(tmp_path / "out")
    folder.ensure()
    seen = []
    release = FlockLock.__exit__

    def watched(self, *exc):
        seen.append(Lease(folder, CURRENT).current_holder())
        return release(self, *exc)

    monkeypatch.setattr(FlockLock, "__exit__", watched)
    with Lease(folder, CURRENT) as lease:
        assert lease._flock is not None
    assert seen == [None]


def test_a_lease_that_cannot_be_read_for_a_moment_fails_the_commit_not_the_build(tmp_path, monkeypatch):
    # A store's transient error (503, EIO) reading the build's own lease is an OSError the shard's
    # retry handles, not "the lease is gone" (exit 75, which cron is told to ignore).
    import errno

    from synthfer.io.layout import CURRENT
    from synthfer.io.local_folder import LocalFolder
    from synthfer.io.lock import Lease, check_lease

    folder = LocalFolder(tmp_path / "out")
    folder.ensure()
    with Lease(folder, CURRENT) as lease:
        rel = CURRENT.lease(lease.generation)
        real = LocalFolder.read_bytes

        def flaky(self, name):
            if name == rel:
                raise OSError(errno.EIO, "Input/output error")
            return real(self, name)

        monkeypatch.setattr(LocalFolder, "read_bytes", flaky)
        with pytest.raises(OSError, match="Input/output error"):
            check_lease(folder, CURRENT)
        monkeypatch.setattr(LocalFolder, "read_bytes", real)
        check_lease(folder, CURRENT)


def test_a_same_size_damaged_part_under_trust_markers_is_one_line_and_a_full_check_repairs_it(cli, built):
    # --trust-markers compares sizes only, so a part damaged in place reaches the manifest merge:
    # one line naming it and the way out (exit 1), never "internal error"; the sha256 check of a
    # plain rerun rebuilds the shard.
    recipe, out = built
    clean = dataset_files(out)
    part = sorted((out / "_synthfer" / "parts").glob("*.parquet"))[0]
    data = bytearray(part.read_bytes())
    data[-12:-8] = b"\xff\xff\xff\xff"   # the footer length: no longer Parquet, same size
    part.write_bytes(bytes(data))
    line = _one_error(cli("build", recipe, "-q", "--trust-markers"), 1)
    rel = part.relative_to(out).as_posix()
    assert line.startswith(f"Error: {out}: ") and f"{rel}: damaged (not a synthfer manifest (" in line
    assert "; run the build again without --trust-markers, which checks sha256 and rebuilds it" in line
    assert cli("build", recipe, "-q").exit_code == 0
    assert dataset_files(out) == clean


def test_a_filter_change_says_whether_shards_are_re_decided_or_rebuilt(cli, built):
    # A threshold re-decides stored scores; a skip band changes which samples are rendered at all
    # (it is in the shard fingerprint), so every shard is rebuilt and the note must say so.
    recipe, out = built
    kept = cli("build", recipe, "--set", "output.keep_rejected=true")
    assert kept.exit_code == 0, kept.output
    assert "only what decides samples changed (recipe.output.keep_rejected: " in " ".join(kept.stderr.split())
    assert "committed shards are re-decided from their stored scores" in " ".join(kept.stderr.split())
    band = cli("build", recipe, "--set", "output.keep_rejected=true",
               "--set", "filters.failure_bands=[{from_deg: 190, to_deg: 220, action: skip}]")
    assert band.exit_code == 0, band.output
    text = " ".join(band.stderr.split())
    assert "the filters changed which samples are rendered (recipe.filters.failure_bands" in text
    assert "committed shards are rebuilt" in text and "re-decided" not in text


def test_verify_names_a_shard_another_recipe_wrote(cli, built):
    # A worker of a killed build that kept running could commit a shard of its recipe into the
    # next build's output: verify must not call that output whole.
    _, out = built
    marker = sorted((out / "_synthfer" / "parts").glob("*.done.json"))[0]
    record = json.loads(marker.read_text())
    ours = record["fingerprint"]
    marker.write_text(json.dumps(dict(record, fingerprint="0123456789abcdef")))
    result = cli("verify", out)
    assert result.exit_code == 1
    assert (f"Problem: {marker.name.split('.')[0]}: built by another recipe or weights (fingerprint "
            f"0123456789abcdef, the output's {ours}): a build that was not holding the lock wrote it") in result.output


def test_turning_keep_rejected_off_removes_the_rejected_tars(cli, write_recipe, tmp_path):
    # A re-decided shard no longer has a rejected tar: the one its previous commit wrote goes,
    # so verify is OK and the output equals a fresh build without keep_rejected.
    recipe = write_recipe(SMALL + "models: {quality: {kind: builtin}}\nfilters: {min_quality: 20}\n")
    out = tmp_path / "out"
    assert cli("build", recipe, "-q", "--set", "output.keep_rejected=true").exit_code == 0
    assert list((out / "rejected").glob("*.tar"))
    assert cli("build", recipe, "-q").exit_code == 0
    assert not list(out.glob("rejected/*.tar"))
    assert cli("verify", out).exit_code == 0
    fresh = tmp_path / "fresh"
    assert cli("build", recipe, "-q", "--output", fresh).exit_code == 0
    assert dataset_files(out) == dataset_files(fresh)


def test_flock_and_lease_builds_keep_each_other_out(tmp_path):
    # output.lock may differ between two recipes (or --set) aimed at one local folder: each
    # method must see the other's holder.
    from synthfer.errors import LockedError
    from synthfer.io.layout import CURRENT
    from synthfer.io.local_folder import LocalFolder
    from synthfer.io.lock import FlockLock, Lease

    folder = LocalFolder(tmp_path / "out")
    folder.ensure()
    with FlockLock(folder, CURRENT):
        with pytest.raises(LockedError, match="another build holds the lock"):
            Lease(folder, CURRENT).__enter__()
    assert not list((tmp_path / "out").glob(".lease-*"))
    with Lease(folder, CURRENT):
        with pytest.raises(LockedError, match="another build holds the l"):
            FlockLock(folder, CURRENT).__enter__()
    with FlockLock(folder, CURRENT):   # both released
        pass


def test_a_locked_output_is_refused_before_the_models_load(cli, built):
    # An overlapping cron run must exit 75 at once, not after loading every model.
    import fcntl

    recipe, out = built
    with open(out / ".lock", "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = cli("build", recipe)
    assert result.exit_code == 75, result.output
    assert "loading models" not in result.stderr
    assert error_lines(result.stderr)[0].startswith(f"Error: {out}: another build holds the lock (")


def test_small_mistakes_around_the_output_and_shards_are_named(cli, built, tmp_path):
    recipe, out = built
    empty = cli("build", recipe, "--output", "")
    assert _one_error(empty, 2) == "Error: --output: is empty; name a folder (or a URL)"
    no_path = cli("build", recipe, "--output", "file://")
    assert _one_error(no_path, 2) == "Error: --output: file:// names no folder; name a folder (or a URL)"
    # file:///abs is that local folder, not a folder named "file:" beside the recipe
    as_url = cli("validate", recipe, "--set", f"output.dir=file://{tmp_path / 'via-url'}")
    assert as_url.exit_code == 0 and as_url.output.strip().endswith(f"-> {tmp_path / 'via-url'}"), as_url.output
    assert cli("build", recipe, "-q", "--output", f"file://{tmp_path / 'via-url'}").exit_code == 0
    assert (tmp_path / "via-url" / "manifest.parquet").is_file()
    spaced = cli("validate", recipe, "--set", f"output.dir=file://localhost{tmp_path / 'a%20b'}")
    assert spaced.output.strip().endswith(f"-> {tmp_path / 'a b'}"), spaced.output   # localhost, %20 decoded
    other = cli("build", recipe, "--output", "file://otherhost/x")
    assert _one_error(other, 2) == ("Error: --output: a file:// URL of another host (otherhost); name a local "
                                    "folder (file:///path) or mount it")
    backwards = cli("build", recipe, "--shards", "3-1")
    assert _one_error(backwards, 2) == "Error: --shards: shard range '3-1' runs backwards; write it low-high, e.g. 1-3"
    (tmp_path / "weights.pt").mkdir()
    folder = cli("validate", recipe, "--set", f"models.generator={{kind: stylegan2, checkpoint: {tmp_path / 'weights.pt'}}}")
    assert "models.generator.checkpoint: is a folder, not a weights file: " in folder.stderr and folder.exit_code == 2
    # a shard-named tar no marker lists would be read by a glob: verify names it
    stray = out / "data" / "train-000099.tar"
    stray.write_bytes((out / "data").joinpath(sorted(p.name for p in (out / "data").glob("train-*.tar"))[0]).read_bytes())
    result = cli("verify", out)
    assert result.exit_code == 1 and "Problem: data/train-000099.tar: no commit marker lists it" in result.output


def test_report_during_a_build_says_a_build_is_running(cli, built):
    # Without a manifest yet, a running build is not "a build that did not finish".
    import fcntl

    _, out = built
    (out / "manifest.parquet").unlink()
    with open(out / ".lock", "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        running = cli("report", out)
    assert running.exit_code == 75 and "another build holds the lock" in running.stderr, running.output
    stopped = cli("report", out)
    assert stopped.exit_code == 2 and "the build did not finish" in stopped.stderr


def test_a_verify_holding_the_lock_is_not_named_as_the_last_build(cli, built):
    # verify and report hold the lock shared and write no record: the record still names the
    # last build, long gone, which must not be reported as the holder.
    import fcntl
    import socket

    from synthfer.io.lock import _boot_id

    recipe, out = built
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {"pid": int(gone.stdout), "host": socket.gethostname(), "boot_id": _boot_id(), "process_start": 1,
              "token": "x", "started": "2026-11-29T02:30:00Z"}
    with open(out / ".lock", "r+b") as f:
        f.write(json.dumps(record).encode().ljust(512))
        f.flush()
        fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        result = cli("build", recipe)
    assert _one_error(result, 75) == (f"Error: {out}: another build holds the lock (a synthfer verify or report "
                                      f"reading it); wait for it or stop it")
