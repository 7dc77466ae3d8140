"""Checkpoint -> ONNX -> engine directory."""
