"""Gymnasium memory tasks of the project, registered under the ``rate`` namespace.

Installed as the package ``rate_envs`` (this folder is its source).  Importing it registers the
tasks; it is also the ``gymnasium.envs`` entry point of the distribution, which the library's
commands load before they make an environment (``rate.data.env_plugins``)::

    import rate_envs, gymnasium as gym
    env = gym.make("rate/TMaze-v0", corridor_length=30)      # or episode_length=32
    env = gym.make("rate/AAR-v0", episode_length=90)         # Action Associative Retrieval
    env = gym.make("rate_envs:rate/TMaze-v0")                # Gymnasium imports the package itself
    envs = gym.make_vec("rate/TMaze-v0", num_envs=100, episode_length=9600)  # batched numpy
    env = gym.make("rate/MemoryMaze-9x9-v0", episode_length=500)  # 64 x 64 RGB, memory-maze package
    env = gym.make("rate/ViZDoomTwoColors-v0", episode_length=2100)  # 64 x 112 RGB, vizdoom package

The length the evaluation sweeps is ``episode_length`` (T) for every task but MiniGrid-Memory,
whose grid ``size`` sets it (eval.length_kwarg: size), and POPGym, whose tasks have one fixed length.
"""

from gymnasium.envs.registration import register, registry

# Entry points name the installed package, so that environments recorded in a Minari dataset or
# an exported policy's metadata are recreated from the same module, however this one was imported.
ENTRY_POINTS = {
    "rate/TMaze-v0": "rate_envs.tmaze:TMazeEnv",
    "rate/AAR-v0": "rate_envs.aar:ActionAssociativeRetrievalEnv",
    # Evaluated over grid sizes: gym.make("rate/MiniGridMemory-v0", size=41) (eval.length_kwarg: size).
    "rate/MiniGridMemory-v0": "rate_envs.minigrid_memory:MiniGridMemoryEnv",
    "rate/POPGym-v0": "rate_envs.popgym_tasks:POPGymTask",
}
# Memory Maze (needs the memory-maze package and an OpenGL backend, envs/memory_maze.py), one id per
# maze size as the package registers them: gym.make("rate/MemoryMaze-9x9-v0", episode_length=500).
MEMORY_MAZE_SIZES = (9, 11, 13, 15)
ENTRY_POINTS |= {f"rate/MemoryMaze-{s}x{s}-v0": "rate_envs.memory_maze:MemoryMazeEnv" for s in MEMORY_MAZE_SIZES}
DEFAULT_KWARGS = {f"rate/MemoryMaze-{s}x{s}-v0": {"size": s} for s in MEMORY_MAZE_SIZES}
# ViZDoom-Two-Colors (needs the vizdoom package; its map is written by envs/vizdoom_two_colors.py).
ENTRY_POINTS["rate/ViZDoomTwoColors-v0"] = "rate_envs.vizdoom_two_colors:ViZDoomTwoColorsEnv"
# Native batched implementations: gym.make_vec(id, num_envs=N) steps N environments as arrays
# (rate.rl.rollout evaluates through them where one exists).
VECTOR_ENTRY_POINTS = {"rate/TMaze-v0": "rate_envs.tmaze_vector:TMazeVectorEnv"}


def register_envs() -> None:
    """Register every task (idempotent)."""
    for env_id, entry_point in ENTRY_POINTS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point, vector_entry_point=VECTOR_ENTRY_POINTS.get(env_id),
                     kwargs=DEFAULT_KWARGS.get(env_id, {}))


register_envs()
