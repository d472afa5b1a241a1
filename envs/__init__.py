"""Gymnasium memory tasks of the project, registered under the ``rate`` namespace.

    import envs, gymnasium as gym
    env = gym.make("rate/TMaze-v0", corridor_length=30)      # or episode_length=32
    env = gym.make("rate/AAR-v0", episode_length=90)         # Action Associative Retrieval

Every task takes ``episode_length`` (T), the length the evaluation sweeps.
"""

from gymnasium.envs.registration import register, registry

if "rate/TMaze-v0" not in registry:
    register(id="rate/TMaze-v0", entry_point="envs.tmaze:TMazeEnv")
if "rate/AAR-v0" not in registry:
    register(id="rate/AAR-v0", entry_point="envs.aar:ActionAssociativeRetrievalEnv")
if "rate/MiniGridMemory-v0" not in registry:
    # Evaluated over grid sizes: gym.make("rate/MiniGridMemory-v0", size=41) (eval.length_kwarg: size).
    register(id="rate/MiniGridMemory-v0", entry_point="envs.minigrid_memory:MiniGridMemoryEnv")
if "rate/POPGym-v0" not in registry:
    register(id="rate/POPGym-v0", entry_point="envs.popgym_tasks:POPGymTask")
