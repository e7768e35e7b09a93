"""Stand-in for Pyodide as the Workers runtime embeds it (see tests/workers_standin/README.md)."""

__version__ = "0.28.2"  # compatibility dates 2025-09-29 … (Python 3.13 in production)
