"""Find and run the code in the docs; shared by the Sphinx extensions and ``tests/test_docs.py``.

Three kinds of code live in the Markdown pages:

* ```` ```python ```` fences: examples a reader copies. The tests run each page's
  fences in order in one fresh namespace, statement by statement. When a statement
  prints and is followed by a comment (on its last line, then on the comment lines
  right below it), each printed line must begin the matching comment line:
  ``print(x.shape)  # torch.Size([2, 10])``. A fence that needs the network or a
  GPU is preceded by a MyST comment line ``% docs-test: skip (reason)``.
* ```` ```{load-report-example} ```` blocks: code that ends with a ``report``
  variable; the build runs it and shows ``str(report)``, and checks the options
  ``:ok:``, ``:convention:`` and ``:expect:`` (``;``-separated substrings of the
  report), so an example that stops showing what its prose says fails the build.
* ```` ```{cli-run} COMMAND ```` blocks: a command-line call; the block's content
  is optional Python that prepares files first. The build shows the real output
  and checks the exit code (``:exit-code:``, default 0).

Docstrings with ``>>>`` examples are rendered in the API reference, so they are
code in the docs too: :func:`run_docstring_examples` runs them with :mod:`doctest`.

Nothing here imports Sphinx, so the tests run without it. From the shell::

    python docs/_ext/zoo_snippets.py docs/quickstart.md docs/guides/*.md
    python docs/_ext/zoo_snippets.py --all --docstrings --json results.json docs/**/*.md

runs each page's ``python`` blocks in a fresh namespace and an empty temporary
directory (``--all`` also the ``load-report-example`` and ``cli-run`` blocks, which
the Sphinx build runs anyway), with the network switched off, and exits with 1 if
any fails.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import doctest
import importlib
import io
import json
import os
import pkgutil
import re
import shlex
import sys
import tempfile
import tokenize
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "COMMANDS",
    "CodeBlock",
    "CommandResult",
    "PageResult",
    "code_blocks",
    "in_temp_dir",
    "main",
    "package_modules",
    "report_problems",
    "run_command",
    "run_docstring_examples",
    "run_page",
    "run_snippet",
]

SKIP_MARKER = re.compile(r"^%\s*docs-test:\s*skip\b\s*(?P<reason>.*)$")
_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<info>.*?)\s*$")
_DIRECTIVE = re.compile(r"^\{(?P<name>[\w-]+)\}\s*(?P<argument>.*)$")
_OPTION = re.compile(r"^:(?P<key>[\w-]+):\s*(?P<value>.*)$")

#: Program name → ``module:function`` taking ``argv`` and returning an exit code.
COMMANDS: dict[str, str] = {
    "resnetzoo": "resnetzoo.cli:main",
    "python -m resnetzoo.recipes.cub200": "resnetzoo.recipes.cub200.__main__:main",
}


@dataclass(frozen=True)
class CodeBlock:
    """A fenced block of a Markdown page.

    Attributes:
        kind: ``"python"``, or a directive name (``"load-report-example"``, ``"cli-run"``).
        code: the block's body, options removed.
        lineno: 1-based line of the opening fence.
        argument: the directive's argument (the command of ``cli-run``), else ``""``.
        options: the directive's ``:key: value`` options.
        skip: why a ``python`` block is not run, or ``None`` to run it.
    """

    kind: str
    code: str
    lineno: int
    argument: str = ""
    options: Mapping[str, str] = field(default_factory=dict)
    skip: str | None = None


def code_blocks(text: str) -> list[CodeBlock]:
    """The ``python``, ``load-report-example`` and ``cli-run`` blocks of a Markdown text, in order.

    Args:
        text: the page's Markdown source.

    Returns:
        One :class:`CodeBlock` per block; other fences (``bash``, ``text`` …) are left out.
    """
    lines = text.splitlines()
    blocks: list[CodeBlock] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info, start = match["fence"], match["info"], i
        end = next(
            (
                j
                for j in range(i + 1, len(lines))
                if lines[j].strip().startswith(fence[0] * len(fence))
                and not lines[j].strip().strip(fence[0])
            ),
            len(lines),
        )
        body = lines[start + 1 : end]
        i = end + 1
        directive = _DIRECTIVE.match(info)
        if info in ("python", "py"):
            previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            skip = SKIP_MARKER.match(previous.strip())
            blocks.append(
                CodeBlock(
                    "python",
                    "\n".join(body),
                    start + 1,
                    skip=(skip["reason"] or "marked") if skip else None,
                )
            )
        elif directive and directive["name"] in ("load-report-example", "cli-run"):
            options: dict[str, str] = {}
            while body and (option := _OPTION.match(body[0])):
                options[option["key"]] = option["value"]
                body = body[1:]
            blocks.append(
                CodeBlock(
                    directive["name"],
                    "\n".join(body).strip("\n"),
                    start + 1,
                    directive["argument"],
                    options,
                )
            )
    return blocks


@contextlib.contextmanager
def in_temp_dir() -> Iterator[Path]:
    """Run the enclosed code in a new empty directory, removed afterwards."""
    previous = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="resnetzoo-docs-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(previous)


def run_snippet(
    code: str, *, filename: str, namespace: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Execute ``code`` in ``namespace`` (a fresh one by default) and return the namespace.

    Args:
        code: Python source.
        filename: shown in tracebacks, e.g. ``"docs/guides/loading.md:120"``.
        namespace: globals to run in; pass the same dict to run several blocks in order.
    """
    namespace = {"__name__": "__docs__"} if namespace is None else namespace
    exec(compile(code, filename, "exec"), namespace)  # noqa: S102 - the docs' own examples
    return namespace


def _comments(code: str) -> dict[int, str]:
    """Line number (1-based) → the text of the comment on that line, without ``#``."""
    tokens = tokenize.generate_tokens(io.StringIO(code).readline)
    return {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}


def _expected_output(lines: list[str], comments: dict[int, str], last: int, stop: int) -> list[str]:
    """The comment after a statement ending on line ``last``, and comment-only lines below it."""
    expected = (
        [comments[last]]
        if last in comments and not lines[last - 1].lstrip().startswith("#")
        else []
    )
    for lineno in range(last + 1, stop):
        if not lines[lineno - 1].lstrip().startswith("#"):
            break
        expected.append(comments.get(lineno, ""))
    return expected


def run_checked(
    code: str, *, filename: str, first_line: int, namespace: dict[str, Any]
) -> list[str]:
    """Run ``code`` statement by statement and compare what each prints with its comment.

    Args:
        code: Python source.
        filename: the page, for tracebacks.
        first_line: the page line of ``code``'s first line, so tracebacks point into the page.
        namespace: globals to run in.

    Returns:
        One message per printed line that does not begin its comment line.
    """
    tree = ast.parse(code, filename)
    lines, comments = code.splitlines(), _comments(code)
    problems = []
    for i, statement in enumerate(tree.body):
        stop = tree.body[i + 1].lineno if i + 1 < len(tree.body) else len(lines) + 1
        expected = _expected_output(lines, comments, statement.end_lineno or statement.lineno, stop)
        page_line = first_line + statement.lineno - 1
        module = ast.Module(body=[statement], type_ignores=[])
        ast.increment_lineno(module, first_line - 1)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(module, filename, "exec"), namespace)  # noqa: S102 - the docs' own examples
        printed = out.getvalue().rstrip("\n").splitlines()
        if not expected or not printed:
            continue
        for j, line in enumerate(printed):
            said = expected[j] if j < len(expected) else "(nothing)"
            if not said.startswith(line.strip()):
                problems.append(f"line {page_line} prints {line.strip()!r}, the page says {said!r}")
                break
    return problems


def report_problems(report: Any, options: Mapping[str, str]) -> list[str]:
    """Check a load report against a ``load-report-example``'s options.

    Args:
        report: the :class:`~resnetzoo.remap.LoadReport` the example produced.
        options: ``ok`` (``true``/``false``), ``convention`` (the detected convention's
            name) and ``expect`` (``;``-separated substrings of ``str(report)``).

    Returns:
        A description of each expectation that does not hold; empty when all hold.
    """
    if not hasattr(report, "ok") or not hasattr(report, "convention"):
        return [f"the example must set `report` to a LoadReport, got {type(report).__name__}"]
    problems = []
    if "ok" in options:
        wanted = options["ok"].strip().lower() in ("true", "yes", "1")
        if report.ok != wanted:
            problems.append(f"report.ok is {report.ok}, the page says {wanted}")
    if "convention" in options and report.convention != options["convention"].strip():
        problems.append(
            f"detected convention {report.convention!r}, the page says {options['convention'].strip()!r}"
        )
    text = str(report)
    for expected in filter(None, (part.strip() for part in options.get("expect", "").split(";"))):
        if expected not in text:
            problems.append(f"the report does not contain {expected!r}")
    return problems


@dataclass(frozen=True)
class CommandResult:
    """What a command returned and printed (standard output and error interleaved, as in a terminal)."""

    argv: list[str]
    exit_code: int
    output: str


def run_command(command: str, *, setup: str = "", filename: str = "<cli-run>") -> CommandResult:
    """Run a documented command line in-process, in a fresh temporary directory.

    The program (``resnetzoo`` …) is looked up in :data:`COMMANDS` and its ``main``
    called with the rest of the words, exactly what the installed script does.

    Args:
        command: the command line as a reader types it, e.g. ``"resnetzoo list 'resnet5*'"``.
        setup: Python code run first in the same directory (to write a checkpoint, say).
        filename: shown in tracebacks of ``setup``.

    Raises:
        ValueError: the command starts with no program in :data:`COMMANDS`.
    """
    words = shlex.split(command)
    # The longest matching program first: "python -m pkg" before "python".
    programs = sorted(COMMANDS, key=len, reverse=True)
    program = next((p for p in programs if words[: len(shlex.split(p))] == shlex.split(p)), None)
    if program is None:
        raise ValueError(f"unknown program in {command!r}; known: {', '.join(COMMANDS)}")
    argv = words[len(shlex.split(program)) :]
    module, _, function = COMMANDS[program].partition(":")
    main = getattr(importlib.import_module(module), function)
    output = io.StringIO()
    with in_temp_dir():
        if setup.strip():
            run_snippet(setup, filename=filename)
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            code = main(argv)
    return CommandResult(argv, int(code or 0), output.getvalue())


# ------------------------------------------------------------------ running pages
@dataclass
class PageResult:
    """What running one page's code gave.

    Attributes:
        page: the page (or ``"docstrings:<module>"``).
        ran: how many blocks ran.
        skipped: ``"line N: reason"`` for each block marked to skip.
        failures: ``"line N (kind): error"`` for each block that failed.
    """

    page: str
    ran: int = 0
    skipped: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _failure(block: CodeBlock, message: str) -> str:
    return f"line {block.lineno} ({block.kind}): {message}"


def run_page(path: Path, *, directives: bool = False) -> PageResult:
    """Run a Markdown page's ``python`` blocks in order in one fresh namespace.

    The first failing ``python`` block stops the page (later blocks build on it).

    Args:
        path: the page.
        directives: also run its ``load-report-example`` blocks (each in a fresh
            namespace, checking their options) and ``cli-run`` blocks (checking the
            exit code).
    """
    import torch

    result = PageResult(str(path))
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    torch.manual_seed(0)
    python_failed = False
    blocks = code_blocks(path.read_text(encoding="utf-8"))  # before the directory changes
    with in_temp_dir():
        for block in blocks:
            where = f"{path}:{block.lineno}"
            try:
                if block.kind == "python":
                    if block.skip is not None:
                        result.skipped.append(f"line {block.lineno}: {block.skip}")
                        continue
                    if python_failed:
                        continue
                    mismatches = run_checked(
                        block.code,
                        filename=str(path),
                        first_line=block.lineno + 1,
                        namespace=namespace,
                    )
                    result.failures += [_failure(block, m) for m in mismatches]
                elif not directives:
                    continue
                elif block.kind == "load-report-example":
                    with in_temp_dir():
                        report = run_snippet(block.code, filename=where).get("report")
                    result.failures += [
                        _failure(block, p) for p in report_problems(report, block.options)
                    ]
                elif block.kind == "cli-run":
                    outcome = run_command(block.argument, setup=block.code, filename=where)
                    expected = int(block.options.get("exit-code", "0"))
                    if outcome.exit_code != expected:
                        result.failures.append(
                            _failure(
                                block,
                                f"exit code {outcome.exit_code}, expected {expected}: {outcome.output.strip()[-500:]}",
                            )
                        )
                result.ran += 1
            except BaseException as exc:  # noqa: BLE001 - report every failure, SystemExit included
                if isinstance(exc, KeyboardInterrupt):
                    raise
                python_failed = python_failed or block.kind == "python"
                tb = "".join(traceback.format_exception(exc)[-6:]).rstrip()
                result.failures.append(_failure(block, f"{type(exc).__name__}: {exc}\n{tb}"))
    return result


def package_modules(package: str) -> list[str]:
    """Every importable module of ``package``, without private and ``__main__`` modules, sorted."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=package + "."):
        parts = info.name.split(".")[1:]
        if parts[-1] == "__main__" or any(part.startswith("_") for part in parts):
            continue
        names.append(info.name)
    return sorted(names)


def run_docstring_examples(modname: str) -> PageResult:
    """Run the ``>>>`` examples in a module's docstrings with :mod:`doctest`."""
    result = PageResult(f"docstrings:{modname}")
    module = importlib.import_module(modname)
    finder, out = doctest.DocTestFinder(exclude_empty=True), io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    with in_temp_dir():
        for test in finder.find(module, modname):
            # DocTestFinder keeps to the module's own objects: re-exports run in their home module.
            if test.examples:
                failed, tried = runner.run(test, out=out.write)
                result.ran += tried
                if failed:
                    result.failures.append(f"{test.name}: {failed} of {tried} examples failed")
    if result.failures:
        result.failures.append(out.getvalue())
    return result


def _offline() -> None:
    # Set before anything imports huggingface_hub, which reads HF_HUB_OFFLINE once.
    for flag in ("RESNETZOO_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[flag] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")


def main(argv: Sequence[str] | None = None) -> int:
    """Run pages' code from the shell; the exit code is 1 when any block fails."""
    parser = argparse.ArgumentParser(description="Run the code blocks of documentation pages.")
    parser.add_argument("pages", nargs="*", type=Path, help="Markdown pages")
    parser.add_argument(
        "--all", action="store_true", help="also run load-report-example and cli-run blocks"
    )
    parser.add_argument(
        "--docstrings", action="store_true", help="also run the package's docstring examples"
    )
    parser.add_argument(
        "--package", default="resnetzoo", help="package whose docstrings --docstrings runs"
    )
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    _offline()
    results = [run_page(page, directives=args.all) for page in args.pages]
    if args.docstrings:
        results += [run_docstring_examples(m) for m in package_modules(args.package)]
    for r in results:
        status = "FAILED" if r.failures else "ok"
        print(f"{status:6} {r.page}: {r.ran} run, {len(r.skipped)} skipped")
        for failure in r.failures:
            print("       " + failure.replace("\n", "\n       "))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2), encoding="utf-8")
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
