import multiprocessing as mp
import os
import pickle

import numpy as np
import pytest

from semantic_sam.data.tsv import (
    TSVFile,
    TSVFormatError,
    TSVShardSet,
    TSVWriter,
    generate_lineidx,
    lineidx_path_for,
    read_lineidx,
)

ROWS = [
    ["sa_1.jpg", '{"a": 1}', "QUJD"],
    ["sa_2.jpg", '{"b": "\u00e9t\u00e9"}', ""],  # non-ASCII and an empty field
    ["sa_3.jpg", "{}", "x" * 5000],
    ["only-one-field"],
    ["sa_5.jpg", "[1, 2]", "Zm9v"],
]


def _write(path, rows=ROWS):
    with TSVWriter(str(path)) as w:
        for r in rows:
            w.write(r)
    return str(path)


def _expected_offsets(rows):
    lines = [("\t".join(r) + "\n").encode("utf-8") for r in rows]
    return np.cumsum([0] + [len(x) for x in lines[:-1]])


def test_round_trip_random_access(tmp_path):
    path = _write(tmp_path / "s.tsv")
    assert os.path.isfile(lineidx_path_for(path))
    np.testing.assert_array_equal(read_lineidx(lineidx_path_for(path)), _expected_offsets(ROWS))
    f = TSVFile(path)
    assert len(f) == f.num_rows() == len(ROWS)
    for i in [4, 0, 2, 3, 1, 2, -1]:
        assert f[i] == ROWS[i]
    assert list(f) == ROWS
    with pytest.raises(IndexError, match="out of range"):
        f.read_row(5)


def test_missing_lineidx_is_regenerated(tmp_path):
    path = _write(tmp_path / "s.tsv")
    idx = lineidx_path_for(path)
    with open(idx) as fh:
        original = fh.read()
    os.remove(idx)
    f = TSVFile(path)
    assert f[3] == ROWS[3] and f[0] == ROWS[0]
    with open(idx) as fh:
        assert fh.read() == original


def test_lineidx_with_offset_and_length_columns(tmp_path):
    path = _write(tmp_path / "s.tsv")
    offsets = _expected_offsets(ROWS)
    with open(lineidx_path_for(path), "w") as fh:
        fh.writelines(f"{o}\t{123}\n" for o in offsets)
    assert TSVFile(path)[2] == ROWS[2]


def test_lineidx_that_does_not_match_names_the_file(tmp_path):
    path = _write(tmp_path / "s.tsv")
    with open(lineidx_path_for(path), "w") as fh:
        fh.write("0\n999999\n")
    with pytest.raises(TSVFormatError, match=r"s\.lineidx does not match .*s\.tsv"):
        len(TSVFile(path))
    with open(lineidx_path_for(path), "w") as fh:
        fh.write("0\nabc\n")
    with pytest.raises(TSVFormatError, match=r"s\.lineidx:2"):
        len(TSVFile(path))


def test_missing_shard():
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        len(TSVFile("/nonexistent/nope.tsv"))


def test_generate_lineidx_without_trailing_newline(tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"a\tb\nc\td")
    np.testing.assert_array_equal(generate_lineidx(str(p)), [0, 4])
    assert TSVFile(str(p))[1] == ["c", "d"]


def test_writer_rejects_tabs_and_newlines(tmp_path):
    with TSVWriter(str(tmp_path / "w.tsv")) as w:
        w.write(["ok"])
        with pytest.raises(ValueError, match="row 1 field 1: contains a tab or newline"):
            w.write(["a", "b\nc"])
        assert w.num_rows == 1


def test_atomic_writer_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "w.tsv"
    with pytest.raises(RuntimeError):
        with TSVWriter(str(path)) as w:
            w.write(["a"])
            assert os.path.exists(str(path) + ".partial")
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_lazy_open_and_pickle(tmp_path):
    path = _write(tmp_path / "s.tsv")
    f = TSVFile(path)
    assert not f.is_open
    f.read_row(1)
    assert f.is_open
    g = pickle.loads(pickle.dumps(f))
    assert not g.is_open and g[4] == ROWS[4]
    f.close()
    assert not f.is_open and f[0] == ROWS[0]


def _child_reads(f, q):
    q.put((f.is_open, [f.read_row(i) for i in (4, 0, 2)]))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_forked_child_opens_its_own_handle(tmp_path):
    path = _write(tmp_path / "s.tsv")
    f = TSVFile(path)
    f.read_row(0)
    pos = f._handle().tell()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_reads, args=(f, q))
    p.start()
    was_open, rows = q.get(timeout=30)
    p.join(30)
    assert not was_open  # the inherited handle is not used in the child
    assert rows == [ROWS[4], ROWS[0], ROWS[2]]
    assert f._handle().tell() == pos  # the parent's file position is untouched
    assert f[1] == ROWS[1]


def test_shard_set_global_index_and_open_file_limit(tmp_path):
    a = _write(tmp_path / "a.tsv", ROWS[:2])
    b = _write(tmp_path / "b.tsv", [])
    c = _write(tmp_path / "c.tsv", ROWS[2:])
    s = TSVShardSet([a, b, c], max_open_files=1)
    assert len(s) == 5 and s.num_rows(1) == 0
    assert [s.locate(i) for i in range(5)] == [(0, 0), (0, 1), (2, 0), (2, 1), (2, 2)]
    assert s.global_index(2, 1) == 3
    assert s.read_row(*s.locate(3)) == ROWS[3]
    assert s.files[2].is_open
    assert s.read_row(0, 1) == ROWS[1]
    assert s.files[0].is_open and not s.files[2].is_open  # least recently used was closed
    with pytest.raises(IndexError):
        s.locate(5)
    with pytest.raises(IndexError):
        s.global_index(1, 0)
