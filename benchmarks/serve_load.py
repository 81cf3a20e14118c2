"""Load test: `keel serve` beside the obvious FastAPI + torch server (benchmarks/plain_serve.py).

All serve the same trained digits model on 127.0.0.1: `keel serve` with its defaults, the plain
server with torch's default threads (as a plain script leaves them), and the plain server with
one torch thread (which on a busy machine avoids OpenMP stalls: it shows how much of the
difference is threads rather than batching). For ROUNDS rounds, rotating which goes first,
each server gets CONCURRENCY clients posting digit PNGs back to back for SECONDS
seconds (after a 1 s warm-up); every response must be a 200 with predictions. Prints, per
server, requests/s, p50 and p99 latency, errors, and for torchkeel the mean batch size, then
the throughput ratio. The load comes from a minimal keep-alive HTTP/1.1 client on asyncio
streams, which costs far less CPU than an HTTP library would on the cores it shares with the
servers. Usage: python benchmarks/serve_load.py [--run RUN] [--concurrency 32] [--seconds 10]
[--rounds 3]; without --run a digits model is trained first (about 20 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
BOUNDARY = "keel-load-test"
VARIANTS = {
    "torchkeel": "keel serve (dynamic batching)",
    "plain": "plain FastAPI + torch",
    "plain-1": "plain FastAPI + torch, 1 torch thread",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC)}


@contextlib.contextmanager
def server(cmd: list[str], port: int, log: Path) -> Iterator[None]:
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"{cmd[:4]} exited {proc.returncode}: {log.read_text()}")
                with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as r:
                    if r.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{cmd[:4]} did not start")
                time.sleep(0.3)
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def request_bodies(count: int = 100) -> list[bytes]:
    """Whole HTTP requests (headers + multipart body) for `count` digits as 64x64 PNGs."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = []
    for i in range(count):
        png = io.BytesIO()
        pixels = (digits.images[i] / 16 * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").resize((64, 64), Image.Resampling.NEAREST).save(png, format="PNG")
        body = (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="d{i}.png"\r\n'
                f"Content-Type: image/png\r\n\r\n"
            ).encode()
            + png.getvalue()
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
        head = (
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


async def client(port: int, bodies: list[bytes], start: int, stop_at: float, latencies: list[float]) -> int:
    """Posts back to back on one keep-alive connection until ``stop_at``; returns errors."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors, i, loop = 0, start, asyncio.get_running_loop()
    try:
        while loop.time() < stop_at:
            t0 = time.perf_counter()
            writer.write(bodies[i % len(bodies)])
            status = (await reader.readline()).split(b" ", 2)[1]
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            errors += status != b"200" or b'"top"' not in body
            i += 1
    except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
        errors += 1
    finally:
        writer.close()
    return errors


async def load(port: int, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(client(port, bodies, c, loop.time() + 1.0, []) for c in range(concurrency)))  # warm-up
    latencies: list[float] = []
    t0 = loop.time()
    errors = await asyncio.gather(*(client(port, bodies, c, t0 + seconds, latencies) for c in range(concurrency)))
    elapsed = loop.time() - t0
    q = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50": q[49] * 1e3, "p99": q[98] * 1e3, "errors": sum(errors)}


def batching(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return json.loads(r.read())["batching"]


def train_run(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "torchkeel", "train", "-q", "--out-dir", str(folder)], check=True, env=env())
    return (folder / "latest").resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained image-classification run (default: train digits)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve-args", default="", help="extra `keel serve` options, e.g. '--threads 1'")
    args = parser.parse_args()
    bodies = request_bodies()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or train_run(Path(tmp) / "runs")
        ports = {name: free_port() for name in VARIANTS}
        keel = [sys.executable, "-m", "torchkeel", "serve", str(run), "--port"]
        plain = [sys.executable, str(HERE / "plain_serve.py"), str(run)]
        commands = {
            "torchkeel": [*keel, str(ports["torchkeel"]), *args.serve_args.split()],
            "plain": [*plain, str(ports["plain"])],
            "plain-1": [*plain, str(ports["plain-1"]), "1"],
        }
        results: dict[str, list[dict]] = {name: [] for name in commands}
        with contextlib.ExitStack() as stack:
            for name, cmd in commands.items():
                stack.enter_context(server(cmd, ports[name], Path(tmp) / f"{name}.log"))
            for r in range(args.rounds):
                order = list(commands)
                for name in order[r % len(order) :] + order[: r % len(order)]:  # rotate who goes first
                    before = batching(ports[name]) if name == "torchkeel" else None
                    result = asyncio.run(load(ports[name], bodies, args.concurrency, args.seconds))
                    if before is not None:
                        after = batching(ports[name])
                        samples, batches = after["samples"] - before["samples"], after["batches"] - before["batches"]
                        result["mean_batch"] = samples / max(batches, 1)
                    results[name].append(result)
                    print(f"round {r + 1} {name}: {result}", file=sys.stderr)
    report(results, args)
    if any(x["errors"] for rows in results.values() for x in rows):
        raise SystemExit("some requests failed")


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    import torch

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in results[name])

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"python {platform.python_version()}; {args.concurrency} concurrent clients, {args.seconds:g} s x "
        f"{args.rounds} interleaved rounds per server; medians over rounds"
    )
    print("| server | requests/s | p50 ms | p99 ms | errors | mean batch |")
    print("|---|---|---|---|---|---|")
    for name, label in VARIANTS.items():
        batch = f"{med(name, 'mean_batch'):.1f}" if name == "torchkeel" else "1"
        errors = sum(x["errors"] for x in results[name])
        latency = f"{med(name, 'p50'):.1f} | {med(name, 'p99'):.1f}"
        print(f"| {label} | {med(name, 'rps'):.0f} | {latency} | {errors} | {batch} |")
    for peer in ("plain", "plain-1"):
        ratios = [k["rps"] / p["rps"] for k, p in zip(results["torchkeel"], results[peer], strict=True)]
        print(f"throughput keel serve / {VARIANTS[peer]}, per round: {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()
