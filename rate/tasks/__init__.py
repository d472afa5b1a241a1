"""Data generators of the RMT paper's experiments: algorithmic tasks and the character-level corpus streams."""
