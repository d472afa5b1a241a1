"""Shipping a policy: checkpoints, export to .pt2 / ONNX with the recurrent state, the standalone ONNX runner."""
