"""The console scripts (rate-train, rate-eval, rate-export, rate-import-d4rl): argument parsing, one error line per bad input, the run folder and its result row."""
