#!/usr/bin/env python3
"""Open N keep-alive TLS connections to a server, send one request on each,
then hold them idle until stdin closes (the caller measures RSS meanwhile).
Usage: idle_conns.py HOST PORT CAFILE N PATH TOKEN"""
import asyncio
import ssl
import sys


async def one(host, port, ctx, path, token, held, sem):
    async with sem:
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost")
        req = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
        writer.write(req.encode())
        await writer.drain()
        status = await reader.readline()
        # drain headers and the (small, content-length) body
        length = 0
        while True:
            line = await reader.readline()
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
            if line in (b"\r\n", b""):
                break
        await reader.readexactly(length)
        held.append((writer, status))


async def main():
    host, port, cafile, n, path, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
    ctx = ssl.create_default_context(cafile=cafile)
    held = []
    sem = asyncio.Semaphore(100)  # under the per-client cap of 128 concurrent requests
    results = await asyncio.gather(*(one(host, port, ctx, path, token, held, sem) for _ in range(n)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    ok = sum(1 for _, s in held if b" 200 " in s)
    others = {}
    for _, s in held:
        if b" 200 " not in s:
            key = s.decode(errors="replace").strip()
            others[key] = others.get(key, 0) + 1
    print(f"open={len(held)} ok={ok} errors={len(errors)}"
          + (f" other answers={others}" if others else ""), flush=True)
    if errors:
        print(f"first error: {errors[0]!r}", file=sys.stderr, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for w, _ in held:
        w.close()


asyncio.run(main())
