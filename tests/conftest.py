"""Fixtures shared by several test files."""

from tests.xvfb import xdisplay

__all__ = ["xdisplay"]
