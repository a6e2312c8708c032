# Studio turns (`POST /ai/chat`, a new conversation each) one every 100 ms
# against the atelier that a running `atelier-bench` started, until the given
# seconds pass or that server goes away; prints how many were slow. It shows
# what the bench's own studio scenario cannot, which runs after the
# throughput ladder: a request's own writes while the ladder's usage batches
# and checkpoints run (ADR-0037's before and after).
#
#   python3 bench/slices/studio-turns.py 100 > turns.json &
#   atelier-bench --bin-dir DIR --out /tmp/x --only throughput --rates 5000,5000,5000
#   wait
import http.client, json, re, subprocess, sys, time

MODEL = "mock/chat"  # the bench's mock model
ADMIN = {"email": "bench@example.com", "password": "bench admin orchid kettle lantern"}  # procs.rs


def atelier_port(wait_s=60):
    """The port of the first `atelier` process listening on loopback."""
    end = time.time() + wait_s
    while time.time() < end:
        for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
            m = re.search(r"127\.0\.0\.1:(\d+)", line)
            if m and '"atelier' in line and "mock" not in line:
                return int(m.group(1))
        time.sleep(0.2)
    sys.exit("no atelier listening")


def post(conn, path, body, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = "Bearer " + token
    conn.request("POST", path, json.dumps(body), headers)
    response = conn.getresponse()
    return response.status, response.read()


def main():
    seconds = float(sys.argv[1])
    port = atelier_port()
    time.sleep(3)  # the bench signs in and warms up first
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    token = json.loads(post(conn, "/auth/login", ADMIN)[1])["access_token"]
    turn = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello in one line"}]}
    latencies, errors, start = [], 0, time.time()
    while time.time() - start < seconds:
        t0 = time.perf_counter()
        try:
            status, body = post(conn, "/ai/chat", turn, token)
        except ConnectionRefusedError:
            break  # the bench has stopped its server
        except (http.client.HTTPException, OSError) as e:
            print("error", type(e).__name__, e, file=sys.stderr)
            errors += 1
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        if status != 200:
            print("status", status, body[:200], file=sys.stderr)
            errors += 1
        latencies.append((time.perf_counter() - t0) * 1e3)
        time.sleep(max(0.0, 0.1 - (time.perf_counter() - t0)))
    latencies.sort()
    n = len(latencies)
    print(json.dumps({
        "turns": n, "errors": errors,
        "p50_ms": round(latencies[n // 2], 3), "p99_ms": round(latencies[int(n * 0.99)], 3),
        "over_50_ms": sum(x > 50 for x in latencies), "over_100_ms": sum(x > 100 for x in latencies),
        "slowest_ms": [round(x, 1) for x in latencies[-5:]],
    }))


main()
