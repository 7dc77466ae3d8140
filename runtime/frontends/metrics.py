"""Prometheus metrics of the server (own registry, served on an HTTP port).

Names follow Prometheus conventions (`_seconds`, `_total`). Tokens/s is derived by Prometheus
from `gptoss_edge_generated_tokens_total` (rate()); a gauge of the last second's rate is kept
too for plain scrapes without PromQL.
"""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.ttft = Histogram("gptoss_edge_time_to_first_token_seconds",
                              "Request arrival to first generated token", buckets=_LATENCY_BUCKETS,
                              registry=r)
        self.itl = Histogram("gptoss_edge_inter_token_latency_seconds",
                             "Time between consecutive generated tokens of one request",
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram("gptoss_edge_queue_time_seconds",
                                    "Request arrival to KV slot assignment",
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.generated = Counter("gptoss_edge_generated_tokens", "Tokens generated", registry=r)
        self.prompt = Counter("gptoss_edge_prompt_tokens", "Prompt tokens prefilled", registry=r)
        self.requests = Counter("gptoss_edge_requests", "Finished requests by reason",
                                ["reason"], registry=r)
        self.rejected = Counter("gptoss_edge_rejected_requests", "Requests refused, by error kind (gRPC code names)",
                                ["code"], registry=r)
        self.kv_slots_used = Gauge("gptoss_edge_kv_slots_used", "KV slots held by requests",
                                   registry=r)
        self.kv_slots_total = Gauge("gptoss_edge_kv_slots_total", "KV slots available",
                                    registry=r)
        self.kv_usage = Gauge("gptoss_edge_kv_cache_usage_ratio",
                              "Cached tokens / (slots x context)", registry=r)
        self.queue_depth = Gauge("gptoss_edge_queue_depth", "Requests waiting for a KV slot",
                                 registry=r)
        self.tokens_per_second = Gauge("gptoss_edge_tokens_per_second",
                                       "Generated tokens per second over the last window",
                                       registry=r)
        self.step_seconds = Histogram("gptoss_edge_engine_step_seconds", "One engine step",
                                      buckets=_LATENCY_BUCKETS, registry=r)
        self.cancel_release_steps = Histogram(
            "gptoss_edge_cancel_release_steps",
            "Engine steps between a cancel (client gone, deadline) and its KV slot's release",
            buckets=(0, 1, 2, 4, 8), registry=r)
        self._window_start = time.monotonic()
        self._window_tokens = 0

    def count_tokens(self, n: int) -> None:
        self.generated.inc(n)
        self._window_tokens += n
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self.tokens_per_second.set(self._window_tokens / (now - self._window_start))
            self._window_start, self._window_tokens = now, 0

    def set_kv(self, used: int, total: int, cached_tokens: int, max_context: int) -> None:
        self.kv_slots_used.set(used)
        self.kv_slots_total.set(total)
        self.kv_usage.set(cached_tokens / max(1, total * max_context))

    def serve_http(self, port: int, addr: str = "127.0.0.1") -> int:
        """Start the /metrics HTTP endpoint in a daemon thread; returns the bound port."""
        try:
            server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as e:
            raise OSError(f"--metrics-port {port} on {addr}: cannot listen there: "
                          f"{e.strerror or e}") from None
        self._http = server
        return server.server_port

    def close_http(self) -> None:
        """Stop the /metrics endpoint (if started) and free its port."""
        server, self._http = getattr(self, "_http", None), None
        if server is not None:
            server.shutdown()
            server.server_close()
