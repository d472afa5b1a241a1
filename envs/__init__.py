"""Gymnasium memory tasks of the project, registered under the ``rate`` namespace.

    import envs, gymnasium as gym
    env = gym.make("rate/TMaze-v0", corridor_length=30)
"""

from gymnasium.envs.registration import register, registry

if "rate/TMaze-v0" not in registry:
    register(id="rate/TMaze-v0", entry_point="envs.tmaze:TMazeEnv")
