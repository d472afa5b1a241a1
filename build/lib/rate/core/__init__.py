"""The Recurrent Memory Transformer: attention, masks, memory tokens and update rules, decoder layers, the segment recurrence, the streaming decoder and the token LM around it."""
