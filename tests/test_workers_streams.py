"""papy.workers.streams: delimited and pickle streams, (de)serialisers; round trips."""
import io
import json
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from papy import Worker
from papy.workers import streams

TRICKY = ["", "a", "a\n", "\n", "\n\n", "two\n\nparagraphs", "%%", "\\%%", "\\\\%%",
          "x\n%%\ny", "\\", "END", "trailing blank\n\n", "  indented\n\tand tabbed"]


def round_trip(items, delimiter=None, binary=False):
    handle = io.BytesIO() if binary else io.StringIO()
    for item in items:
        assert streams.dump_stream([item], handle, delimiter) is None
    handle.seek(0)
    return list(streams.load_stream(handle, delimiter))


@pytest.mark.parametrize("delimiter", [None, "END", "", "#"])
def test_any_text_item_survives_the_round_trip(delimiter):
    assert round_trip(TRICKY, delimiter) == TRICKY


@pytest.mark.parametrize("delimiter", [None, "END", b"END"])
def test_bytes_items_on_binary_handles(delimiter):
    items = [item.encode() for item in TRICKY] + [b"\xff\x00 binary"]
    assert round_trip(items, delimiter, binary=True) == items


def test_items_with_blank_lines_are_not_split():
    # the original dropped blank lines and split such an item in two
    assert round_trip(["first\n\nsecond"]) == ["first\n\nsecond"]


def test_the_file_format_is_readable():
    handle = io.StringIO()
    streams.dump_stream(["one"], handle, "END")
    streams.dump_stream(["END"], handle, "END")
    assert handle.getvalue() == "one\nEND\n\\END\nEND\n"


def test_a_stream_cut_short_yields_its_last_item():
    assert list(streams.load_stream(io.StringIO("a\n%%\npartial\nitem"))) == \
        ["a", "partial\nitem"]
    assert list(streams.load_stream(io.StringIO("a\n%%\nline\n"))) == ["a", "line"]


def test_an_empty_stream_yields_nothing():
    assert list(streams.load_stream(io.StringIO(""))) == []


def test_on_a_real_file(tmp_path):
    path = tmp_path / "items.txt"
    with open(path, "w") as handle:
        for item in TRICKY:
            streams.dump_stream([item], handle)
    with open(path) as handle:
        assert list(streams.load_stream(handle)) == TRICKY


def test_bad_items_and_delimiters_are_refused_with_a_remedy():
    with pytest.raises(TypeError, match="json_dumps"):
        streams.dump_stream([42], io.StringIO())
    with pytest.raises(ValueError, match="without line breaks"):
        streams.dump_stream(["x"], io.StringIO(), "a\nb")
    with pytest.raises(ValueError, match="backslash"):
        streams.dump_stream(["x"], io.StringIO(), "\\END")


@given(st.lists(st.text(), max_size=8), st.sampled_from([None, "", "END", "a\\b"]))
def test_round_trip_property(items, delimiter):
    assert round_trip(items, delimiter) == items


def test_pickle_stream_round_trip(tmp_path):
    items = [{"a": 1}, [1, 2], "text", b"bytes", None, 3.5, ("tuple",)]
    path = tmp_path / "items.pickle"
    with open(path, "wb") as handle:
        for item in items:
            assert streams.dump_pickle_stream([item], handle) is None
    with open(path, "rb") as handle:
        assert list(streams.load_pickle_stream(handle)) == items


def test_pickle_stream_is_flushed_after_each_item(tmp_path):
    path = tmp_path / "items.pickle"
    with open(path, "wb") as handle:
        streams.dump_pickle_stream([{"k": "v"}], handle)
        with open(path, "rb") as reader:          # visible before the handle is closed
            assert list(streams.load_pickle_stream(reader)) == [{"k": "v"}]


def test_pickle_dumps_and_loads():
    data = streams.pickle_dumps([{"a": (1, 2)}])
    assert isinstance(data, bytes)
    assert pickle.loads(data) == {"a": (1, 2)}
    assert streams.pickle_loads([data]) == {"a": (1, 2)}
    assert streams.pickle_dumps([1], 2) == pickle.dumps(1, 2)


def test_json_dumps_and_loads():
    text = streams.json_dumps([{"a": [1, 2]}])
    assert json.loads(text) == {"a": [1, 2]}
    assert streams.json_loads([text]) == {"a": [1, 2]}
    assert streams.json_dumps([{"b": 1, "a": 2}], sort_keys=True) == '{"a": 2, "b": 1}'


def test_serialisers_compose_in_a_worker():
    assert Worker((streams.json_dumps, streams.json_loads))([[1, "x"]]) == [1, "x"]
    assert Worker((streams.pickle_dumps, streams.pickle_loads))([{1, 2}]) == {1, 2}


def test_serialisers_declare_their_modules():
    assert streams.pickle_dumps.imports == ["pickle"]
    assert streams.json_loads.imports == ["json"]


@given(st.lists(st.binary(), max_size=8), st.sampled_from([None, b"", b"END"]))
def test_binary_round_trip_property(items, delimiter):
    assert round_trip(items, delimiter, binary=True) == items
