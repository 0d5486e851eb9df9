"""Kinds of workers an IMap pool can hold (see ``base`` for the seam)."""
