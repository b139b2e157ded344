"""Options: the option table (``options``) and the YAML + command-line merge over it (``loader``)."""
from .._moved import moved_attr as _moved_attr


# the names this module had before the package was laid out by role (acnet_ms/_moved.py)
__getattr__ = _moved_attr(__name__)
