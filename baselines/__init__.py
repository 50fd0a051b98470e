"""Comparison methods (IR-SDE, RePaint*, ...): each one file, registered as a `strbench.methods` entry point."""
