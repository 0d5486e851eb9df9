"""papy.workers.core: passers, zippers and joiners on inboxes, alone and in a Worker."""
import pytest

from papy import Worker, WorkerError
from papy.workers import core


def test_plugger_returns_none():
    assert core.plugger([1, 2]) is None
    assert core.plugger([]) is None


def test_ipasser_passes_the_ith_input():
    assert core.ipasser(["a", "b", "c"]) == "a"
    assert core.ipasser(["a", "b", "c"], 2) == "c"
    assert core.ipasser(["a", "b", "c"], -1) == "c"


def test_npasser_passes_the_first_n_inputs():
    assert core.npasser(["a", "b", "c"]) == ["a", "b", "c"]
    assert core.npasser(["a", "b", "c"], 2) == ["a", "b"]
    assert core.npasser(("a", "b"), 1) == ("a",)
    assert core.npasser(["a"], 0) == []


def test_spasser_returns_the_selected_inputs_in_the_order_asked():
    inbox = ["x0", "x1", "x2", "x3"]
    assert core.spasser(inbox, (2, 0)) == ["x2", "x0"]      # the original gave [x0, x2]
    assert core.spasser(inbox, [3, 1, 2]) == ["x3", "x1", "x2"]
    assert core.spasser(inbox, (1, 1)) == ["x1", "x1"]
    assert core.spasser(inbox) == inbox
    assert core.spasser(inbox, ()) == []


def test_nzipper_returns_the_first_tuple_of_the_zip():
    assert core.nzipper([(1, 2), (3, 4)]) == (1, 3)
    assert core.nzipper([(1, 2), (3, 4), (5, 6)], 2) == (1, 3)
    assert core.nzipper(["ab", "cd"]) == ("a", "c")


def test_nzipper_of_an_empty_input_says_why():
    with pytest.raises(IndexError, match="non-empty"):
        core.nzipper([(), (1,)])


def test_szipper_zips_the_selected_inputs_in_the_order_asked():
    inbox = [(1, 2), "ignored", (3, 4)]
    assert core.szipper(inbox, (0, 2)) == [(1, 3), (2, 4)]
    assert core.szipper(inbox, (2, 0)) == [(3, 1), (4, 2)]
    assert core.szipper([(1, 2, 3), (4, 5)], (0, 1)) == [(1, 4), (2, 5)]


def test_njoiner_joins_the_first_n_inputs():
    assert core.njoiner(["a", "b", "c"]) == "abc"
    assert core.njoiner(["a", "b", "c"], 2) == "ab"
    assert core.njoiner(["a", "b", "c"], None, ", ") == "a, b, c"


def test_sjoiner_joins_the_selected_inputs_in_the_order_asked():
    assert core.sjoiner(["a", "b", "c"], (0, 2)) == "ac"
    assert core.sjoiner(["a", "b", "c"], (2, 0), "+") == "c+a"


@pytest.mark.parametrize("function", [core.spasser, core.szipper, core.sjoiner])
def test_a_selection_must_be_a_sequence_of_indices(function):
    with pytest.raises(TypeError, match="sequence of input indices"):
        function(["a", "b"], 1)


def test_in_a_worker_with_arguments_and_errors_as_values():
    assert Worker(core.sjoiner, ((1, 0), "-"))(["a", "b"]) == "b-a"
    # a later function of a Worker gets the previous result as its inbox[0]
    assert Worker((core.spasser, core.ipasser), (((2, 0),), ()))(["x", "y", "z"]) == ["z", "x"]
    error = Worker(core.ipasser, (5,))(["only one"])
    assert isinstance(error, WorkerError) and isinstance(error.exception, IndexError)
