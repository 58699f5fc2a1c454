"""The rules every chapter notebook follows (CONTRIBUTING.md, "Notebooks"), checked fast.

These read the committed .ipynb files; they do not run them (nbval does, under `make test`).
For every notebooks/*.ipynb:

- it is listed in _toc.yml (and every _toc.yml entry exists);
- its first code cell installs d2lbn only when it is missing, from the repository URL of
  _config.yml, in exactly the form of `install_cell_lines()`;
- it was executed in one clean top-to-bottom run: execution counts 1, 2, ..., n in cell order,
  and no error outputs;
- no output shows a machine path (/root/, /home/, /tmp/, /work/, /Users/);
- the file is under 2 MB;
- every {cite} key exists in book/references.bib (the book's pages are checked too).

Each rule is a function returning a list of problems; the tests at the end feed each one a
notebook that breaks it, so that a rule that can no longer fail is noticed even while
notebooks/ is empty.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_BYTES = 2 * 1024 * 1024
MACHINE_PATHS = ("/root/", "/home/", "/tmp/", "/work/", "/Users/")
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]*)`")


def repository_url() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf8"))
    return config["repository"]["url"]


def install_cell_lines(url: str | None = None) -> list[str]:
    """The code of the first code cell of every notebook (blank and comment lines aside)."""
    url = url or repository_url()
    return [
        "try:",
        "    import d2lbn",
        "except ImportError:",
        f'    %pip install --quiet "d2lbn @ git+{url}"',
        "    import d2lbn",
    ]


def toc_files() -> list[str]:
    """Every file _toc.yml lists (root, chapters, sections), as written there."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf8"))
    files = [toc["root"]]

    def walk(items: list[dict]) -> None:
        for item in items:
            if "file" in item:
                files.append(item["file"])
            walk(item.get("sections", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    walk(toc.get("chapters", []))
    return files


def bib_keys() -> set[str]:
    text = (ROOT / "book" / "references.bib").read_text(encoding="utf8")
    return set(re.findall(r"^@\w+\s*\{\s*([^,\s]+)\s*,", text, flags=re.MULTILINE))


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code" and cell.source.strip()]


# ---------------------------------------------------------------------------------------------
# The rules: each returns what is wrong (an empty list when nothing is).


def install_cell_problems(nb, url: str) -> list[str]:
    cells = code_cells(nb)
    if not cells:
        return ["no code cell; the first one must install d2lbn when it is missing"]
    lines = [
        line.rstrip()
        for line in cells[0].source.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    expected = install_cell_lines(url)
    if lines != expected:
        return [
            "the first code cell must be exactly (comments aside):\n"
            + "\n".join(expected)
            + "\nbut it is:\n"
            + cells[0].source
        ]
    return []


def execution_problems(nb) -> list[str]:
    problems = []
    counts = [cell.get("execution_count") for cell in code_cells(nb)]
    if counts != list(range(1, len(counts) + 1)):
        problems.append(
            f"execution counts are {counts}, not 1..{len(counts)}: restart the kernel, run all "
            "cells from the top, and save"
        )
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(f"cell {index} has an error output: {output.get('ename')}: {output.get('evalue')}")
    return problems


def output_texts(nb):
    """(cell index, text) for every textual output: streams, text/* data, tracebacks."""
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if "text" in output:
                yield index, "".join(output["text"])
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/") or mime.endswith(("json", "javascript")):
                    yield index, value if isinstance(value, str) else str(value)
            if "traceback" in output:
                yield index, "\n".join(output["traceback"])


def machine_path_problems(nb) -> list[str]:
    problems = []
    for index, text in output_texts(nb):
        for path in MACHINE_PATHS:
            at = text.find(path)
            if at >= 0:
                problems.append(f"cell {index} output shows a machine path: ...{text[max(0, at - 30):at + 50]}...")
    return problems


def citation_problems(markdown: str, keys: set[str]) -> list[str]:
    problems = []
    for group in CITE.findall(markdown):
        for key in (k.strip() for k in group.split(",")):
            if key not in keys:
                problems.append(f"{{cite}} key {key!r} is not in book/references.bib")
    return problems


def notebook_markdown(nb) -> str:
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")


# ---------------------------------------------------------------------------------------------
# The rules applied to the committed notebooks and pages


def report(problems: dict[str, list[str]]) -> str:
    return "\n".join(f"{name}:\n  " + "\n  ".join(found) for name, found in problems.items() if found)


def read(path: Path):
    return nbformat.read(path, as_version=4)


def test_every_notebook_is_in_the_toc() -> None:
    listed = set(toc_files())
    missing = [p.relative_to(ROOT).as_posix() for p in NOTEBOOKS if f"notebooks/{p.stem}" not in listed]
    assert not missing, (
        f"notebooks not in _toc.yml: {missing}; add a line `- file: notebooks/<name>` under their "
        "part (see the comment at the top of _toc.yml)"
    )


def test_every_toc_entry_exists() -> None:
    missing = [
        entry
        for entry in toc_files()
        if not any((ROOT / f"{entry}{suffix}").is_file() for suffix in (".md", ".ipynb"))
    ]
    assert not missing, f"_toc.yml lists files that do not exist (as .md or .ipynb): {missing}"


def test_first_code_cell_installs_d2lbn_only_when_missing() -> None:
    url = repository_url()
    problems = {p.name: install_cell_problems(read(p), url) for p in NOTEBOOKS}
    assert not any(problems.values()), report(problems)


def test_executed_in_one_clean_run() -> None:
    problems = {p.name: execution_problems(read(p)) for p in NOTEBOOKS}
    assert not any(problems.values()), report(problems)


def test_no_machine_paths_in_outputs() -> None:
    problems = {p.name: machine_path_problems(read(p)) for p in NOTEBOOKS}
    assert not any(problems.values()), report(problems)


def test_notebooks_are_small() -> None:
    big = {p.name: f"{p.stat().st_size / 1e6:.1f} MB" for p in NOTEBOOKS if p.stat().st_size >= MAX_BYTES}
    assert not big, f"notebooks of 2 MB or more (shrink figures, drop long outputs): {big}"


def test_citations_exist() -> None:
    keys = bib_keys()
    problems = {p.name: citation_problems(notebook_markdown(read(p)), keys) for p in NOTEBOOKS}
    problems |= {
        p.relative_to(ROOT).as_posix(): citation_problems(p.read_text(encoding="utf8"), keys)
        for p in sorted((ROOT / "book").glob("*.md"))
    }
    assert not any(problems.values()), report(problems)


def test_contributing_shows_the_install_cell() -> None:
    contributing = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf8")
    fences = re.findall(r"^( *)```python\n(.*?)^\1```", contributing, flags=re.MULTILINE | re.DOTALL)
    blocks = [textwrap.dedent(body).rstrip("\n").splitlines() for _, body in fences]
    assert install_cell_lines() in blocks, (
        "CONTRIBUTING.md must show, in a ```python block, the exact first code cell that "
        f"tests/test_notebooks.py expects:\n" + "\n".join(install_cell_lines())
    )


# ---------------------------------------------------------------------------------------------
# Each rule fails on a notebook that breaks it

URL = "https://example.org/d2lbn"


def good_notebook():
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("# A chapter\n\nAs {cite:t}`ioffe2015batch` showed."),
        new_code_cell("# Colab: install the helpers\n" + "\n".join(install_cell_lines(URL)), execution_count=1),
        new_code_cell("x = 1 + 1\nx", execution_count=2,
                      outputs=[new_output("execute_result", {"text/plain": "2"}, execution_count=2)]),
        new_code_cell("", execution_count=None),  # an empty cell is never executed
        new_code_cell("print('done')", execution_count=3, outputs=[new_output("stream", text="done\n")]),
    ]
    return nb


def test_rules_accept_a_good_notebook() -> None:
    nb = good_notebook()
    assert install_cell_problems(nb, URL) == []
    assert execution_problems(nb) == []
    assert machine_path_problems(nb) == []
    assert citation_problems(notebook_markdown(nb), {"ioffe2015batch"}) == []


@pytest.mark.parametrize(
    "source",
    [
        "import d2lbn",  # no fallback install
        '%pip install "d2lbn @ git+https://example.org/d2lbn"',  # installs unconditionally
        "\n".join(install_cell_lines("https://github.com/someone/else")),  # another repository
        "\n".join(install_cell_lines(URL)).replace("--quiet ", ""),  # another form
    ],
)
def test_install_rule_rejects(source: str) -> None:
    nb = good_notebook()
    nb.cells[1].source = source
    assert install_cell_problems(nb, URL)


def test_install_rule_rejects_another_first_cell() -> None:
    nb = good_notebook()
    nb.cells.insert(1, new_code_cell("import torch", execution_count=1))
    assert install_cell_problems(nb, URL)


@pytest.mark.parametrize("counts", [[1, 2, 4], [2, 3, 4], [1, 3, 2], [None, 2, 3]])
def test_execution_rule_rejects_out_of_order_runs(counts: list) -> None:
    nb = good_notebook()
    for cell, count in zip(code_cells(nb), counts):
        cell.execution_count = count
    assert execution_problems(nb)


def test_execution_rule_rejects_errors() -> None:
    nb = good_notebook()
    nb.cells[2].outputs.append(new_output("error", ename="ValueError", evalue="bad", traceback=[]))
    assert any("ValueError" in p for p in execution_problems(nb))


@pytest.mark.parametrize("path", MACHINE_PATHS)
def test_machine_path_rule(path: str) -> None:
    nb = good_notebook()
    nb.cells[4].outputs = [new_output("stream", text=f"saved to {path}x/data\n")]
    assert machine_path_problems(nb)
    nb = good_notebook()
    nb.cells[2].outputs = [new_output("display_data", {"text/html": f"<p>{path}y</p>"})]
    assert machine_path_problems(nb)


def test_citation_rule() -> None:
    keys = {"ioffe2015batch", "ba2016layer"}
    assert citation_problems("{cite:p}`ioffe2015batch,ba2016layer` and {cite}`ba2016layer`", keys) == []
    assert citation_problems("{cite:t}`ioffe2015batch, nobody2020`", keys) == [
        "{cite} key 'nobody2020' is not in book/references.bib"
    ]


def test_bib_keys_are_read() -> None:
    assert {"ioffe2015batch", "santurkar2018how", "zhang2023dive"} <= bib_keys()
