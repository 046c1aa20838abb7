"""The beat adapters' old address: they live in :mod:`softfloor.hw.rtl.stream_io`."""
from softfloor.hw.rtl.stream_io import *  # noqa: F401,F403
from softfloor.hw.rtl.stream_io import __all__  # noqa: F401
