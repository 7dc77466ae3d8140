"""`gptoss-edge generate ENGINE_DIR --prompt-ids 1,2,3 --max-new-tokens N [--temperature 0]
[--dump-logits FILE.npy] --json`"""
from __future__ import annotations

import argparse
import json
import sys

from gptoss_edge.runtime.engine.opener import BACKEND_CHOICES


def _ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--prompt-ids must be comma-separated integers, got {text!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError("--prompt-ids is empty")
    return ids


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate tokens from an engine directory",
                       description="Run an engine on token ids (greedy at temperature 0) through the "
                                   "server's scheduler and sampler.")
    p.add_argument("engine_dir")
    p.add_argument("--prompt-ids", type=_ids, required=True, help="comma-separated token ids")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None,
                   help="same seed, prompt and sampling as a server request: the same tokens")
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at the model's eos token")
    p.add_argument("--dump-logits", metavar="FILE.npy",
                   help="save float32 logits [prompt + generated, vocab]; row i = logits at position i")
    p.add_argument("--max-context", type=int, default=None, help="KV cache tokens (default: prompt + new)")
    p.add_argument("--max-step-tokens", type=int, default=256, help="prefill chunk size")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="reference: onnx.reference + numpy kernels (slow, exact; TensorRT-target dirs); "
                        "auto: by the engine's target (tensorrt engines need TensorRT)")
    p.add_argument("--json", action="store_true", help='print {"token_ids": [...]} ')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from gptoss_edge.engine_dir import EngineDirError
    from gptoss_edge.runtime.engine.backend import BackendError
    from gptoss_edge.runtime.engine.generate import generate
    from gptoss_edge.runtime.engine.opener import EngineLimits, EngineOpenError, open_engine
    try:
        ctx = args.max_context or len(args.prompt_ids) + args.max_new_tokens + 1
        limits = EngineLimits(max_slots=1, max_context=ctx, max_step_tokens=args.max_step_tokens)
        backend = open_engine(args.engine_dir, limits, backend=args.backend, threads=args.threads,
                              tokenizer=False).backend
        eos = backend.info.config.eos_token_id
        stops = () if args.ignore_eos or eos is None else (eos,)
        gen = generate(backend, args.prompt_ids, args.max_new_tokens, temperature=args.temperature,
                       top_p=args.top_p, top_k=args.top_k, seed=args.seed, stop_ids=stops,
                       keep_logits=bool(args.dump_logits))
    except (EngineDirError, EngineOpenError, BackendError, OSError) as e:
        print(f"gptoss-edge generate: error: {e}", file=sys.stderr)
        return 2
    if args.dump_logits:
        np.save(args.dump_logits, gen.logits)
    if args.json:
        print(json.dumps({"token_ids": gen.token_ids, "finish_reason": gen.finish_reason}))
    else:
        print(" ".join(map(str, gen.token_ids)))
    return 0
