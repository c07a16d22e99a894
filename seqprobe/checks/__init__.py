"""Checks join cases and the engine: one runner per kind (`runners`), sharing `outcome`'s skeleton."""
