"""A connection storm against a running steward: opens N keep-alive connections (each sends one
GET /health/live and keeps the connection), holds them, closes them all, and prints the
server's resident memory before, at the peak and 12 s after the connections closed.

    python3 bench/conn_storm.py HOST PORT CONNECTIONS PID
"""
import asyncio
import sys


def resident_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def connect(host, port, gate, held):
    async with gate:
        reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /health/live HTTP/1.1\r\nHost: bench\r\n\r\n")
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    held.append(writer)


async def main(host, port, count, pid):
    before = resident_mb(pid)
    gate, held = asyncio.Semaphore(500), []
    await asyncio.gather(*(connect(host, port, gate, held) for _ in range(count)), return_exceptions=True)
    peak = resident_mb(pid)
    for writer in held:
        writer.close()
    await asyncio.sleep(12)
    after = resident_mb(pid)
    print(f"{len(held)} {before:.1f} {peak:.1f} {after:.1f}")


if __name__ == "__main__":
    host, port, count, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    asyncio.run(main(host, port, count, pid))
