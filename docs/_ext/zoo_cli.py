"""Sphinx extension: command-line help and command output, captured at build time.

* ``{argparse-help} MODULE:FUNCTION`` calls a function returning an
  :class:`argparse.ArgumentParser` and shows its ``--help``, then the help of every
  subcommand, so the page always matches the parser.
* ``{cli-run} COMMAND`` runs a command line in-process (see
  :func:`zoo_snippets.run_command`) and shows it with its output; the directive's
  content is optional Python run first in the same temporary directory. An exit
  code other than ``:exit-code:`` (default 0) is a build warning.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from importlib import import_module
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from zoo_reports import literal
from zoo_snippets import run_command

__all__ = ["ArgparseHelp", "CliRun", "setup"]

logger = logging.getLogger(__name__)

# argparse wraps help to the terminal width; fix it so pages do not depend on the builder's.
_COLUMNS = "88"


@contextlib.contextmanager
def _fixed_width() -> Iterator[None]:
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = _COLUMNS
    try:
        yield
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    # argparse has no public accessor for subparsers; sphinx-argparse reads the same field.
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out += list(action.choices.items())
    return out


class ArgparseHelp(SphinxDirective):
    """``--help`` of a parser and of each of its subcommands."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module, _, function = self.arguments[0].partition(":")
        try:
            parser = getattr(import_module(module), function)()
        except Exception as exc:
            logger.warning(
                "argparse-help: cannot build %s: %s",
                self.arguments[0],
                exc,
                location=self.get_location(),
            )
            return []
        out: list[nodes.Node] = []
        for title, sub in [(None, parser), *_subcommands(parser)]:
            try:
                with _fixed_width():
                    text = sub.format_help()
            except Exception as exc:  # e.g. a bare "%" in a help string: --help itself crashes
                logger.warning(
                    "argparse-help: `%s --help` fails: %s: %s",
                    sub.prog,
                    type(exc).__name__,
                    exc,
                    location=self.get_location(),
                )
                continue
            if title is not None:
                out.append(
                    nodes.rubric(
                        "", f"{parser.prog} {title}", ids=[nodes.make_id(f"{parser.prog}-{title}")]
                    )
                )
            out.append(literal(text, language="text"))
        return out


class CliRun(SphinxDirective):
    """A command line and what it prints."""

    required_arguments = 1
    final_argument_whitespace = True
    has_content = True
    option_spec = {"exit-code": directives.nonnegative_int}

    def run(self) -> list[nodes.Node]:
        command = self.arguments[0]
        source, line = self.get_source_info()
        try:
            with _fixed_width():
                result = run_command(
                    command, setup="\n".join(self.content), filename=f"{source}:{line}"
                )
        except Exception as exc:
            logger.warning(
                "cli-run: %r failed: %s: %s",
                command,
                type(exc).__name__,
                exc,
                location=self.get_location(),
            )
            return []
        expected = self.options.get("exit-code", 0)
        if result.exit_code != expected:
            logger.warning(
                "cli-run: %r exited with %d, the page expects %d; output: %s",
                command,
                result.exit_code,
                expected,
                result.output.strip()[-500:],
                location=self.get_location(),
            )
        text = f"$ {command}\n{result.output}".rstrip()
        if result.exit_code:
            text += f"\n$ echo $?\n{result.exit_code}"
        return [literal(text, language="console")]


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the ``argparse-help`` and ``cli-run`` directives."""
    app.add_directive("argparse-help", ArgparseHelp)
    app.add_directive("cli-run", CliRun)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
