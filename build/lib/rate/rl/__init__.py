"""RATE for offline RL: the model and its baselines, training windows, policies, rollouts, the run config and the offline trainer."""
