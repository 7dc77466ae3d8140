"""Benchmark (figures only, asserts nothing): our ONNX Runtime CPU engine against llama.cpp.

One synthetic gpt-oss-20b-shaped checkpoint (`gptoss-edge make-checkpoint --preset gpt-oss-20b
--layers L`, kept under --data outside the repo) is converted by llama.cpp's own converter
(convert_hf_to_gguf.py: experts kept MXFP4, everything else q8_0) and compiled by us (one engine
per --configs entry). Then every runner is measured --runs times, interleaved (run 1 of each,
run 2 of each, ...), each run in a fresh subprocess with the same --threads:
  load s       engine/model open until ready, including one 16-token warm-up step (first touch of
               mapped weights: ours maps the engine files lazily, llama.cpp with mmap too), so
               the prefill figure measures compute, not page faults
  prefill      one --prefill-token prompt in one step (llama.cpp: n_batch = prefill), tok/s
  decode       a 16-token prompt, then --decode greedy tokens one per step, tok/s
  peak RSS     getrusage ru_maxrss (resident, file pages included) and peak RssAnon (sampled)
Baseline measured in the same run: read bandwidth of the machine with --threads threads (the
best of three numpy reductions over 1 GiB per thread: a floor, since none is purely memory-
bound, so a fraction above 100% is possible). Decode of ours is also given as the bandwidth it
reaches: bytes one decode step reads (from the engine's initializers: experts x top_k/E, dense
in full, one embedding row) x tok/s, and that as a fraction of the baseline. Ratios are ours /
llama.cpp, medians of the runs, from this one run.

    pip install -e '.[bench]'        # llama-cpp-python, built from source (the [bench] extra)
    python benchmarks/cpu_peers.py [--layers 4] [--runs 3] [--threads 2]
           [--configs mxfp4:float:int8 mxfp4:4bit:int8]   # EXPERTS:DENSE:ACTIVATIONS
           [--every-logits-too]     # + ours prefilling with every position's logits (old graphs' work)
           [--isa-too avx2]         # + ours with the CPU kernels forced to the AVX2 path

llama.cpp's converter is not in the wheel: it is taken from the llama-cpp-python source
distribution of the installed version (pip download, into --data), or from --llama-src.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ort_20b  # noqa: E402  (phases shared with the 20b benchmark: AnonPeak, bytes_per_token)

GiB = 1 << 30
DECODE_PROMPT = 16


# ---- phases (child processes) --------------------------------------------------------------------
def _prompt(n: int, vocab: int, seed: int) -> list[int]:
    import numpy as np
    return np.random.default_rng(seed).integers(0, min(vocab, 199998), n).tolist()


def phase_ours(a: argparse.Namespace) -> dict:
    import numpy as np

    from gptoss_edge.runtime.engine.backend import StepRow
    from gptoss_edge.runtime.engine.ort_backend import OrtBackend
    anon = ort_20b.AnonPeak()
    t0 = time.monotonic()
    be = OrtBackend(a.engine, max_slots=1, max_context=a.prefill + 1, max_step_tokens=a.prefill,
                    threads=a.threads, verify="sizes", cpu_isa=a.isa)
    vocab = be.info.config.vocab_size
    be.step([StepRow(0, _prompt(DECODE_PROMPT, vocab, 2))])          # warm-up (see the docstring)
    be.release(0)
    load_s = time.monotonic() - t0
    t0 = time.monotonic()
    be.step([StepRow(0, _prompt(a.prefill, vocab, 0), all_logits=a.every_logits)])
    prefill_s = time.monotonic() - t0
    be.release(0)
    logits = be.step([StepRow(0, _prompt(DECODE_PROMPT, vocab, 1))])[0]
    t0 = time.monotonic()
    for _ in range(a.decode):
        logits = be.step([StepRow(0, [int(np.argmax(logits))])])[0]
    decode_s = time.monotonic() - t0
    return {"load_s": load_s, "prefill_tok_s": a.prefill / prefill_s, "decode_tok_s": a.decode / decode_s,
            "peak_rss": ort_20b.peak_rss(), "peak_anon": anon.stop()}


def phase_llama(a: argparse.Namespace) -> dict:
    import numpy as np
    from llama_cpp import Llama
    anon = ort_20b.AnonPeak()
    t0 = time.monotonic()
    llm = Llama(str(a.engine), n_ctx=a.prefill + 8, n_batch=a.prefill, n_ubatch=a.prefill, n_threads=a.threads,
                n_threads_batch=a.threads, use_mmap=not a.no_mmap, verbose=False)
    vocab = llm.n_vocab()
    llm.eval(_prompt(DECODE_PROMPT, vocab, 2))                         # warm-up (see the docstring)
    llm.reset()
    load_s = time.monotonic() - t0
    t0 = time.monotonic()
    llm.eval(_prompt(a.prefill, vocab, 0))
    prefill_s = time.monotonic() - t0
    llm.reset()
    llm.eval(_prompt(DECODE_PROMPT, vocab, 1))
    t0 = time.monotonic()
    for _ in range(a.decode):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))      # greedy, like ours
        llm.eval([tok])
    decode_s = time.monotonic() - t0
    return {"load_s": load_s, "prefill_tok_s": a.prefill / prefill_s, "decode_tok_s": a.decode / decode_s,
            "peak_rss": ort_20b.peak_rss(), "peak_anon": anon.stop()}


def phase_bandwidth(a: argparse.Namespace) -> dict:
    """Read bandwidth with a.threads threads, each reading its own 1 GiB (numpy releases the GIL):
    the best of three numpy reductions, since each is partly compute-bound (on the 2-core AVX-512
    machine: float64 sum 35.9 GB/s, uint8 max and count_nonzero 40.5), so this is a floor."""
    import numpy as np
    bufs = [np.ones(GiB // 8, np.float64) for _ in range(a.threads)]
    readers = {"float64 sum": lambda b: b.sum(), "uint8 max": lambda b: b.view(np.uint8).max(),
               "uint8 count_nonzero": lambda b: np.count_nonzero(b.view(np.uint8))}
    for b in bufs:
        b.sum()                                            # fault the pages in
    best = {}
    for name, read in readers.items():
        best[name] = 0.0
        for _ in range(5):
            ts = [threading.Thread(target=read, args=(b,)) for b in bufs]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            best[name] = max(best[name], sum(b.nbytes for b in bufs) / (time.perf_counter() - t0))
    return {"bytes_per_s": max(best.values()), "readers": best}


def phase_compile(a: argparse.Namespace) -> dict:
    from gptoss_edge.compiler.compile import CompileOptions, compile_checkpoint
    experts, dense, acts = a.config.split(":")
    anon = ort_20b.AnonPeak()
    t0 = time.monotonic()
    compile_checkpoint(a.checkpoint, a.engine, CompileOptions(
        target="onnxruntime", experts=experts, dense=dense, activations=acts, max_positions=a.prefill + 64),
        show_progress=False)
    return {"seconds": time.monotonic() - t0, "peak_rss": ort_20b.peak_rss(), "peak_anon": anon.stop()}


PHASES = {"ours": phase_ours, "llama": phase_llama, "bandwidth": phase_bandwidth, "compile": phase_compile}


# ---- preparation -------------------------------------------------------------------------------
def run_phase(name: str, args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--phase", name, *args], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        return {"error": f"{name} exited {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ensure_checkpoint(path: Path, layers: int) -> None:
    if not (path / "config.json").exists():
        print(f"writing the synthetic checkpoint {path} ({layers} layers)", flush=True)
        subprocess.run([sys.executable, "-m", "gptoss_edge.cli", "make-checkpoint", str(path), "--preset",
                        "gpt-oss-20b", "--layers", str(layers)], check=True)


def llama_source(data: Path, given: Path | None) -> Path:
    """A llama.cpp tree with convert_hf_to_gguf.py and gguf-py: --llama-src, or the sdist of the
    installed llama-cpp-python (its vendor/llama.cpp)."""
    if given:
        return given
    from importlib.metadata import version
    v = version("llama-cpp-python")
    root = data / "src" / f"llama_cpp_python-{v}" / "vendor" / "llama.cpp"
    if not (root / "convert_hf_to_gguf.py").exists():
        sdist = data / "src" / f"llama_cpp_python-{v}.tar.gz"
        if not sdist.exists():
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", f"llama-cpp-python=={v}", "--no-deps",
                            "--no-binary", ":all:", "-d", str(sdist.parent)], check=True)
        with tarfile.open(sdist) as tf:
            tf.extractall(sdist.parent, filter="data")
    return root


def conversion_dir(ckpt: Path, out: Path) -> Path:
    """The checkpoint's files plus a tokenizer.json the converter can read (o200k_harmony from
    the offline vocabulary, converted to the tokenizers format by transformers)."""
    out.mkdir(parents=True, exist_ok=True)
    for f in ckpt.iterdir():
        if not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    if not (out / "tokenizer.json").exists():
        from transformers.convert_slow_tokenizer import TikTokenConverter

        from gptoss_edge.runtime.tokens.o200k import (O200K_PATTERN, o200k_harmony_specials, packaged_vocab_path,
                                                         read_verified_vocab)
        ranks = out / "o200k_base.tiktoken"
        ranks.write_bytes(read_verified_vocab(packaged_vocab_path()))
        specials = sorted(o200k_harmony_specials().items(), key=lambda kv: kv[1])   # ids 199998.. in order
        TikTokenConverter(vocab_file=str(ranks), pattern=O200K_PATTERN,
                          extra_special_tokens=[name for name, _ in specials]).converted().save(str(out / "tokenizer.json"))
    return out


def convert_gguf(ckpt: Path, data: Path, src: Path) -> tuple[Path, float]:
    gguf = data / f"{ckpt.name}-mxfp4-q8_0.gguf"
    if gguf.exists():
        return gguf, 0.0
    conv = conversion_dir(ckpt, data / f"{ckpt.name}-convert")
    env = dict(os.environ, PYTHONPATH=str(src / "gguf-py"))
    t0 = time.monotonic()
    subprocess.run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(conv), "--outtype", "q8_0",
                    "--outfile", str(gguf)], check=True, env=env, stdout=subprocess.DEVNULL)
    return gguf, time.monotonic() - t0


# ---- report ------------------------------------------------------------------------------------
def med(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if key in r]
    return statistics.median(vals) if vals else None


def print_table(results: dict[str, list[dict]], bpt: dict[str, float], bw: float, a) -> None:
    base = results.get("llama.cpp mmap") or next(iter(results.values()))
    print(f"\nload average during the runs {os.getloadavg()[1]:.1f} (1 = one busy core; this machine has "
          f"{os.cpu_count()})")
    print(f"{a.layers}-layer gpt-oss-20b shape (synthetic), {a.threads} threads, {a.runs} interleaved runs "
          f"(medians); prefill {a.prefill} tokens in one step, decode {a.decode} greedy tokens after "
          f"{DECODE_PROMPT}; read bandwidth ({a.threads} threads) {bw / 1e9:.1f} GB/s")
    head = ("runtime, weights", "load s", "prefill tok/s", "decode tok/s", "prefill x", "decode x",
            "decode GB/s (of bandwidth)", "peak RSS GiB (anon)")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, runs in results.items():
        p, d = med(runs, "prefill_tok_s"), med(runs, "decode_tok_s")
        if p is None:
            print(f"| {name} | {runs[0].get('error', 'failed')} |")
            continue
        gbs = f"{bpt[name] * d / 1e9:.1f} ({bpt[name] * d / bw:.0%})" if name in bpt else "-"
        print(f"| {name} | {med(runs, 'load_s'):.1f} | {p:.1f} | {d:.2f} | "
              f"{p / med(base, 'prefill_tok_s'):.2f} | {d / med(base, 'decode_tok_s'):.2f} | {gbs} | "
              f"{med(runs, 'peak_rss') / GiB:.2f} ({med(runs, 'peak_anon') / GiB:.2f}) |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/work/bench-data"))
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prefill", type=int, default=512)
    p.add_argument("--decode", type=int, default=128)
    p.add_argument("--configs", nargs="+", default=["mxfp4:float:int8", "mxfp4:float:float", "mxfp4:4bit:int8"],
                   help="our engines, EXPERTS:DENSE:ACTIVATIONS (compiler/formats.py)")
    p.add_argument("--no-mmap-too", action="store_true", help="also run llama.cpp with use_mmap=False")
    p.add_argument("--every-logits-too", action="store_true",
                   help="also run each of ours with a prefill that computes every position's logits (what "
                        "engines before the logits_index input did): the same-run baseline of that change")
    p.add_argument("--isa-too", nargs="*", default=[], metavar="PATH",
                   help="also run each of ours with our CPU kernels forced to these code paths (e.g. avx2 on "
                        "an AVX-512 machine: the AVX2 figures measured on the same memory)")
    p.add_argument("--every-logits", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--isa", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--llama-src", type=Path, default=None)
    p.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    p.add_argument("--engine", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--no-mmap", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.phase:
        print(json.dumps(PHASES[a.phase](a)))
        return 0

    ckpt = a.data / f"gpt-oss-20b-{a.layers}l"
    ensure_checkpoint(ckpt, a.layers)
    gguf, conv_s = convert_gguf(ckpt, a.data, llama_source(a.data, a.llama_src))
    print(f"llama.cpp model {gguf} ({gguf.stat().st_size / GiB:.2f} GiB; converted in {conv_s:.0f} s)", flush=True)
    common = ["--threads", str(a.threads), "--prefill", str(a.prefill), "--decode", str(a.decode)]
    runners: dict[str, list[str]] = {"llama.cpp mmap": ["llama", "--engine", str(gguf)]}
    if a.no_mmap_too:
        runners["llama.cpp no mmap"] = ["llama", "--engine", str(gguf), "--no-mmap"]
    bpt = {}
    for config in a.configs:
        engine = a.data / "engines" / f"{ckpt.name}-{config.replace(':', '-')}"
        if not (engine / "manifest.json").exists():
            c = run_phase("compile", ["--checkpoint", str(ckpt), "--engine", str(engine), "--config", config, *common])
            print(f"compiled {engine.name}: {json.dumps(c)}", flush=True)
        name = f"ours {config}"
        runners[name] = ["ours", "--engine", str(engine)]
        variants = {name: []}
        if a.every_logits_too:
            variants[f"{name}, prefill with every position's logits"] = ["--every-logits"]
        for path in a.isa_too:
            variants[f"{name}, {path} path"] = ["--isa", path]
        for label, extra in variants.items():
            runners[label] = ["ours", "--engine", str(engine), *extra]
            bpt[label] = ort_20b.bytes_per_token(engine)["per_token"]
    bw = run_phase("bandwidth", common)["bytes_per_s"]
    results: dict[str, list[dict]] = {name: [] for name in runners}
    for r in range(a.runs):
        for name, args in runners.items():
            out = run_phase(args[0], [*args[1:], *common])
            results[name].append(out)
            print(f"run {r + 1} {name}: {json.dumps(out)}", flush=True)
    print_table(results, bpt, bw, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
