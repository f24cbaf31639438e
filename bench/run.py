"""``make bench``: the service as deployed, driven by wrk, measured against its ceiling.

Starts gunicorn with the default worker count (authentication off for the run: the
benchmark measures the clinical work, not signature checks), checks that every workload
gets the cards it should, runs wrk at 8 connections and at 1, then runs the ceiling (the
same stack answering ``{"cards": []}`` after decoding the same body) in the same run, and
prints one table. Ratios, not absolute times, are what hold on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import requests

from bench.workloads import EXPECTED_TOPICS, resource_count, workloads
from cds_service.settings import default_workers

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.md"
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass
class WrkResult:
    rps: float
    p50: float
    p90: float
    p99: float
    requests: int
    errors: int


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    ready_seconds: float

    def worker_rss_mb(self) -> list[float]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        sizes = []
        for pid in children.read_text().split():
            status = Path(f"/proc/{pid}/status")
            if status.exists():
                match = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
                if match:
                    sizes.append(int(match.group(1)) / 1024)
        return sizes

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def seconds(workload: str, base: int) -> int:
    """The heavy workload runs three times longer: at about 20 requests a second, a 10 s
    run counts too few requests for a ratio to mean anything."""
    return base * 3 if workload == "C" else base


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("bench: installing wrk (Debian package)", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or sys.exit("bench: wrk could not be installed")


def start(kind: str, workdir: Path, workers: int, **extra: str) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPI_CDS_")}
    env.update(extra)
    env.update(
        TPI_CDS_BIND=f"127.0.0.1:{port}",
        TPI_CDS_WORKERS=str(workers),
        TPI_CDS_DATA_DIR=str(workdir / kind),
        TPI_CDS_AUTH_DISABLED="true",
        PYTHONPATH=str(ROOT),
    )
    log = (workdir / f"{kind}.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.serve", "ceiling" if kind == "ceiling" else "service"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() - started < 60:
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return Server(process, url, time.monotonic() - started)
        except requests.RequestException:
            time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    sys.exit(f"bench: the {kind} server did not become ready; see {workdir / kind}.log")


DRAFT_MARK = "__DRAFT__"


def lua_script(workdir: Path, name: str, body: bytes, paths: tuple[str, ...] = ()) -> Path:
    """A wrk script that posts ``body`` with a new TPI draft order id on every request
    (card memory would otherwise leave out every card after the first), or, with two
    ``paths``, alternates them with the same id: order-select, then order-sign of the same
    draft order, then the next ordering session."""
    body_path = workdir / f"{name}.json"
    body_path.write_bytes(body)
    script = workdir / f"{name}.lua"
    lines = [
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "application/json"',
        f'local f = io.open("{body_path}", "rb")',
        "local text = f:read('*a')",
        "f:close()",
        "local parts = {}",
        "local start = 1",
        "while true do",
        f'  local i, j = string.find(text, "{DRAFT_MARK}", start, true)',
        "  if not i then break end",
        "  parts[#parts + 1] = string.sub(text, start, i - 1)",
        "  start = j + 1",
        "end",
        "parts[#parts + 1] = string.sub(text, start)",
        "local threads = 0",
        "function setup(thread)",
        "  threads = threads + 1",
        "  thread:set('tid', threads)",
        "end",
        "local counter = 0",
        "local nonce = tostring(os.time()) .. tostring(math.floor(os.clock() * 1e6))",
        "function request()",
        "  counter = counter + 1",
    ]
    if paths:
        select_path, sign_path = paths
        lines += [
            "  local session = math.floor((counter + 1) / 2)",
            "  local id = 'd' .. nonce .. '-' .. tostring(tid) .. '-' .. session",
            "  local body = table.concat(parts, id)",
            "  if counter % 2 == 1 then",
            f'    return wrk.format("POST", "{select_path}", nil, body)',
            "  end",
            '  body = string.gsub(body, \'"hook":"order%-select"\', \'"hook":"order-sign"\', 1)',
            f'  return wrk.format("POST", "{sign_path}", nil, body)',
        ]
    else:
        lines += [
            "  local id = 'd' .. nonce .. '-' .. tostring(tid) .. '-' .. counter",
            "  return wrk.format(nil, nil, nil, table.concat(parts, id))",
        ]
    lines.append("end")
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return script


def wrk(binary: str, url: str, script: Path, connections: int, seconds: int) -> WrkResult:
    threads = min(2, connections)
    out = subprocess.run(
        [
            binary,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        return float(match.group(1)) * UNITS[match.group(2)] if match else float("nan")

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    failed = int(errors.group(1)) if errors else 0
    if socket_errors:
        failed += sum(int(x) for x in socket_errors.groups())
    return WrkResult(rps, latency("50"), latency("90"), latency("99"), total, failed)


def check_cards(url: str, service: str, body: bytes, name: str, expected: list[str]) -> None:
    """The bench measures real work: each workload must get exactly its expected cards."""
    response = requests.post(
        f"{url}/cds-services/{service}",
        data=body.replace(DRAFT_MARK.encode(), f"check-{name}".encode()),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    response.raise_for_status()
    topics = [card["source"]["topic"]["code"] for card in response.json()["cards"]]
    if topics != expected:
        sys.exit(f"bench: workload {name} answered {topics}, expected {expected}")


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"nproc {os.cpu_count()}, {model}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="each run at 8 connections")
    parser.add_argument("--single-seconds", type=int, default=6, help="each run at 1 connection")
    parser.add_argument(
        "--soak-requests",
        type=int,
        default=100_000,
        help="requests of workload B for the memory check (0 to skip)",
    )
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument(
        "--memory-pairs",
        type=int,
        default=1000,
        help="alternated single requests to each of memory on / off",
    )
    args = parser.parse_args()
    binary = ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="tpi-bench-"))
    print(
        f"bench: authentication is OFF for this run (TPI_CDS_AUTH_DISABLED=true); "
        f"{args.workers} gunicorn workers; {machine()}",
        file=sys.stderr,
    )
    loads = workloads()
    bodies = {name: orjson.dumps(with_draft_mark(body)) for name, (_, body) in loads.items()}
    scripts = {name: lua_script(workdir, name, body) for name, body in bodies.items()}
    session_script = lua_script(
        workdir,
        "E",
        bodies["B"],
        ("/cds-services/tpi-order-select", "/cds-services/tpi-order-sign"),
    )

    results: dict[str, dict[str, WrkResult]] = {}
    rss: dict[str, float] = {}
    service = start("service", workdir, args.workers)
    ready = service.ready_seconds
    try:
        for name, (service_id, _) in loads.items():
            check_cards(service.url, service_id, bodies[name], name, EXPECTED_TOPICS[name])
            url = f"{service.url}/cds-services/{service_id}"
            wrk(binary, url, scripts[name], 8, 2)  # warm-up
            results[name] = {
                "c8": wrk(binary, url, scripts[name], 8, seconds(name, args.seconds)),
                "c1": wrk(binary, url, scripts[name], 1, seconds(name, args.single_seconds)),
            }
            rss[name] = max(service.worker_rss_mb())
            print(f"bench: {name} done", file=sys.stderr)
        results.update(memory_runs(binary, service, workdir, args, bodies["B"], scripts["B"]))
        results["E"] = session_runs(binary, service, bodies["B"], session_script, args)
        results.update(metrics_runs(binary, service, workdir, args, loads, scripts))
        soak = soak_run(binary, service, loads["B"][0], scripts["B"], args.soak_requests)
    finally:
        service.stop()
    ceiling = start("ceiling", workdir, args.workers)
    try:
        for name, (service_id, _) in loads.items():
            url = f"{ceiling.url}/cds-services/{service_id}"
            wrk(binary, url, scripts[name], 8, 2)
            results[f"ceiling-{name}"] = {
                "c8": wrk(binary, url, scripts[name], 8, seconds(name, args.seconds)),
                "c1": wrk(binary, url, scripts[name], 1, seconds(name, args.single_seconds)),
            }
            print(f"bench: ceiling for {name} done", file=sys.stderr)
    finally:
        ceiling.stop()
    table = report(loads, results, rss, ready, soak, args)
    print(table)
    RESULTS.write_text(table + screening_section(), encoding="utf-8")
    print(f"bench: written to {RESULTS.relative_to(ROOT)}", file=sys.stderr)


def screening_section() -> str:
    """``make bench-screen``'s section of the results file, kept as it is."""
    if not RESULTS.exists():
        return ""
    text = RESULTS.read_text(encoding="utf-8")
    start = text.find("\n## Population screening")
    return text[start:] if start >= 0 else ""


def with_draft_mark(body: dict) -> dict:
    """The request with its TPI draft order's id replaced by a mark the wrk script fills."""
    drafts = body["context"].get("draftOrders")
    if not drafts:
        return body
    marked = orjson.loads(orjson.dumps(body))
    for entry in marked["context"]["draftOrders"]["entry"]:
        entry["resource"]["id"] = DRAFT_MARK
    marked["context"]["selections"] = [f"ServiceRequest/{DRAFT_MARK}"]
    return marked


def memory_runs(
    binary: str, service: Server, workdir: Path, args: argparse.Namespace, body: bytes, script: Path
) -> dict[str, dict[str, WrkResult]]:
    """Workload B with card memory on (the service) and off (a second service): wrk at
    8 connections, then one client alternating single requests between the two, so both
    see the same moments of a noisy machine (wrk cannot interleave two servers)."""
    plain = start("no-memory", workdir, args.workers, TPI_CDS_MEMORY="false")
    eight: dict[str, WrkResult] = {}
    try:
        check_cards(plain.url, "tpi-order-select", body, "B", EXPECTED_TOPICS["B"])
        targets = {"B-memory": service.url, "B-no-memory": plain.url}
        for label, base in targets.items():
            url = f"{base}/cds-services/tpi-order-select"
            wrk(binary, url, script, 8, 2)
            eight[label] = wrk(binary, url, script, 8, args.seconds)
        alternated = alternate(targets, body, pairs=args.memory_pairs)
    finally:
        plain.stop()
    print("bench: card memory on/off done", file=sys.stderr)
    return {label: {"c8": eight[label], "alternated": alternated[label]} for label in targets}


def alternate(
    targets: dict[str, str], body: bytes, pairs: int, service_id: str = "tpi-order-select"
) -> dict[str, WrkResult]:
    """One keep-alive client per server, a request to each in turn, a new TPI order each
    time: latency percentiles of each side (requests/s is not measured here)."""
    sessions = {label: requests.Session() for label in targets}
    times: dict[str, list[float]] = {label: [] for label in targets}
    for index in range(pairs):
        data = body.replace(DRAFT_MARK.encode(), f"alt-{index}".encode())
        for label, base in targets.items():
            started = time.perf_counter()
            response = sessions[label].post(
                f"{base}/cds-services/{service_id}",
                data=data,
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            times[label].append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    found = {}
    for label, values in times.items():
        values.sort()

        def at(share: float, values: list[float] = values) -> float:
            return values[min(len(values) - 1, int(share * len(values)))]

        # One connection's throughput: requests per second at the mean latency.
        rate = 1000.0 * len(values) / sum(values)
        found[label] = WrkResult(rate, at(0.5), at(0.9), at(0.99), len(values), 0)
    return found


def metrics_runs(
    binary: str,
    service: Server,
    workdir: Path,
    args: argparse.Namespace,
    loads: dict,
    scripts: dict[str, Path],
) -> dict[str, dict[str, WrkResult]]:
    """Workloads A and B with metrics on and off, each in a new service (the same fresh
    state: the main service's card memory has grown by then), driven **at the same time**
    by two wrk processes of 4 connections each, three times: both share every moment of
    the machine, so their throughput ratio is the cost of metrics (runs one after the
    other moved by ±5 % here, more than the cost itself). Then one client alternating
    single requests between them."""
    from concurrent.futures import ThreadPoolExecutor

    counted = start("metrics-on", workdir, args.workers)
    plain = start("metrics-off", workdir, args.workers, TPI_CDS_METRICS="false")
    found: dict[str, dict[str, WrkResult]] = {}
    try:
        for name in ("A", "B"):
            service_id = loads[name][0]
            targets = {f"{name}-metrics": counted.url, f"{name}-no-metrics": plain.url}
            urls = {label: f"{base}/cds-services/{service_id}" for label, base in targets.items()}
            for url in urls.values():
                wrk(binary, url, scripts[name], 8, 2)
            totals = {label: WrkResult(0.0, 0.0, 0.0, 0.0, 0, 0) for label in urls}
            with ThreadPoolExecutor(max_workers=2) as pool:
                for _ in range(3):
                    running = {
                        label: pool.submit(wrk, binary, url, scripts[name], 4, args.seconds)
                        for label, url in urls.items()
                    }
                    for label, future in running.items():
                        run, total = future.result(), totals[label]
                        totals[label] = WrkResult(
                            total.rps + run.rps / 3,
                            max(total.p50, run.p50),
                            max(total.p90, run.p90),
                            max(total.p99, run.p99),
                            total.requests + run.requests,
                            total.errors + run.errors,
                        )
            body = scripts[name].with_suffix(".json").read_bytes()
            one_at_a_time = alternate(targets, body, args.memory_pairs, service_id)
            for label in urls:
                found[label] = {"c8": totals[label], "alternated": one_at_a_time[label]}
    finally:
        counted.stop()
        plain.stop()
    print("bench: metrics on/off done", file=sys.stderr)
    return found


def session_runs(
    binary: str, service: Server, body: bytes, script: Path, args: argparse.Namespace
) -> dict[str, WrkResult]:
    """Ordering sessions: order-select then order-sign of the same TPI order; the sign
    call must carry only the safety card."""
    marked = body.replace(DRAFT_MARK.encode(), b"check-session")
    check_cards(service.url, "tpi-order-select", marked, "E select", EXPECTED_TOPICS["B"])
    signed = marked.replace(b'"hook":"order-select"', b'"hook":"order-sign"', 1)
    check_cards(service.url, "tpi-order-sign", signed, "E sign", ["tpi-safety"])
    url = f"{service.url}/cds-services/tpi-order-select"
    wrk(binary, url, script, 8, 2)
    result = {
        "c8": wrk(binary, url, script, 8, args.seconds),
        "c1": wrk(binary, url, script, 1, args.single_seconds),
    }
    print("bench: ordering sessions done", file=sys.stderr)
    return result


def soak_run(
    binary: str, server: Server, service_id: str, script: Path, target: int
) -> list[tuple[int, float]]:
    """Workload B until `target` requests: worker RSS sampled after each slice."""
    samples: list[tuple[int, float]] = []
    done = 0
    url = f"{server.url}/cds-services/{service_id}"
    while done < target:
        result = wrk(binary, url, script, 8, 15)
        if result.errors:
            sys.exit(f"bench: {result.errors} failed requests during the soak")
        done += result.requests
        samples.append((done, max(server.worker_rss_mb())))
        print(f"bench: soak {done} requests, worker RSS {samples[-1][1]:.0f} MB", file=sys.stderr)
    return samples


def report(
    loads: dict, results: dict, rss: dict, ready: float, soak: list, args: argparse.Namespace
) -> str:
    targets = {"A": 0.80, "B": 0.25, "C": 0.50, "D": 0.25}
    labels = {
        "A": "A non-TPI order",
        "B": "B TPI, typical record",
        "C": "C TPI, heavy record",
        "D": "D patient-view",
    }
    lines = [
        "# Benchmark results",
        "",
        f"Run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by `make bench` on {machine()}; "
        f"{args.workers} gunicorn workers; authentication off for the run; wrk "
        f"{args.seconds} s at 8 connections and {args.single_seconds} s at 1 connection per row "
        "(three times as long for C).",
        "",
        "| Workload | resources | body KB | req/s (c8) | p50 / p90 / p99 ms (c8) | p50 ms (c1) | p99 ms (c1) "
        "| worker RSS MB | ceiling req/s | ratio | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (_, body) in loads.items():
        run, ceiling = results[name], results[f"ceiling-{name}"]
        ratio = run["c8"].rps / ceiling["c8"].rps
        mark = "met" if ratio >= targets[name] else "MISSED"
        lines.append(
            f"| {labels[name]} | {resource_count(body)} | {len(orjson.dumps(body)) // 1024} | "
            f"{run['c8'].rps:.0f} | {run['c8'].p50:.1f} / {run['c8'].p90:.1f} / {run['c8'].p99:.1f} | "
            f"{run['c1'].p50:.1f} | {run['c1'].p99:.1f} | {rss[name]:.0f} | {ceiling['c8'].rps:.0f} | "
            f"{ratio:.0%} | ≥ {targets[name]:.0%}: {mark} |"
        )
    lines += [
        "",
        'Ceiling (same stack, fixed `{"cards": []}` after decoding the same body):',
        "",
        "| Body of | req/s (c8) | p50 ms (c8) | p50 ms (c1) |",
        "|---|---|---|---|",
    ]
    for name in loads:
        ceiling = results[f"ceiling-{name}"]
        lines.append(
            f"| {name} | {ceiling['c8'].rps:.0f} | {ceiling['c8'].p50:.1f} | {ceiling['c1'].p50:.1f} |"
        )
    on, off = results["B-memory"], results["B-no-memory"]
    cost = on["alternated"].p50 - off["alternated"].p50
    session = results["E"]
    lines += [
        "",
        "Card memory (workload B, a new TPI order each request so every card is looked up and "
        "remembered; memory on is the service above, memory off a second service with "
        "`TPI_CDS_MEMORY=false`; wrk at 8 connections, then one client sending "
        f"{on['alternated'].requests} requests to each in turn, one at a time):",
        "",
        "| B | req/s (c8) | p50 ms (c8) | p50 ms (alternated) | p90 ms (alternated) |",
        "|---|---|---|---|---|",
        f"| memory on (SQLite) | {on['c8'].rps:.0f} | {on['c8'].p50:.1f} | "
        f"{on['alternated'].p50:.2f} | {on['alternated'].p90:.2f} |",
        f"| memory off | {off['c8'].rps:.0f} | {off['c8'].p50:.1f} | "
        f"{off['alternated'].p50:.2f} | {off['alternated'].p90:.2f} |",
        "",
        f"- Memory's cost at p50, requests one at a time: {cost:+.2f} ms "
        f"(target ≤ 1 ms: {'met' if cost <= 1.0 else 'MISSED'})",
        f"- E ordering sessions (order-select then order-sign of the same TPI order; the sign "
        f"answers the safety card only): {session['c8'].rps:.0f} req/s at 8 connections, p50 "
        f"{session['c8'].p50:.1f} ms; p50 {session['c1'].p50:.1f} ms at 1 connection",
    ]
    lines += [
        "",
        "Metrics (two new services, one with `TPI_CDS_METRICS=false`. Throughput cost: one "
        "client alternating single requests between them, so both see the same moments of "
        "the machine; for context, two wrk processes of 4 connections driving both at the "
        "same time, three runs, mean req/s — that split of the machine between two "
        "services moved by ±10 % between trial runs, more than the cost itself):",
        "",
        "| Workload | req/s on / off, one at a time | throughput cost | target | p50 ms on / off | req/s on / off, both at once |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("A", "B"):
        on_run, off_run = results[f"{name}-metrics"], results[f"{name}-no-metrics"]
        single_on, single_off = on_run["alternated"], off_run["alternated"]
        cost_share = 1 - single_on.rps / single_off.rps
        lines.append(
            f"| {name} | {single_on.rps:.0f} / {single_off.rps:.0f} | {cost_share:+.1%} | "
            f"≤ 3 %: {'met' if cost_share <= 0.03 else 'MISSED'} | "
            f"{single_on.p50:.2f} / {single_off.p50:.2f} | "
            f"{on_run['c8'].rps:.0f} / {off_run['c8'].rps:.0f} |"
        )
    b1, c1 = results["B"]["c1"], results["C"]["c1"]
    errors = sum(r.errors for runs in results.values() for r in runs.values())
    lines += [
        "",
        "Absolute targets:",
        "",
        f"- B p99 at 1 connection: {b1.p99:.1f} ms (target ≤ 30 ms: {'met' if b1.p99 <= 30 else 'MISSED'})",
        f"- C p50 at 1 connection: {c1.p50:.1f} ms (target ≤ 150 ms: {'met' if c1.p50 <= 150 else 'MISSED'})",
        f"- Start to a ready `/readyz`: {ready:.2f} s (target ≤ 2 s: {'met' if ready <= 2 else 'MISSED'})",
        f"- Failed requests in all runs: {errors}",
    ]
    if soak:
        first, last = soak[0][1], soak[-1][1]
        peak = max(size for _, size in soak)
        flat = last <= first * 1.10 + 5
        lines.append(
            f"- Worker RSS across {soak[-1][0]} requests of B: {first:.0f} MB after {soak[0][0]}, "
            f"{last:.0f} MB at the end, peak {peak:.0f} MB (target ≤ 150 MB and flat: "
            f"{'met' if peak <= 150 and flat else 'MISSED'})"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
