#!/usr/bin/env python3
"""Where a daemon's threads spend time in the kernel: samples /proc/PID/task/*/stack.

Usage (root): scripts/kstacks.py SECONDS PID [PID...]

Every ~2 ms (plus the time a sweep takes) reads the kernel stack and state of every thread of
the given processes for SECONDS, skips threads idle in the usual places (futex, epoll, sleep,
waitid), and prints how many sweeps found a thread in each stack (top 6 frames) with its state
(R running, D uninterruptible), and the mean time between sweeps: count x that is roughly the
time spent there. BENCHMARKS.md ("Forced rm: the floor") used it on dockerd during a forced rm.
"""
import collections
import os
import sys
import time

IDLE = ("futex", "ep_poll", "do_epoll_wait", "hrtimer_nanosleep", "do_wait", "do_select",
        "do_sys_poll", "pipe_read", "unix_stream_read")


def sweep(pids):
    found = []
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stack") as f:
                    stack = f.read().splitlines()
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            frames = [line.split("] ", 1)[1].split("+")[0] for line in stack if "] " in line]
            if not frames or any(i in " ".join(frames[:3]) for i in IDLE):
                continue
            found.append(f"{pid} {state} " + " < ".join(frames[:6]))
    return found


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    seconds = float(sys.argv[1])
    pids = [int(p) for p in sys.argv[2:]]
    tally = collections.Counter()
    sweeps = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        tally.update(sweep(pids))
        sweeps += 1
        time.sleep(0.002)
    every = (time.monotonic() - start) / max(sweeps, 1) * 1e3
    print(f"{sweeps} sweeps in {seconds:.1f} s, one every {every:.1f} ms")
    for stack, n in tally.most_common(20):
        print(f"{n:5d} (~{n * every:.0f} ms)  {stack}")


if __name__ == "__main__":
    main()
