#!/usr/bin/env python3
"""gRPC health probe for gptoss-edge (grpc.health.v1.Health/Check), for container HEALTHCHECKs,
exec probes and scripts: exit 0 when the service is SERVING, 1 when it answers anything else
(NOT_SERVING while draining), 2 when it cannot be reached or the arguments are wrong.

    gptoss-edge-healthcheck unix:/run/gptoss-edge/gptoss-edge.sock
    gptoss-edge-healthcheck 127.0.0.1:50051 --service gptoss_edge.v1.LLM
    gptoss-edge-healthcheck 10.0.0.7:8443 --tls-ca ca.pem --tls-server-name edge.example

Defaults come from the environment so an image can set them once:
GPTOSS_EDGE_HEALTH_ADDR, GPTOSS_EDGE_HEALTH_TLS_CA, GPTOSS_EDGE_HEALTH_TLS_SERVER_NAME.
Health checks need no bearer token (the server exempts them). Needs only grpcio and
grpcio-health-checking, both dependencies of gptoss-edge."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="gptoss-edge-healthcheck", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("address", nargs="?", default=env("GPTOSS_EDGE_HEALTH_ADDR", ""),
                   help="unix:PATH or HOST:PORT (env GPTOSS_EDGE_HEALTH_ADDR)")
    p.add_argument("--service", default="",
                   help="health service name ('' = the whole server; also gptoss_edge.v1.LLM, "
                        "inference.GRPCInferenceService)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds for the whole check")
    p.add_argument("--tls-ca", type=Path, default=env("GPTOSS_EDGE_HEALTH_TLS_CA") or None,
                   help="CA certificate: connect with TLS (env GPTOSS_EDGE_HEALTH_TLS_CA)")
    p.add_argument("--tls-server-name", default=env("GPTOSS_EDGE_HEALTH_TLS_SERVER_NAME") or None,
                   help="name to verify in the server certificate (default: the host)")
    args = p.parse_args(argv)
    if not args.address:
        p.error("address missing (argument or env GPTOSS_EDGE_HEALTH_ADDR)")
    return args


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    if args.tls_ca is None:
        return grpc.insecure_channel(args.address)
    creds = grpc.ssl_channel_credentials(root_certificates=Path(args.tls_ca).read_bytes())
    options = [("grpc.ssl_target_name_override", args.tls_server_name)] \
        if args.tls_server_name else []
    return grpc.secure_channel(args.address, creds, options=options)


def check(args: argparse.Namespace) -> tuple[int, str]:
    """-> (exit code, one line for the log)."""
    try:
        with open_channel(args) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
    except OSError as e:
        return 2, f"--tls-ca {args.tls_ca}: {e.strerror or e}"
    except grpc.RpcError as e:
        return 2, f"{args.address}: {e.code().name}: {e.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return (0 if reply.status == SERVING else 1), f"{args.address} {args.service!r}: {status}"


def main(argv: list[str] | None = None) -> int:
    code, line = check(parse_args(argv))
    print(line, file=sys.stdout if code == 0 else sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
