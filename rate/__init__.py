"""rate: the Recurrent Memory Transformer (RMT) and RATE for offline reinforcement learning.

Main entry points::

    from rate.rmt import RMTConfig, RecurrentMemoryTransformer, RMTState
    from rate.streaming import StreamingDecoder
    from rate.lm import RecurrentLM
"""

__version__ = "0.1.0"
