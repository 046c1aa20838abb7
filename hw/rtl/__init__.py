"""Amaranth implementations: primitives, stream adapters, and the units the ops build.

Nothing here plans: the ops of :mod:`softfloor.hw.ops` choose folds and stream widths, and
their ``build()`` returns one of these components.
"""
