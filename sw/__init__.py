"""softfloor: smooth surrogates of floor/round -> exact integers -> bit-exact FPGA RTL.

Importing ``softfloor`` is light (numpy only); torch, Amaranth and cocotb are imported by the
stages that need them.
"""
__version__ = "0.1.0"
