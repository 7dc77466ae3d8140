"""Front ends over the scheduler: the gRPC server (typed LLM API, KServe v2, health,
reflection) and Prometheus metrics."""
