"""Sphinx extension: load reports produced by running the example code at build time.

A page writes::

    ```{load-report-example}
    :ok: false
    :expect: looks like resnet101
    import torchvision, resnetzoo
    report = resnetzoo.remap.diagnose(resnetzoo.resnet50(), torchvision.models.resnet101().state_dict())
    ```

and gets the code, then the report that code really prints. The options are checked
(:func:`zoo_snippets.report_problems`); a report that no longer says what the page
claims is a build warning, so the examples cannot go stale. Each example runs in a
fresh namespace and an empty temporary directory.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from zoo_snippets import in_temp_dir, report_problems, run_snippet

__all__ = ["LoadReportExample", "setup"]

logger = logging.getLogger(__name__)


def literal(text: str, *, language: str) -> nodes.literal_block:
    """A highlighted literal block."""
    block = nodes.literal_block(text, text)
    block["language"] = language
    return block


class LoadReportExample(SphinxDirective):
    """Show an example's code and the ``str(report)`` it produces."""

    has_content = True
    option_spec = {
        "ok": directives.unchanged,
        "convention": directives.unchanged,
        "expect": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        code = "\n".join(self.content)
        source, line = self.get_source_info()
        try:
            with in_temp_dir():
                report = run_snippet(code, filename=f"{source}:{line}").get("report")
        except Exception as exc:  # the page shows the failure's cause, not a Sphinx traceback
            logger.warning(
                "load-report-example failed: %s: %s",
                type(exc).__name__,
                exc,
                location=self.get_location(),
            )
            return [literal(code, language="python")]
        for problem in report_problems(report, self.options):
            logger.warning("load-report-example: %s", problem, location=self.get_location())
        container = nodes.container(classes=["zoo-report-example"])
        container += literal(code, language="python")
        container += nodes.paragraph("", "", nodes.emphasis("", "print(report):"))
        container += literal(str(report), language="text")
        return [container]


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the ``load-report-example`` directive."""
    app.add_directive("load-report-example", LoadReportExample)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
