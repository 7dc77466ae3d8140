"""`gptoss-edge serve`, `chat` and `bench`: the runtime's sub-commands."""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve an engine dir over gRPC",
                       description="Serve a compiled engine over gRPC (LLM API, KServe v2, "
                                   "health, reflection) with Prometheus metrics.")
    p.add_argument("engine_dir", nargs="?", type=Path,
                   help="compiled engine dir (default: the embedded default model)")
    add_server_options(p)
    p.set_defaults(func=run_serve)

    c = sub.add_parser("chat", help="chat with a server (streams to the terminal)")
    c.add_argument("message", help="the user message")
    c.add_argument("--server", default="", help="unix:PATH or HOST:PORT (default: the local "
                   "socket; if no server runs there, the default model in-process)")
    c.add_argument("--tool", action="append", type=Path, default=[],
                   help="JSON file with a tool {name, description, parameters} (or a list)")
    c.add_argument("--system", default="", help="developer instructions")
    c.add_argument("--reasoning", choices=["low", "medium", "high"], default="medium")
    c.add_argument("--temperature", type=float, default=None)
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--max-tokens", type=int, default=512)
    c.add_argument("--tls-ca", type=Path, help="CA certificate to verify the server (TLS)")
    c.add_argument("--token", default=None, help="bearer token (or env GPTOSS_EDGE_TOKEN)")
    c.set_defaults(func=run_chat)

    b = sub.add_parser("bench", help="TTFT, decode tok/s at 1/4/8 concurrent, peak RSS",
                       description="Serve the engine on a private socket and measure streams "
                                   "through the server against the backend driven directly.")
    b.add_argument("engine_dir", nargs="?", type=Path,
                   help="compiled engine dir (default: the embedded default model)")
    b.add_argument("--concurrency", default="1,4,8",
                   help="comma-separated numbers of concurrent streams to measure")
    b.add_argument("--prompt-tokens", type=int, default=64,
                   help="prompt length of each stream")
    b.add_argument("--gen-tokens", type=int, default=64, help="tokens generated per stream")
    b.add_argument("--max-memory", default=None, help="KV cache budget, e.g. 2GiB")
    add_engine_limits(b)
    b.set_defaults(func=run_bench)


def add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", default="", help="unix:PATH (default: $XDG_RUNTIME_DIR or /tmp "
                   "gptoss-edge-UID.sock) or HOST:PORT")
    p.add_argument("--http", default="", metavar="HOST:PORT",
                   help="also serve the OpenAI-compatible HTTP API (/v1/chat/completions, "
                        "/v1/models) here, with the same token and TLS files (port 0: any)")
    p.add_argument("--name", default=None, help="model name clients use (default: from manifest)")
    p.add_argument("--max-memory", default=None,
                   help="KV cache budget, e.g. 2GiB: as many --max-context slots as fit "
                        "(at most --max-slots)")
    add_engine_limits(p)
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests waiting for a KV slot before RESOURCE_EXHAUSTED")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus /metrics on this HTTP port (0: any free port)")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address the metrics HTTP server binds (default 127.0.0.1: this host only)")
    p.add_argument("--tls-cert", type=Path,
                   help="PEM certificate chain: serve TCP with TLS (needs --tls-key)")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument("--auth-token-file", type=Path,
                   help="file holding the bearer token clients must send")
    p.add_argument("--max-message-bytes", type=int, default=4 * 2**20,
                   help="largest gRPC request or response in bytes (default 4 MiB); larger "
                        "requests get RESOURCE_EXHAUSTED")
    p.add_argument("--drain-grace", type=float, default=30.0,
                   help="seconds in-flight requests may take to finish after SIGTERM")
    p.add_argument("--build-engine", action="store_true",
                   help="tensorrt engines: first build engine.plan when the engine has none for this "
                        "GPU, TensorRT and plugin library (kept in the engine dir; see build-engine)")
    p.add_argument("--no-prefix-reuse", action="store_true",
                   help="prefill every prompt in full (default: a request continues from the KV "
                        "a slot holds for the prefix it shares, e.g. the previous chat turn)")


def check_positive(args: argparse.Namespace, *names: str) -> None:
    """ValueError naming the first flag among `names` whose value is below 1."""
    for name in names:
        value = getattr(args, name)
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def add_engine_limits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-slots", type=int, default=8, help="most concurrent sequences")
    p.add_argument("--max-context", type=int, default=4096, help="tokens per sequence")
    p.add_argument("--max-step-tokens", type=int, default=256, help="prefill chunk size")
    from gptoss_edge.runtime.engine.opener import BACKEND_CHOICES
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="auto: by the engine's target (tensorrt engines need TensorRT; "
                        "reference runs them on CPU, exact and slow)")


def engine_limits(args: argparse.Namespace):
    from gptoss_edge.runtime.engine.opener import EngineLimits
    from gptoss_edge.runtime.engine.kv import parse_bytes

    check_positive(args, "max_slots", "max_context", "max_step_tokens")
    return EngineLimits(max_slots=args.max_slots, max_context=args.max_context,
                        max_step_tokens=args.max_step_tokens,
                        max_memory=parse_bytes(args.max_memory) if args.max_memory else None,
                        **({"saved_prefixes": 0} if getattr(args, "no_prefix_reuse", False) else {}))


def server_options(args: argparse.Namespace, name: str):
    from gptoss_edge.runtime.frontends.grpc_server import ServeOptions

    token = None
    if args.auth_token_file:
        token = args.auth_token_file.read_text().strip()
        if not token:
            raise ValueError(f"--auth-token-file {args.auth_token_file}: empty")
    return ServeOptions(
        listen=args.listen, model_name=args.name or name,
        max_queue=args.max_queue, metrics_port=args.metrics_port, metrics_host=args.metrics_host,
        tls_cert=args.tls_cert, tls_key=args.tls_key, auth_token=token,
        max_message_bytes=args.max_message_bytes, drain_grace_s=args.drain_grace,
        http=getattr(args, "http", ""), prefix_reuse=not getattr(args, "no_prefix_reuse", False))


def run_serve(args: argparse.Namespace) -> int:
    from gptoss_edge.engine_dir import EngineDirError
    from gptoss_edge.runtime.engine.opener import open_engine

    from gptoss_edge.runtime.frontends.grpc_server import parse_listen

    try:
        parse_listen(args.listen)              # a bad address fails before the engine loads
        engine_limits(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.build_engine and args.engine_dir is not None:
        from gptoss_edge.compiler.trt_build import ensure_plan
        try:
            ensure_plan(args.engine_dir)
        except (RuntimeError, ValueError, OSError) as e:
            print(f"error: build-engine: {e}", file=sys.stderr)
            return 2
    try:
        engine = open_engine(args.engine_dir, engine_limits(args), backend=args.backend)
        options = server_options(args, engine.name)
    except (ValueError, OSError, EngineDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(engine.backend, engine.tokenizer, options))


async def _serve(backend, tokenizer, options) -> int:
    from gptoss_edge.runtime.frontends.grpc_server import Server

    try:
        server = await Server.start(backend, tokenizer, options)
    except (ValueError, OSError) as e:     # socket in use, port in use, TLS files
        backend.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.drain()))
    sched = server.model.scheduler
    metrics = f", metrics http://{options.metrics_host}:{server.metrics_port}/metrics" \
        if server.metrics_port else ""
    http = f", OpenAI HTTP {server.http.address}/v1" if server.http else ""
    print(f"serving {options.model_name!r} ({backend.info.target}) on {server.address}: "
          f"{sched.slots.total} KV slots x {backend.info.max_context} tokens{metrics}{http}",
          flush=True)
    await server.wait_closed()
    backend.close()
    print("drained, bye", file=sys.stderr, flush=True)
    return 0


def run_chat(args: argparse.Namespace) -> int:
    from gptoss_edge.runtime.clients.chat import chat_main
    return asyncio.run(chat_main(args))


def run_bench(args: argparse.Namespace) -> int:
    from gptoss_edge.runtime.clients.bench import bench_main
    return asyncio.run(bench_main(args))
