"""Engine: the backend protocol and its implementations (ONNX Runtime, numpy reference), the
opener that picks one from a manifest, KV slots, the continuous-batching scheduler, the sampler."""
