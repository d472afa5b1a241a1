"""The RMT paper experiments' definitions (algorithmic tasks, language modelling): configs, model builders, evaluation; shared by train/ and eval/."""
