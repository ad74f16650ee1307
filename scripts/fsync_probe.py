#!/usr/bin/env python3
"""What an fdatasync costs on this disk when a file grows and when it is overwritten in place.

Usage: scripts/fsync_probe.py [DIR] [BYTES_PER_SYNC] [SYNCS]

Writes BYTES_PER_SYNC (default 14,000: one signature's worth of entries under load) and
fdatasyncs, SYNCS times (default 2,000), once appending to a new file and once overwriting a
file written with zeros (and synced) beforehand, twice each, interleaved. Prints the p50 and
p90 wall time of the fdatasync and the kernel CPU per sync. The ledger's open chunk is kept
written ahead with zeros (vellum_ledger::store::PREFILL_AHEAD) because of the difference.
"""
import os
import sys
import tempfile
import time


def run(directory, prefilled, size, n):
    fd, path = tempfile.mkstemp(dir=directory, prefix="fsync-probe-")
    try:
        if prefilled:
            os.write(fd, b"\0" * (size * n + 4096))
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        buf = b"x" * size
        waits = []
        before = os.times()
        for _ in range(n):
            os.write(fd, buf)
            t = time.perf_counter()
            os.fdatasync(fd)
            waits.append(time.perf_counter() - t)
        after = os.times()
    finally:
        os.close(fd)
        os.unlink(path)
    waits.sort()
    kind = "overwrite" if prefilled else "append   "
    sys_us = (after.system - before.system) / n * 1e6
    print(f"{kind}  fdatasync p50 {waits[n // 2] * 1e6:6.0f} us  p90 {waits[n * 9 // 10] * 1e6:6.0f} us"
          f"  kernel CPU {sys_us:5.0f} us per sync")


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 14_000
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 2_000
    for prefilled in (False, True, False, True):
        run(directory, prefilled, size, n)


if __name__ == "__main__":
    main()
