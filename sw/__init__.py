"""softfloor: smooth surrogates of floor/round -> exact integers -> bit-exact FPGA RTL.

Importing ``softfloor`` is light (numpy only); torch, Amaranth and cocotb are imported by the
stages that need them. ``softfloor.nn`` holds the quantized layers; ``softfloor.fit`` trains a
network of them and ``softfloor.export`` turns it into an integer model
(:class:`~softfloor.intmodel.IntModel`).
"""
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "export":
        from .nn.exporter import export
        return export
    if name == "fit":
        from .loop import fit
        return fit
    raise AttributeError(f"module 'softfloor' has no attribute {name!r}")
