"""FileRef items (papy.workers.io.file_refs): keyed by the file's content checksum,
re-hashed only when the size or mtime changed."""
from __future__ import annotations

import os
import pickle
import time

import cache_functions as cf
import pytest

import papy._fileref as fileref
from papy import Cache, IMap, Worker
from papy.workers.io import FileRef, file_refs

OLD = time.time() - 3600        # an mtime well before "now": not racily clean


def make_file(path, text, mtime=OLD):
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    return str(path)


@pytest.fixture
def hashed(monkeypatch):
    """The paths hashed, in order."""
    seen: list[str] = []
    real = fileref.hash_file

    def counting(path):
        seen.append(os.path.basename(path))
        return real(path)
    monkeypatch.setattr(fileref, "hash_file", counting)
    return seen


def test_a_fileref_is_the_path_with_a_checksum(tmp_path):
    path = make_file(tmp_path / "a.txt", "alpha")
    [ref] = file_refs([path], memo=tmp_path / "memo")
    assert isinstance(ref, FileRef) and isinstance(ref, str) and ref == path
    assert ref.path == path and ref.size == 5 and len(ref.checksum) == 40
    with open(ref) as handle:
        assert handle.read() == "alpha"
    again = pickle.loads(pickle.dumps(ref))
    assert type(again) is FileRef and again == ref and again.checksum == ref.checksum
    assert "checksum" in repr(ref)


def test_hashed_again_only_when_size_or_mtime_changed(tmp_path, hashed):
    memo = tmp_path / "memo"
    path = make_file(tmp_path / "a.txt", "alpha")
    first = next(file_refs([path], memo=memo))
    assert next(file_refs([path], memo=memo)).checksum == first.checksum
    assert hashed == ["a.txt"]                                   # the record was used
    os.utime(path, (OLD + 10, OLD + 10))                         # touched: hashed again
    assert next(file_refs([path], memo=memo)).checksum == first.checksum
    make_file(tmp_path / "a.txt", "alphabet", OLD + 10)          # size changed
    assert next(file_refs([path], memo=memo)).checksum != first.checksum
    assert hashed == ["a.txt"] * 3
    make_file(tmp_path / "a.txt", "ALPHABET", OLD + 10)          # same size and mtime:
    assert next(file_refs([path], memo=memo)).checksum == \
        next(file_refs([path], memo=memo)).checksum              # not seen (the rule)
    assert hashed == ["a.txt"] * 3


def test_a_file_changed_within_the_last_seconds_is_hashed_again(tmp_path, hashed):
    memo = tmp_path / "memo"
    path = make_file(tmp_path / "fresh.txt", "new", mtime=time.time())
    next(file_refs([path], memo=memo))
    next(file_refs([path], memo=memo))
    assert hashed == ["fresh.txt", "fresh.txt"]


def test_touched_changed_and_moved_files_as_cache_keys(tmp_path, worker_type):
    cache = Cache(tmp_path / "cache")
    worker = Worker(cf.reads_file, cache=cache)
    folder = tmp_path / "data"
    folder.mkdir()
    paths = [make_file(folder / f"{k}.txt", "x" * (k + 1)) for k in range(4)]

    def run():
        with IMap(worker_type=worker_type, worker_num=2) as pool:
            task = pool.add_task(worker, ([ref] for ref in file_refs(paths, memo=cache)))
            pool.start()
            return list(task)
    assert run() == [1, 2, 3, 4]
    os.utime(paths[0], (OLD + 5, OLD + 5))                       # touched, unchanged
    make_file(folder / "1.txt", "y" * 20)                        # changed
    os.rename(paths[2], folder / "moved.txt")                    # moved, unchanged
    paths[2] = str(folder / "moved.txt")
    assert run() == [1, 20, 3, 4]
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (3, 5)


def test_memo_locations(tmp_path, monkeypatch):
    path = make_file(tmp_path / "a.txt", "alpha")
    monkeypatch.setenv("PAPY_CHECKSUMS", str(tmp_path / "env-memo"))
    next(file_refs([path]))
    assert len(os.listdir(tmp_path / "env-memo")) == 1
    cache = Cache(tmp_path / "cache")
    next(file_refs([path], memo=cache))
    assert len(os.listdir(tmp_path / "cache" / "files")) == 1
    monkeypatch.delenv("PAPY_CHECKSUMS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fileref.default_memo() == str(tmp_path / "xdg" / "papy" / "checksums")


def test_a_corrupt_record_is_ignored(tmp_path, hashed):
    memo = tmp_path / "memo"
    path = make_file(tmp_path / "a.txt", "alpha")
    first = next(file_refs([path], memo=memo))
    [record] = os.listdir(memo)
    (memo / record).write_text("{not json")
    assert next(file_refs([path], memo=memo)).checksum == first.checksum
    assert len(hashed) == 2


def test_one_path_or_a_missing_file(tmp_path):
    with pytest.raises(TypeError, match="iterable of paths"):
        file_refs(str(tmp_path / "a.txt"))
    refs = file_refs([str(tmp_path / "missing.txt")], memo=tmp_path / "memo")
    with pytest.raises(FileNotFoundError):
        next(refs)
