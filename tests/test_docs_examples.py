"""The ```python examples of docs/*.md and README.md run, and do not raise.

The blocks of one file run in order in one fresh interpreter (so a block may use the names
of the blocks above it, as a reader following the page would), with ``__name__ ==
'__main__'``, in a temporary folder. A block that starts with ``>>>`` is an interactive
session: it runs as a doctest, so its printed output is checked too. A block is left out
when the line before its fence is ``<!-- skip -->`` or ``<!-- skip: reason -->`` (e.g. it
needs a remote server, or runs forever); docs/index.md lists the reasons. A failing block is
reported with its file and line. docs/workers.md is left to tests/test_workers_docs.py
(TESTED_ELSEWHERE).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
# Pages whose examples another test runs already, as one doctest file: not run twice here.
TESTED_ELSEWHERE = {"workers.md": "tests/test_workers_docs.py runs it with doctest.testfile"}
# The guide pages (issue 7): their links and their list of skipped examples are checked too.
OWN_PAGES = ["README.md"] + [f"docs/{name}" for name in (
    "index.md", "quickstart.md", "concepts.md", "cli.md", "templates.md", "original-papy.md",
    "benchmarks.md", "troubleshooting.md")]
SKIP = re.compile(r"^<!--\s*skip\b.*-->$")

RUNNER = r'''
import doctest, json, sys, traceback
blocks = json.load(open(sys.argv[1]))


def run(line, code, namespace):
    name = f"{sys.argv[2]}, block at line {line}"
    if code.lstrip().startswith(">>>"):          # an interactive session: check its output
        test = doctest.DocTestParser().get_doctest(code, namespace, name, sys.argv[2], line)
        flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        result = doctest.DocTestRunner(optionflags=flags).run(test, clear_globs=False)
        namespace.update(test.globs)              # a DocTest works on a copy
        return result.failed == 0
    try:
        exec(compile(code, name, "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        return False
    return True


if __name__ == "__main__":
    namespace = {"__name__": "__main__"}
    for line, code in blocks:
        if not run(line, code, namespace):
            print(f"EXAMPLE FAILED: {sys.argv[2]} line {line}", file=sys.stderr)
            sys.exit(1)
'''


def python_blocks(path: Path) -> tuple[list[tuple[int, str]], list[int]]:
    """(runnable blocks as (line of the fence, code), lines of the skipped fences)."""
    runnable, skipped = [], []
    lines = path.read_text(encoding="utf-8").splitlines()
    k = 0
    while k < len(lines):
        if lines[k].strip() == "```python":
            start, body = k + 1, []
            k += 1
            while k < len(lines) and lines[k].strip() != "```":
                body.append(lines[k])
                k += 1
            before = next((lines[j].strip() for j in range(start - 2, -1, -1)
                           if lines[j].strip()), "")
            (skipped.append(start) if SKIP.match(before)
             else runnable.append((start, "\n".join(body) + "\n")))
        k += 1
    return runnable, skipped


def test_pages_exist_and_have_examples():
    names = {p.name for p in PAGES if p.exists()}
    for page in ("index.md", "quickstart.md", "concepts.md", "cli.md", "templates.md",
                 "original-papy.md", "benchmarks.md", "README.md"):
        assert page in names
    runnable, _ = python_blocks(ROOT / "README.md")
    assert runnable, "the README's example is not a ```python block"


def test_skip_marker_is_recognised(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- skip: needs a server -->\n```python\nboom()\n```\n\n"
                    "```python\nx = 1\n```\n")
    runnable, skipped = python_blocks(page)
    assert runnable == [(8, "x = 1\n")] and skipped == [4]


def test_index_lists_every_skipped_example_of_the_guide_pages():
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    table = index[index.index("## The examples in these pages are tested"):]
    for name in OWN_PAGES:
        page = ROOT / name
        if page.name != "README.md":
            skipped = python_blocks(page)[1]
            listed = table.count(f"[{page.name}]({page.name})")
            assert listed == len(skipped), f"docs/index.md lists {listed} skipped blocks " \
                f"of {page.name}, which has {len(skipped)}"


@pytest.mark.parametrize("page", [p for p in PAGES if p.exists()],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_examples_run(page, tmp_path):
    if page.name in TESTED_ELSEWHERE:
        pytest.skip(TESTED_ELSEWHERE[page.name])
    runnable, _ = python_blocks(page)
    if not runnable:
        pytest.skip(f"{page.name} has no runnable python examples")
    (tmp_path / "blocks.json").write_text(json.dumps(runnable))
    (tmp_path / "run_blocks.py").write_text(RUNNER)
    temp = tmp_path / "tmp"     # what the examples make with tempfile goes with the test's
    temp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TMPDIR=str(temp))
    done = subprocess.run([sys.executable, "run_blocks.py", "blocks.json", page.name],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, f"{page.name}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"


# -- links ---------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a Markdown page."""
    found, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("name", OWN_PAGES)
def test_links_resolve(name):
    page = ROOT / name
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue                                   # http(s): not checked offline
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{name}: broken link {target}"
        if anchor:
            assert anchor in anchors(resolved), f"{name}: no heading for #{anchor} in {path}"
