"""The primitives' old address: they live in :mod:`softfloor.hw.rtl.primitives`."""
from softfloor.hw.rtl.primitives import *  # noqa: F401,F403
from softfloor.hw.rtl.primitives import __all__  # noqa: F401
