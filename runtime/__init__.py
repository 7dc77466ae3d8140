"""Engine backends, scheduler, KV cache, sampling, harmony chat, gRPC server."""
