"""Wire check with NVIDIA's own KServe/Triton client (not a test dependency):

    pip install "tritonclient[grpc]"     # in any env; it brings its own inference.* stubs
    gptoss-edge serve ENGINE_DIR --listen 127.0.0.1:8001 &
    python benchmarks/triton_client_check.py 127.0.0.1:8001 MODEL_NAME

Checks health/metadata calls, unary ModelInfer and decoupled ModelStreamInfer with the
text_input / max_tokens / stream -> text_output convention; prints what came back.
"""
from __future__ import annotations

import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient


def inputs(text: str, max_tokens: int, stream: bool):
    t = grpcclient.InferInput("text_input", [1], "BYTES")
    t.set_data_from_numpy(np.array([text.encode()], dtype=object))
    m = grpcclient.InferInput("max_tokens", [1], "INT32")
    m.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
    s = grpcclient.InferInput("stream", [1], "BOOL")
    s.set_data_from_numpy(np.array([stream], dtype=bool))
    return [t, m, s]


def main(address: str, model: str) -> int:
    c = grpcclient.InferenceServerClient(address)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(model)
    meta = c.get_model_metadata(model)
    print("server", c.get_server_metadata().name, "inputs", [i.name for i in meta.inputs])
    whole = c.infer(model, inputs("def f(x):", 8, False)).as_numpy("text_output")[0].decode()
    print("ModelInfer:", repr(whole))
    results: queue.Queue = queue.Queue()
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    c.async_stream_infer(model, inputs("def f(x):", 8, True), request_id="1")
    chunks = []
    while True:
        result, error = results.get(timeout=30)
        if error is not None:
            raise SystemExit(f"stream error: {error}")
        chunks.append(result.as_numpy("text_output")[0].decode())
        if result.get_response().parameters["triton_final_response"].bool_param:
            break
    c.stop_stream()
    print(f"ModelStreamInfer: {len(chunks)} chunks, {''.join(chunks)!r}")
    assert "".join(chunks) == whole, "streamed text differs from the unary answer (greedy)"
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
