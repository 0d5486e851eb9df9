"""Ready-made worker functions, one theme per module (``io``: printing, reading files).

Every function follows the inbox convention: the item is ``inbox[0]``.
"""
from . import io

__all__ = ["io"]
