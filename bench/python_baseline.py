"""The Python stack genq's users run today, as the benchmark's third row.

A FastAPI + Celery GPT-2 service runs one `model.generate` per request (all of that request's
prompts padded into one batch) in a worker that takes one request at a time. This reproduces that
serving loop without the HTTP and broker layers, which only make it slower: the figures are its
best case. Weights are random (GPT-2 124M shape), as in genq's synthesized model; the tokenizer is
the real GPT-2 one that genq vendors.

Reads the workload as JSON on stdin: {"requests": [{"prompts": [...], "max_tokens": n,
"arrival_s": t}, ...], "seed": s}. Writes one JSON object to stdout: completion tokens, wall time,
and each request's latency (finish - arrival) and finish time, and the process's peak RSS.
"""

import json
import os
import resource
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

ASSETS = os.path.join(os.path.dirname(__file__), "..", "engine", "assets", "gpt2")


def main() -> None:
    workload = json.load(sys.stdin)
    torch.manual_seed(workload["seed"])
    torch.set_num_threads(os.cpu_count() or 1)
    # Positional: transformers 4 names these vocab_file/merges_file, 5 names them vocab/merges.
    tokenizer = GPT2Tokenizer(
        os.path.join(ASSETS, "encoder.json"), os.path.join(ASSETS, "vocab.bpe")
    )
    assert tokenizer("Hello, my name is")["input_ids"] == [15496, 11, 616, 1438, 318]
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = GPT2LMHeadModel(GPT2Config()).eval()

    # One warm-up call, as a long-running service would have had.
    with torch.inference_mode():
        warm = tokenizer(["Hello"], return_tensors="pt")
        model.generate(**warm, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.eos_token_id)

    requests = sorted(workload["requests"], key=lambda r: r["arrival_s"])
    tokens = 0
    latencies, finishes = [], []
    start = time.perf_counter()
    for request in requests:
        now = time.perf_counter() - start
        if now < request["arrival_s"]:
            time.sleep(request["arrival_s"] - now)
        inputs = tokenizer(request["prompts"], return_tensors="pt", padding=True)
        n = request["max_tokens"]
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=True,
                temperature=0.8,
                top_k=40,
                top_p=0.95,
                pad_token_id=tokenizer.eos_token_id,
            )
        tokens += (out.shape[1] - inputs["input_ids"].shape[1]) * out.shape[0]
        finished = time.perf_counter() - start
        finishes.append(finished)
        latencies.append(finished - request["arrival_s"])
    json.dump(
        {
            "tokens": int(tokens),
            "wall_s": time.perf_counter() - start,
            "latencies_s": latencies,
            "finishes_s": finishes,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
