"""Offline data: episodes read from Minari, Minari datasets written safely, D4RL import, environment plugins."""
