"""Deterministic simulation of Caisey's recovery (DESIGN §9): ``python -m sim --seeds N``."""
