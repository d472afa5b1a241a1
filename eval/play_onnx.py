"""`python -m eval.play_onnx POLICY.onnx [--lengths ...] [--episodes N] [--sample]`: play an exported
ONNX policy and report its success rate.  The runner itself is rate/deploy/onnx_runner.py, a file that
imports only numpy, onnxruntime and gymnasium, so it ships on its own next to the policy."""

import sys

from rate.deploy.onnx_runner import main

if __name__ == "__main__":
    sys.exit(main())
