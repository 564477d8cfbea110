"""Recognise single handwritten English letters (A-Z, a-z)."""

__version__ = "0.1.0"
