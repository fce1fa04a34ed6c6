"""One thread only: imports a few standard modules, then a 3 M-iteration loop. Nothing here can
contend with anything (used to check that machine load does not show up as contention)."""
import asyncio, dataclasses, decimal, email.mime.text, enum, http.client, json, typing  # noqa: E401,F401

total = 0
for i in range(3_000_000):
    total += i & 7
print(f"total {total}\n", end="", flush=True)
