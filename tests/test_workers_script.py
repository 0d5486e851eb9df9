"""papy.workers.script: external programs as workers (argument, stdin, file; stdout, file)."""
import os
import pickle
import subprocess
import sys
import tempfile

import pytest

from papy import IMap, Piper, Plumber, Worker, WorkerError
from papy.workers.script import ScriptError, script

PY = sys.executable


def temp_entries():
    """The temp files of this process's scripts (names carry the pid; threads share it)."""
    prefix = f"papy_script_{os.getpid()}_"
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith(prefix)}


@pytest.fixture(autouse=True)
def no_temp_files_left():
    before = temp_entries()
    yield
    assert temp_entries() - before == set()


def test_item_as_an_appended_argument():
    assert script(["hello"], ["echo"]) == "hello\n"
    assert script([3], "seq") == "1\n2\n3\n"


def test_item_in_place_of_the_placeholder_inside_an_argument():
    assert script(["x y"], [PY, "-c", "import sys; print(sys.argv[1:])", "--in={}", "last"]) \
        == "['--in=x y', 'last']\n"


def test_placeholders_inside_the_item_are_left_alone():
    assert script(["{out} {}"], ["echo", "{}"]) == "{out} {}\n"


def test_item_on_stdin():
    assert script(["b\na\n"], "sort", item_as="stdin") == "a\nb\n"
    assert script([b"\x00\xff"], [PY, "-c", "import sys; print(len(sys.stdin.buffer.read()))"],
                  item_as="stdin") == "2\n"


def test_item_as_a_file_and_output_to_a_file():
    assert script(["b\na\n"], "sort {} -o {out}", item_as="file", output="file") == "a\nb\n"
    # without placeholders: the input path, then the output path, are appended
    assert script(["data"], "cp", item_as="file", output="file") == "data"


def test_item_not_passed():
    assert script(["ignored"], "echo fixed", item_as=None) == "fixed\n"


def test_bytes_output_when_not_text():
    assert script([b"\xff\xfe"], "cat", item_as="stdin", text=False) == b"\xff\xfe"


def test_cwd_and_env(tmp_path):
    out = script(["x"], [PY, "-c", "import os; print(os.getcwd(), os.environ['PAPY_T'])"],
                 item_as=None, cwd=tmp_path, env={**os.environ, "PAPY_T": "yes"})
    assert out == f"{tmp_path} yes\n"


def test_a_non_zero_exit_raises_with_the_code_and_stderr():
    with pytest.raises(ScriptError) as caught:
        script(["x"], ["sh", "-c", "echo broken >&2; exit 3"], item_as=None)
    error = caught.value
    assert error.returncode == 3
    assert error.stderr == "broken\n"
    assert error.command == ["sh", "-c", "echo broken >&2; exit 3"]
    assert "exited with code 3" in str(error) and "broken" in str(error)


def test_a_killed_program_names_the_signal():
    with pytest.raises(ScriptError, match="killed by SIGKILL") as caught:
        script(["x"], ["sh", "-c", "kill -9 $$"], item_as=None)
    assert caught.value.returncode == -9


def test_script_error_pickles_with_its_fields():
    error = pickle.loads(pickle.dumps(ScriptError(["prog", "a"], 2, "bad")))
    assert (error.command, error.returncode, error.stderr) == (["prog", "a"], 2, "bad")


def test_a_timeout_kills_the_program_and_its_children():
    with pytest.raises(subprocess.TimeoutExpired):
        script(["x"], ["sh", "-c", "sleep 60 & sleep 60"], item_as=None, timeout=0.5)
    # the leak guard (conftest) checks that no child process is left


def test_a_missing_program_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no-such-program-papy"):
        script(["x"], ["no-such-program-papy"])


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="item_as"):
        script(["x"], "cat", item_as="pipe")
    with pytest.raises(ValueError, match="output"):
        script(["x"], "cat", output="stderr")
    with pytest.raises(ValueError, match="needs a command"):
        script(["x"], "")


def test_in_a_worker_a_failure_is_an_error_value_carrying_code_and_stderr():
    worker = Worker(script, (["sh", "-c", 'test "$0" = ok || { echo "no: $0" >&2; exit 4; }'],))
    assert worker(["ok"]) == ""
    error = worker(["bad"])
    assert isinstance(error, WorkerError)
    assert isinstance(error.exception, ScriptError)
    assert error.exception.returncode == 4 and error.exception.stderr == "no: bad\n"


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_in_a_parallel_pipeline_failures_stay_in_place(worker_type):
    command = ["sh", "-c", 'test "$0" -lt 3 || exit 7; echo $(($0 * 2))']
    with IMap(worker_type=worker_type, worker_num=2, stride=2) as pool:
        run = Piper(Worker(script, (command,)), parallel=pool)
        plumber = Plumber()
        plumber.add_pipe((run,))
        plumber.start([range(5)])
        try:
            results = list(run)
        finally:
            plumber.stop()
    assert results[:3] == ["0\n", "2\n", "4\n"]
    for failed in results[3:]:
        cause = failed.args[0]  # PiperError(WorkerError(ScriptError))
        assert isinstance(cause, WorkerError) and cause.exception.returncode == 7
