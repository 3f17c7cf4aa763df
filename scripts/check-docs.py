#!/usr/bin/env python3
"""Checks that every Documentation/*.rst parses as reStructuredText without warnings.

Sphinx's toctree is accepted as a known directive; everything else must be plain docutils.
"""
import io
import pathlib
import sys

import docutils.core
from docutils.parsers.rst import Directive, directives


class TocTree(Directive):
    has_content = True
    option_spec = {"maxdepth": directives.unchanged}

    def run(self):
        return []


directives.register_directive("toctree", TocTree)

root = pathlib.Path(__file__).resolve().parent.parent / "Documentation"
bad = 0
for path in sorted(root.glob("*.rst")):
    warnings = io.StringIO()
    docutils.core.publish_doctree(
        path.read_text(),
        source_path=str(path),
        settings_overrides={"warning_stream": warnings, "report_level": 2, "halt_level": 5},
    )
    if warnings.getvalue():
        bad += 1
        sys.stderr.write(warnings.getvalue())
sys.exit(1 if bad else 0)
