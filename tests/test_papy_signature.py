"""Worker construction checks each function's signature against inbox + args + kwargs."""
import functools

import pytest

from papy import Piper, PiperError, Worker


def no_inbox():
    return 1


def one_arg(inbox, n):
    return inbox[0] + n


def keyword_only(inbox, *, scale):
    return inbox[0] * scale


def any_args(inbox, *args, **kwargs):
    return (inbox[0], args, kwargs)


def test_function_without_an_inbox_is_a_type_error_naming_it_and_the_remedy():
    with pytest.raises(TypeError, match=r"'no_inbox'\(\) cannot be called as "
                                        r"no_inbox\(inbox\).*def no_inbox\(inbox, \.\.\.\)"):
        Worker(no_inbox)


def test_too_many_or_too_few_arguments_are_type_errors():
    with pytest.raises(TypeError, match=r"one_arg\(inbox, 1, 2\).*too many"):
        Worker(one_arg, (1, 2))
    with pytest.raises(TypeError, match=r"one_arg\(inbox\).*missing"):
        Worker(one_arg)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'k'"):
        Worker(one_arg, (1,), {"k": 2})
    with pytest.raises(TypeError, match=r"keyword_only\(inbox\)"):
        Worker(keyword_only)


def test_each_function_of_a_composition_is_checked():
    with pytest.raises(TypeError, match="no_inbox"):
        Worker((one_arg, no_inbox), ((1,), ()))


def test_valid_signatures_pass():
    assert Worker(one_arg, (1,))([1]) == 2
    assert Worker(keyword_only, kwargs={"scale": 3})([2]) == 6
    assert Worker(any_args, (1, 2), {"k": 3})([0]) == (0, (1, 2), {"k": 3})
    assert Worker(functools.partial(one_arg, n=4))([1]) == 5
    assert Worker(lambda inbox: inbox[0])([7]) == 7


def test_builtins_without_a_signature_are_accepted():
    assert Worker(len)([1, 2]) == 2
    Worker(print)               # no inspectable signature: accepted as before


def test_bound_methods_are_checked_without_self():
    class Holder:
        def take(self, inbox):
            return inbox[0]

        def wrong(self):
            return None
    assert Worker(Holder().take)([5]) == 5
    with pytest.raises(TypeError, match="wrong"):
        Worker(Holder().wrong)


def test_a_piper_of_a_bad_function_fails_at_construction():
    with pytest.raises(PiperError, match="no_inbox"):
        Piper(no_inbox)
