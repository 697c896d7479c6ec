"""Defaults chosen by measurement on the bundled demo detector (README, "Choosing the defaults").

A module of its own, with no imports, so that the command line can show them without torch.
"""

DEFAULT_METHOD = "hirescam"
DEFAULT_LAYERS = "neck"
DEFAULT_FUSE = "sum"
