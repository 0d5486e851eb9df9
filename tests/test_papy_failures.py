"""Failed items are visible (issue 17, item 1): the error item's own API (root cause,
worker traceback, Piper, item), the count of failed input items (not the per-Piper echoes),
the report on stderr at the end of a run, fail_fast, verbose; readable default Piper names;
the argument checks of item 8."""
from __future__ import annotations

import itertools
import os
import pickle
import re
import warnings

import pytest

from papy import IMap, Piper, Plumber, Worker
from papy import PiperError, PlumberError, DaggerError
from papy._failures import one_to_one


def parse(inbox):
    return int(inbox[0])


def double(inbox):
    return inbox[0] * 2


def fail_on(inbox, bad):
    if inbox[0] == bad:
        raise KeyError(f"bad {bad}")
    return inbox[0]


def add(inbox):
    return inbox[0] + inbox[1]


def die_on_2(inbox):
    if inbox[0] == 2:
        os._exit(3)
    return inbox[0]


def chain(*pipers, **options):
    plumber = Plumber(**options)
    plumber.add_pipe(pipers)
    return plumber


# -- the error item tells what happened ---------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "thread", "process"])
def test_an_error_item_tells_its_root_cause_traceback_piper_and_item(kind):
    parallel = False if kind == "linear" else IMap(worker_type=kind, worker_num=2)
    plumber = chain(Piper(parse, parallel=parallel), Piper(double, parallel=parallel),
                    Piper(double), report_failures=False)
    out = plumber.collect([["1", "x", "3"]])[plumber.get_outputs()[0]]
    assert out[0] == 4 and out[2] == 12
    error = out[1]
    assert isinstance(error, PiperError)
    assert isinstance(error.root_cause, ValueError)
    assert "invalid literal" in str(error.root_cause)
    assert error.piper_name == "parse" and error.index == 1 and error.item == ["x"]
    assert error.origins == [error.args[0].args[0]]          # two echoes, one origin
    trace = error.traceback_text
    assert trace.startswith("Traceback") and "in parse" in trace and "ValueError" in trace
    assert "_worker.py" not in trace                          # papy's own frames left out
    text = error.explain()
    assert text.startswith("piper 'parse' failed on item 1 (inbox ['x']): ValueError: ")
    assert "in parse" in text
    again = pickle.loads(pickle.dumps(error))                 # what a worker sends back
    assert again.piper_name == "parse" and again.traceback_text == trace


def test_a_timeout_and_a_dead_worker_say_where_and_why():
    """Errors of the pool (not raised by the function): the root cause is the pool's
    error, the item is not known, the report gives the pool's message."""
    imap = IMap(worker_type="process", worker_num=2)
    plumber = chain(Piper(die_on_2, parallel=imap), Piper(double), report_failures=False)
    out = plumber.collect([range(4)])[plumber.get_outputs()[0]]
    error = out[2]
    assert type(error.root_cause).__name__ == "WorkerDiedError"
    assert error.piper_name == "die_on_2" and error.index == 2 and error.item is None
    assert "exited with code 3" in error.explain()
    assert [x for k, x in enumerate(out) if k != 2] == [0, 2, 6]


def test_an_error_item_made_by_hand_answers_too():
    error = PiperError(PiperError(PiperError("no exception inside")))
    assert error.root_cause is error.origins[0] and error.piper_name is None
    assert error.traceback_text == "" and error.item is None
    assert "failed on an item: no exception inside" in error.explain()


# -- counting failed input items ----------------------------------------------------------

def test_failed_items_are_counted_where_they_failed_not_once_per_piper(capsys):
    plumber = chain(Piper(parse), Piper(double), Piper(double))
    plumber.collect([["1", "x", "3", "y", "5"]])
    failed = plumber.stats["failed_items"]
    assert failed.count(lambda p: one_to_one(plumber, p)) == 2 and failed.origins == 2
    assert sum(c.errors for c in plumber.stats["pipers"].values()) == 6     # the echoes
    assert [(g.piper.name, g.kind, g.count) for g in failed.groups] == [("parse",
                                                                          "ValueError", 2)]
    err = capsys.readouterr().err
    assert err.startswith("papy: 2 input items failed (of 5 taken from the inputs); the "
                          "Pipers downstream passed them on as 6 error items in all\n")


def test_one_input_item_that_fails_in_both_branches_of_a_join_counts_once(capsys):
    source = Piper(double, name="source")
    left = Piper(Worker(fail_on, (6,)), name="left")
    right = Piper(Worker(fail_on, (6,)), name="right")
    join = Piper(add, name="join")
    plumber = Plumber()
    plumber.add_pipe((source, left, join))
    plumber.add_pipe((source, right, join))
    out = plumber.collect([range(5)])[join]
    assert [o for k, o in enumerate(out) if k != 3] == [0, 4, 8, 16]
    assert [e.piper_name for e in out[3].origins] == ["left", "right"]
    failed = plumber.stats["failed_items"]
    assert failed.origins == 2 and failed.count(lambda p: one_to_one(plumber, p)) == 1
    err = capsys.readouterr().err
    assert err.startswith("papy: 1 input item failed (of 5 taken from the inputs)")
    assert "piper 'left': KeyError: 1 item; the first, item 3, inbox [6]:" in err
    assert "piper 'right': KeyError: 1 item; the first, item 3, inbox [6]:" in err


def test_where_items_do_not_map_one_to_one_each_failure_counts_as_an_item():
    """An upstream produce=2 makes two items of input item 2; both fail downstream, and
    without a one-to-one map they count as two (the documented limit of the count)."""
    source = Piper(double, name="source", produce=2, repeat=True)
    failing = Piper(Worker(fail_on, (4,)), name="failing")
    plumber = chain(source, failing, report_failures=False)
    assert not one_to_one(plumber, failing) and not one_to_one(plumber, source)
    out = plumber.collect([range(4)])[failing]
    assert [k for k, item in enumerate(out) if isinstance(item, PiperError)] == [4, 5]
    failed = plumber.stats["failed_items"]
    assert failed.count(lambda p: one_to_one(plumber, p)) == failed.origins == 2


def test_a_bad_produce_result_is_a_failed_item(capsys):
    plumber = chain(Piper(double, produce=2), Piper(double))
    plumber.collect([range(2)])
    assert "piper 'double': ValueError: 2 items" in capsys.readouterr().err


# -- the report at the end of a run -------------------------------------------------------

def test_the_report_groups_by_piper_and_type_with_the_first_item_and_its_traceback(capsys):
    plumber = chain(Piper(parse), Piper(Worker(fail_on, (3,))))
    with plumber:
        plumber.collect([["1", "x", "3", "y"]])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0].startswith("papy: 3 input items failed (of 4 taken from the inputs)")
    assert lines[1] == "  piper 'parse': ValueError: 2 items; the first, item 1, inbox ['x']:"
    assert lines[2] == "    Traceback (most recent call last):"
    assert re.search(r"^  piper 'fail_on': KeyError: 1 item; the first, item 2, inbox \[3\]:$",
                     err, re.M)
    assert "    KeyError: 'bad 3'" in err
    assert lines[-1].startswith("  (an error item tells its cause: err.root_cause")


@pytest.mark.parametrize("how", ["start-run-wait-stop", "chinkup", "stream", "with"])
def test_every_way_to_drive_a_plumber_reports_failed_items_once(how, capsys):
    plumber = chain(Piper(parse), Piper(double))
    output = plumber.get_outputs()[0]
    datas = [["1", "x"]]
    if how == "stream":
        assert len(list(plumber.stream(datas))) == 2
    elif how == "with":
        with plumber:
            plumber.start(datas)
            assert len(list(output)) == 2
    else:
        plumber.start(datas)
        plumber.run()
        plumber.wait()
        if how == "chinkup":
            plumber.chinkup()
        else:
            plumber.pause()
            plumber.stop()
    assert capsys.readouterr().err.count("papy: 1 input item failed") == 1


def test_no_report_without_failed_items_or_with_report_failures_off(capsys):
    chain(Piper(double), Piper(double)).collect([range(5)])
    chain(Piper(parse), Piper(double), report_failures=False).collect([["x"]])
    assert capsys.readouterr().err == ""


# -- fail fast and verbose ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "thread", "process"])
def test_fail_fast_stops_an_endless_run_at_the_first_failed_item(kind, capsys):
    parallel = False if kind == "linear" else IMap(worker_type=kind, worker_num=2)
    plumber = chain(Piper(Worker(fail_on, (50,)), parallel=parallel), Piper(double),
                    fail_fast=True)
    with pytest.raises(PiperError) as raised:
        plumber.collect([itertools.count()])        # would never end without fail_fast
    error = raised.value
    assert isinstance(error.root_cause, KeyError) and error.piper_name == "fail_on"
    assert error.index == 50 and error.item == [50]
    notes = "\n".join(error.__notes__)
    assert "papy: fail_fast: piper 'fail_on' failed on an item; the run was stopped" in notes
    assert "worker traceback:" in notes and "KeyError: 'bad 50'" in notes
    assert plumber.stats["failed_items"].origins == 1
    assert capsys.readouterr().err == ""            # raised, not reported as well


def test_fail_fast_raises_to_a_reader_of_the_stream():
    plumber = chain(Piper(Worker(fail_on, (3,))), Piper(double), fail_fast=True)
    seen = []
    with pytest.raises(PiperError) as raised:
        for item in plumber.stream([itertools.count()]):
            seen.append(item)
    assert isinstance(raised.value.root_cause, KeyError)
    assert seen == [0, 2, 4][:len(seen)]    # what was in flight with it may be dropped


def test_verbose_shows_each_failed_item_as_it_fails(capsys):
    plumber = chain(Piper(parse), Piper(double), verbose=True, report_failures=False)
    plumber.collect([["x", "2", "y"]])
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == ("papy: piper 'parse' failed on item 0 (inbox ['x']): ValueError: "
                        "invalid literal for int() with base 10: 'x'")
    assert lines[1] == "    Traceback (most recent call last):"       # the first: its trace
    assert lines[-1] == ("papy: piper 'parse' failed on item 2 (inbox ['y']): ValueError: "
                         "invalid literal for int() with base 10: 'y'")


def test_the_failure_options_are_checked():
    for key in ("fail_fast", "verbose", "report_failures"):
        with pytest.raises(TypeError, match=f"Plumber {key} must be True or False"):
            Plumber(**{key: "yes"})


# -- names and argument checks (item 8) ---------------------------------------------------

def test_default_names_are_the_function_names_numbered_within_a_dagger():
    first, second, third = Piper(double), Piper(double), Piper(Worker((parse, double)))
    named = Piper(double, name="mine")
    plumber = Plumber()
    plumber.add_pipe((first, second, third, named, Piper(double)))
    assert [p.name for p in plumber.postorder()] == ["double", "double_2", "parse>double",
                                                     "mine", "double_3"]
    assert Piper(double).name == "double"               # alone: no number


def test_argument_checks_name_the_fix():
    with pytest.raises(TypeError, match=r"Plumber\(\) got 'x' where its first parameter, "
                                        r"logger_options.*add_pipe"):
        Plumber("x")
    plumber = chain(Piper(double), Piper(double))
    with pytest.raises(PlumberError, match=r"start\(\[range\(10\)\]\), not None"):
        plumber.start(None)
    with pytest.raises(DaggerError, match=r"instead of start\(range\(10\)\)"):
        plumber.start(range(3))
    assert plumber.collect([range(2)])                  # still usable
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Piper(double, timeout=1)
    assert "timeout applies to parallel Pipers only" in str(caught[0].message)
