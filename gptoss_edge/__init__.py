"""gptoss-edge: gpt-oss checkpoints -> ONNX -> TensorRT / ONNX Runtime engines, served over gRPC."""
__version__ = "0.1.0"
