#!/usr/bin/env python3
"""Where the time of one-at-a-time appends goes, from a perf trace of a bench run.

Usage: append-timeline.py TRACE.txt PIDS.txt [median | slow N]

Record (as root) while `bench-peers server --replica-counts 3 --shards 1
--clients 1 --producers 0 --batch-messages 0` runs its one-at-a-time rows:

    ps -eLo pid,tid,comm,args | grep "[ ]start --data-dir\\|[s]hoal-bench-peers" > PIDS.txt
    perf record -o t.data -p "$(pgrep -d, -f ' start --data-dir|shoal-bench-peers server')" \\
      -e syscalls:sys_enter_fdatasync,syscalls:sys_exit_fdatasync \\
      -e syscalls:sys_enter_pwrite64,syscalls:sys_exit_pwrite64,syscalls:sys_enter_writev \\
      -e syscalls:sys_exit_recvfrom,syscalls:sys_enter_io_uring_enter,syscalls:sys_exit_io_uring_enter \\
      -e io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_queue_async_work \\
      -e sched:sched_switch,sched:sched_wakeup -- sleep 3
    perf script -i t.data -F comm,pid,tid,cpu,time,event,trace > TRACE.txt

An append is the client's `writev` to the first non-empty `recvfrom` after it.
Prints the appends' latency percentiles; the fsyncs' hops through io_uring
workers (submit to worker running, completion to shard running); each
replica step from reading a 1,288-byte frame (a prepare) to its next send
(the prepare_ok), and the part of it outside fsyncs; and, with `median` or
`slow N`, the timeline of those appends (`R<i>` is replica i's shard thread).
The replica index comes from the `replica-<i>` data dir in PIDS.txt.
"""
import re
import sys

LINE = re.compile(r"^\s*(\S.*?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")
# A 1 KiB append's request or prepare: a 256-byte header and its body.
PREPARE_FRAME_BYTES = 1288


def load(trace_path, pids_path):
    shards, workers, names = {}, {}, {}
    for line in open(pids_path):
        fields = line.split()
        if fields[2] == "shard-0":
            replica = re.search(r"replica-(\d+)", line)
            shards[fields[1]] = fields[0]
            if replica:
                names[fields[1]] = "R" + replica.group(1)
        elif fields[2].startswith("iou-wrk"):
            workers[fields[1]] = fields[2].split("-")[-1]
    events = []
    for line in open(trace_path):
        match = LINE.match(line)
        if match:
            comm, pid, tid, cpu, time, event, rest = match.groups()
            events.append((float(time), comm, pid, tid, cpu, event, rest))
            # Workers started after PIDS.txt was taken: named after their shard.
            if comm.startswith("iou-wrk-"):
                workers.setdefault(tid, comm.split("-")[-1])
    for worker, shard in workers.items():
        if shard in names:
            names[worker] = names[shard] + " iou-wrk"
    events.sort(key=lambda e: e[0])
    return events, shards, workers, names


def quantiles(values, scale=1e6, digits=0):
    values = sorted(values)
    n = len(values)
    if n == 0:
        return "n=0"
    picks = " ".join(f"p{p}={values[min(n - 1, int(n * p / 100))] * scale:.{digits}f}" for p in (50, 90, 99))
    return f"{picks} n={n}"


def appends(events):
    found, start = [], None
    for index, (time, comm, _, _, _, event, rest) in enumerate(events):
        if not comm.startswith("shoal-bench"):
            continue
        if event == "syscalls:sys_enter_writev":
            start = (time, index)
        elif event == "syscalls:sys_exit_recvfrom" and start and rest != "0x0":
            found.append((start[0], time, start[1], index))
            start = None
    return found


def user_data(rest):
    return re.search(r"user_data (\S+)", rest).group(1)


def fsync_hops(events, shards, workers):
    submitted, to_worker, to_shard, waiting = {}, [], [], {}
    for time, _, _, tid, _, event, rest in events:
        if event == "io_uring:io_uring_submit_req" and "opcode FSYNC" in rest and tid in shards:
            submitted[tid] = time
        elif event == "sched:sched_switch":
            worker = re.search(r"next_pid=(\d+)", rest).group(1)
            owner = workers.get(worker)
            if owner in submitted:
                to_worker.append(time - submitted.pop(owner))
        elif event == "io_uring:io_uring_complete" and tid in workers:
            waiting[workers[tid]] = time
        elif event == "syscalls:sys_exit_io_uring_enter" and tid in waiting:
            to_shard.append(time - waiting.pop(tid))
    print("fsync submit -> io_uring worker runs (us):", quantiles(to_worker))
    print("worker completes -> shard runs again (us):", quantiles(to_shard))


def replica_steps(events, shards, workers):
    state, steps, outside, entered, issued = {}, [], [], {}, {}
    for time, _, _, tid, _, event, rest in events:
        owner = tid if tid in shards else workers.get(tid)
        if owner is None:
            continue
        step = state.setdefault(owner, {"start": None, "fsync": 0.0})
        if event == "io_uring:io_uring_complete" and tid == owner and re.search(rf"result {PREPARE_FRAME_BYTES}\b", rest):
            if step["start"] is None:
                step.update(start=time, fsync=0.0)
        elif event == "syscalls:sys_enter_fdatasync":
            entered[tid] = time
        elif event == "syscalls:sys_exit_fdatasync" and tid in entered:
            began = entered.pop(tid)
            if step["start"] is not None:
                step["fsync"] += time - began
        elif event == "io_uring:io_uring_submit_req" and "opcode FSYNC" in rest:
            issued[owner] = time
        elif event == "io_uring:io_uring_complete" and tid != owner and owner in issued:
            began = issued.pop(owner)
            if step["start"] is not None:
                step["fsync"] += time - began
        elif event == "io_uring:io_uring_submit_req" and "opcode SEND" in rest and tid == owner:
            if step["start"] is not None and step["fsync"] > 0:
                steps.append(time - step["start"])
                outside.append(time - step["start"] - step["fsync"])
            step["start"] = None
    print("prepare read -> next send, with an fsync between (us):", quantiles(steps))
    print("  of which outside fsyncs (us):                       ", quantiles(outside))


def show(events, names, append):
    begin, end, first, last = append
    print(f"--- append of {(end - begin) * 1e3:.3f} ms at {begin:.6f}")
    for time, comm, _, tid, cpu, event, rest in events[first : last + 1]:
        short = event.split(":")[1]
        if short in ("sched_wakeup", "sched_switch", "sys_enter_io_uring_enter", "sys_exit_io_uring_enter"):
            continue
        if short in ("io_uring_submit_req", "io_uring_queue_async_work"):
            rest = re.search(r"opcode (\S+)", rest).group(1)
        elif short == "io_uring_complete":
            rest = "result " + re.search(r"result (-?\d+)", rest).group(1)
        who = names.get(tid, comm)
        print(f"  +{(time - begin) * 1e3:8.3f} ms {who:16} c{cpu} {short:26} {rest[:80]}")


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 1
    events, shards, workers, names = load(sys.argv[1], sys.argv[2])
    found = appends(events)
    print("appends (ms):", quantiles([end - begin for begin, end, _, _ in found], 1e3, 2))
    fsync_hops(events, shards, workers)
    replica_steps(events, shards, workers)
    by_latency = sorted(found, key=lambda a: a[1] - a[0])
    if len(sys.argv) > 3 and by_latency:
        if sys.argv[3] == "median":
            show(events, names, by_latency[len(by_latency) // 2])
        elif sys.argv[3] == "slow":
            for append in by_latency[-int(sys.argv[4]) :]:
                show(events, names, append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
