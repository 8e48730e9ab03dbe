#!/usr/bin/env python3
"""bench.py - the arithmetic of plivo_otp's benchmark (test/bench/run.sh).

  bench.py latency SENT RECORDS OUT          commit -> request latencies: SENT has lines
                                             "dst commit_us", RECORDS is fast_plivo's
                                             /_records; writes OUT (sorted ms) and prints
                                             "count p50 p99 max" (ms)
  bench.py drain RECORDS                     first -> last arrival of a drain: prints
                                             "count seconds rate"
  bench.py window RECORDS SECONDS            arrivals in the SECONDS after the first one:
                                             prints "count rate max_per_second"
  bench.py wrk-ceiling WRK_OUTPUT            Requests/sec, p50 and p99 (ms) of a wrk run
  bench.py pgbench-log SIZE LOGFILE...       one connection's per-transaction log: rate of
                                             the first and of the last SIZE transactions
  bench.py callbacks URL TOKEN_FILE UUIDS N OUT [--unsigned]
                                             N signed (Plivo V3) delivery callbacks, one a
                                             line "nonce<TAB>signature<TAB>body", cycling
                                             through the message UUIDs in UUIDS
  bench.py results TSV MACHINE OUT           RESULTS.md from the rows of TSV

Standard library only.
"""

import base64
import hashlib
import hmac
import re
import secrets
import sys
from urllib.parse import urlencode


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def read_records(path):
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                out.append((int(parts[0]), parts[1], parts[2]))
    return out


def cmd_latency(sent_path, records_path, out_path):
    """SENT: "dst commit_us" lines (clock_timestamp() in the committing
    statement, just before its commit)."""
    arrival = {}
    for us, _, dst in read_records(records_path):
        arrival.setdefault(dst.lstrip("+"), us)
    lat = []
    with open(sent_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[0].lstrip("+") in arrival:
                lat.append((arrival[parts[0].lstrip("+")] - int(parts[1])) / 1000.0)
    lat.sort()
    with open(out_path, "w") as f:
        f.write("# commit -> request at the target (ms), sorted; column 2: cumulative fraction\n")
        for i, v in enumerate(lat):
            f.write(f"{v:.3f} {(i + 1) / len(lat):.4f}\n")
    print(len(lat), f"{percentile(lat, 50):.2f}", f"{percentile(lat, 99):.2f}",
          f"{lat[-1] if lat else float('nan'):.2f}")


def cmd_drain(records_path):
    times = sorted(r[0] for r in read_records(records_path) if r[1] == "m")
    if len(times) < 2:
        print(len(times), 0, 0)
        return
    seconds = (times[-1] - times[0]) / 1e6
    rate = (len(times) - 1) / seconds if seconds > 0 else float("inf")
    print(len(times), f"{seconds:.3f}", f"{rate:.1f}")


def cmd_window(records_path, seconds):
    seconds = float(seconds)
    times = sorted(r[0] for r in read_records(records_path) if r[1] == "m")
    if not times:
        print(0, 0, 0)
        return
    end = times[0] + seconds * 1e6
    inside = [t for t in times if t < end]
    per_second = {}
    for t in inside:
        per_second[int((t - times[0]) // 1e6)] = per_second.get(int((t - times[0]) // 1e6), 0) + 1
    print(len(inside), f"{len(inside) / seconds:.1f}", max(per_second.values()))


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def cmd_wrk_ceiling(path):
    text = open(path).read()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    print(rps.group(1) if rps else "nan", f"{to_ms(p50.group(1)):.3f}" if p50 else "nan",
          f"{to_ms(p99.group(1)):.3f}" if p99 else "nan")


def cmd_pgbench_log(size, paths):
    size = int(size)
    stamps = []
    for path in paths:
        with open(path) as f:
            for line in f:
                parts = line.split()
                # client_id transaction_no time script_no time_epoch time_us
                if len(parts) >= 6:
                    stamps.append(int(parts[4]) * 1000000 + int(parts[5]))
    stamps.sort()
    if len(stamps) < 2 * size:
        print("nan nan nan")
        return
    first = size / ((stamps[size - 1] - stamps[0]) / 1e6)
    last = size / ((stamps[-1] - stamps[-size]) / 1e6)
    print(f"{first:.1f}", f"{last:.1f}", f"{(last / first - 1) * 100:.1f}")


def cmd_callbacks(url, token_file, uuid_file, n, out_path, unsigned):
    token = open(token_file).read().strip()
    uuids = open(uuid_file).read().split()
    if not uuids:
        sys.exit("no message UUIDs to send callbacks for")
    with open(out_path, "w") as f:
        for i in range(int(n)):
            params = {"MessageUUID": uuids[i % len(uuids)], "Status": "delivered",
                      "Sequence": str(1000 + i), "ErrorCode": "000", "From": "14155550000",
                      "To": "14155550001", "Type": "sms", "Units": "1"}
            nonce = f"{secrets.randbelow(10 ** 20):020d}"
            sig = ""
            if not unsigned:
                payload = url + "?" + "".join(k + v for k, v in sorted(params.items())) + "." + nonce
                sig = base64.b64encode(hmac.new(token.encode(), payload.encode(),
                                                hashlib.sha256).digest()).decode()
            f.write(f"{nonce}\t{sig}\t{urlencode(params)}\n")


def cmd_results(tsv_path, machine_path, out_path):
    rows = []
    with open(tsv_path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 6:
                rows.append(parts)
    with open(out_path, "w") as out:
        out.write("# plivo_otp benchmark results\n\n")
        out.write("Written by `test/bench/run.sh` (do not edit by hand: run it again).\n")
        out.write("Each figure is measured beside its baseline in the same run; the ratio is\n")
        out.write("figure / baseline (for latencies and times: baseline / figure, so that\n")
        out.write("higher is always better).  A benchmark prints figures: it is not a test.\n\n")
        out.write(open(machine_path).read().rstrip("\n") + "\n\n")
        out.write("| bench | figure | baseline | ratio | target | met? |\n")
        out.write("|---|---|---|---|---|---|\n")
        for r in rows:
            out.write("| " + " | ".join(c.replace("|", "/") for c in r) + " |\n")
        out.write("\nPlots: [drain.png](drain.png) (drain rate against backlog size, one line per\n")
        out.write("`max_inflight`), [latency.png](latency.png) (commit -> request distribution).\n")
        out.write("Data: drain.dat, latency.dat.\n")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "latency":
        cmd_latency(*args)
    elif cmd == "drain":
        cmd_drain(*args)
    elif cmd == "window":
        cmd_window(*args)
    elif cmd == "wrk-ceiling":
        cmd_wrk_ceiling(*args)
    elif cmd == "pgbench-log":
        cmd_pgbench_log(args[0], args[1:])
    elif cmd == "callbacks":
        cmd_callbacks(*args[:5], unsigned="--unsigned" in args[5:])
    elif cmd == "results":
        cmd_results(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
