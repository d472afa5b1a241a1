"""The Recurrent Memory Transformer: attention, masks, memory tokens and update rules, decoder
layers, the segment recurrence, the streaming decoder with its key/value buffer (kv_buffer) and
fixed-shape state (stream_state), and the token LM around it."""
