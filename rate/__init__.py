"""rate: the Recurrent Memory Transformer (RMT) and RATE for offline reinforcement learning.

Main entry points::

    from rate.rmt import RMTConfig, RecurrentMemoryTransformer, RMTState
    from rate.incremental import IncrementalSegment
    from rate.lm import RecurrentLM
"""

__version__ = "0.1.0"
