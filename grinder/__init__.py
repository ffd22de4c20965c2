"""Grinder: research framework for grid trading and passive market making on crypto perpetuals."""

__version__ = "0.1.0"
