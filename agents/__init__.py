"""Annotator agents, the judge, aggregation and routing.

The hot modules (merforge.native.COMPILED) load from their Cython builds where a build of
their current source exists (see merforge/native.py); otherwise they run as Python.
"""

from merforge.native import use_compiled

use_compiled(__name__, __path__)
