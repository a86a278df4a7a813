"""Drives genq's /v1 routes with the official `openai` Python SDK, as a user's code would.

Run by the Rust tests in tests/tests/openai.rs (scripts/openai-sdk-setup.sh installs the pinned
SDK): `python sdk.py SCENARIO BASE_URL KEY [ARGS...]`. Each scenario prints one JSON object of
what it saw; the Rust test checks it against PostgreSQL. Any exception is a failure (exit 1).
"""

import io
import json
import sys
import time

import openai
from openai import OpenAI


def client(base, key):
    # No retries: a retried request would hide the answer under test.
    return OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


def completions(c, model):
    params = dict(model=model, prompt="Once upon a time", max_tokens=12, seed=7, temperature=0.9)
    whole = c.completions.create(**params)
    chunks = [chunk.choices[0].text for chunk in c.completions.create(stream=True, **params) if chunk.choices]
    usage_chunks = [
        chunk.usage.model_dump()
        for chunk in c.completions.create(stream=True, stream_options={"include_usage": True}, **params)
        if chunk.usage
    ]
    many = c.completions.create(model=model, prompt=["The sea", "The sky"], n=2, max_tokens=4, seed=3, echo=True)
    return {
        "object": whole.object,
        "id": whole.id,
        "text": whole.choices[0].text,
        "finish_reason": whole.choices[0].finish_reason,
        "usage": whole.usage.model_dump(),
        "streamed": "".join(chunks),
        "chunks": len(chunks),
        "stream_usage": usage_chunks,
        "many": [{"index": ch.index, "text": ch.text} for ch in many.choices],
    }


def chat(c, model):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    whole = c.chat.completions.create(model=model, messages=messages, max_tokens=10, seed=11)
    deltas = [
        chunk.choices[0].delta.content or ""
        for chunk in c.chat.completions.create(model=model, messages=messages, max_tokens=10, seed=11, stream=True)
        if chunk.choices
    ]
    return {
        "object": whole.object,
        "role": whole.choices[0].message.role,
        "content": whole.choices[0].message.content,
        "usage": whole.usage.model_dump(),
        "streamed": "".join(deltas),
    }


def users(c, model, *names):
    """One completion per user, in order, each naming its `user`."""
    for name in names:
        c.completions.create(model=model, prompt="Hi", max_tokens=2, seed=1, user=name)
    return {"sent": len(names)}


def models(c):
    return {"ids": [m.id for m in c.models.list()]}


def batch_lines(model, count, max_tokens):
    lines = []
    for i in range(count):
        body = {"model": model, "prompt": f"Story {i}:", "max_tokens": max_tokens, "seed": i}
        lines.append({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/completions", "body": body})
    return lines


def upload(c, lines, name="input.jsonl"):
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return c.files.create(file=(name, io.BytesIO(data)), purpose="batch")


def wait_batch(c, batch_id, until=("completed", "failed", "expired", "cancelled")):
    seen = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        batch = c.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in until:
            return batch, seen
        time.sleep(0.2)
    raise TimeoutError(f"batch {batch_id} still {seen[-1]}")


def read_file(c, file_id):
    if file_id is None:
        return []
    return [json.loads(line) for line in c.files.content(file_id).text.splitlines()]


def batch(c, model, count):
    uploaded = upload(c, batch_lines(model, int(count), 6))
    created = c.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h",
                               metadata={"run": "sdk"})
    done, seen = wait_batch(c, created.id)
    output = read_file(c, done.output_file_id)
    listed = [b.id for b in c.batches.list(limit=5)]
    return {
        "file": {"id": uploaded.id, "purpose": uploaded.purpose, "bytes": uploaded.bytes,
                 "status": uploaded.status},
        "created_status": created.status,
        "id": done.id,
        "status": done.status,
        "statuses_seen": seen,
        "metadata": done.metadata,
        "counts": done.request_counts.model_dump(),
        "timestamps": {k: getattr(done, k) for k in ("created_at", "in_progress_at", "finalizing_at", "completed_at")},
        "error_file_id": done.error_file_id,
        "output": [{"custom_id": o["custom_id"], "status_code": o["response"]["status_code"],
                    "request_id": o["response"]["request_id"],
                    "text": o["response"]["body"]["choices"][0]["text"],
                    "usage": o["response"]["body"]["usage"]} for o in output],
        "listed": listed,
    }


def bad_batch(c, model):
    lines = batch_lines(model, 4, 4)
    lines[1]["custom_id"] = "req-0"  # duplicate
    lines[2]["url"] = "/v1/chat/completions"  # not the batch's endpoint
    lines[3]["body"]["model"] = "no-such-model"
    raw = "".join(json.dumps(line) + "\n" for line in lines) + '{"custom_id": "x", "method": "GET"}\n'
    uploaded = c.files.create(file=("bad.jsonl", io.BytesIO(raw.encode())), purpose="batch")
    created = c.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h")
    done, _ = wait_batch(c, created.id)
    return {
        "id": done.id,
        "status": done.status,
        "failed_at": done.failed_at,
        "errors": [{"code": e.code, "line": e.line, "param": e.param} for e in done.errors.data],
        "counts": done.request_counts.model_dump(),
        "output_file_id": done.output_file_id,
    }


def cancel(c, model, count, after_completed):
    uploaded = upload(c, batch_lines(model, int(count), 64))
    created = c.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h")
    wait_batch(c, created.id, until=("in_progress",))
    deadline = time.monotonic() + 120
    while c.batches.retrieve(created.id).request_counts.completed < int(after_completed):
        if time.monotonic() > deadline:
            raise TimeoutError("no request completed")
        time.sleep(0.05)
    cancelling = c.batches.cancel(created.id)
    done, _ = wait_batch(c, created.id)
    return {
        "id": done.id,
        "cancelling_status": cancelling.status,
        "status": done.status,
        "counts": done.request_counts.model_dump(),
        "output": len(read_file(c, done.output_file_id)),
        "errors": [e["error"]["code"] for e in read_file(c, done.error_file_id) if e["error"]],
    }


def create(c, model, count):
    uploaded = upload(c, batch_lines(model, int(count), 64))
    created = c.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h")
    return {"id": created.id}


def error_class(call):
    try:
        call()
    except openai.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code, "code": e.code, "param": e.param}
    return {"class": None}


def deleted_file_batch(c):
    deleted = c.files.create(file=("gone.jsonl", io.BytesIO(b'{"custom_id": "a"}\n')), purpose="batch")
    c.files.delete(deleted.id)
    return c.batches.create(input_file_id=deleted.id, endpoint="/v1/completions", completion_window="24h")


def errors(base, key, model, other_file, other_batch, limited_key):
    c = client(base, key)
    limited = client(base, limited_key)
    limited.models.list()
    return {
        "other_tenants_batch": error_class(lambda: c.batches.retrieve(other_batch)),
        "other_tenants_batch_cancel": error_class(lambda: c.batches.cancel(other_batch)),
        "deleted_file_batch": error_class(lambda: deleted_file_batch(c)),
        "bad_key": error_class(lambda: client(base, "genq_wrong").models.list()),
        "unknown_model": error_class(lambda: c.completions.create(model="no-such-model", prompt="x")),
        "logprobs": error_class(lambda: c.completions.create(model=model, prompt="x", logprobs=1)),
        "bad_temperature": error_class(lambda: c.completions.create(model=model, prompt="x", temperature=7)),
        "unknown_file": error_class(lambda: c.files.retrieve("file-0000")),
        "other_tenants_file": error_class(lambda: c.files.retrieve(other_file)),
        "other_tenants_file_content": error_class(lambda: c.files.content(other_file)),
        "unknown_batch": error_class(lambda: c.batches.retrieve("batch_0000")),
        "batch_from_unknown_file": error_class(lambda: c.batches.create(
            input_file_id="file-0000", endpoint="/v1/completions", completion_window="24h")),
        "not_jsonl": error_class(lambda: c.files.create(file=("x.jsonl", io.BytesIO(b"not json\n")), purpose="batch")),
        "assistants_file_batch": error_class(lambda: c.batches.create(
            input_file_id=c.files.create(file=("a.txt", io.BytesIO(b"notes")), purpose="assistants").id,
            endpoint="/v1/completions", completion_window="24h")),
        "rate_limited": error_class(lambda: limited.models.list()),
    }


def upload_file(base, key, path, purpose="batch"):
    c = client(base, key)
    try:
        with open(path, "rb") as f:
            uploaded = c.files.create(file=f, purpose=purpose)
    except openai.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code, "message": e.message}
    return {"id": uploaded.id, "bytes": uploaded.bytes}


def main():
    scenario, base, key, *args = sys.argv[1:]
    c = client(base, key)
    if scenario == "completions":
        out = completions(c, *args)
    elif scenario == "chat":
        out = chat(c, *args)
    elif scenario == "models":
        out = models(c)
    elif scenario == "users":
        out = users(c, *args)
    elif scenario == "batch":
        out = batch(c, *args)
    elif scenario == "bad_batch":
        out = bad_batch(c, *args)
    elif scenario == "create":
        out = create(c, *args)
    elif scenario == "cancel":
        out = cancel(c, *args)
    elif scenario == "errors":
        out = errors(base, key, *args)
    elif scenario == "upload":
        out = upload_file(base, key, *args)
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
