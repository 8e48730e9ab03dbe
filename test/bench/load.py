#!/usr/bin/env python3
"""load.py - HTTP load drivers for plivo_otp's benchmarks (test/bench/run.sh).

  load.py standin  URL AUTH_ID TOKEN_FILE N CONCURRENCY
      POST N Send Message requests straight to the Plivo stand-in: the baseline that
      shows what the stand-in alone can take.
  load.py callbacks URL PUBLIC_URL TOKEN_FILE UUID_FILE CONCURRENCY [--path P] [--unsigned]
      POST one signed 'delivered' callback per message UUID in UUID_FILE to the listener
      (URL is where to connect; PUBLIC_URL is what Plivo would have called and signed).
      --unsigned --path /nowhere measures the same client against a path the listener
      answers without touching the database: the client's own ceiling.

Prints one JSON line: {"requests", "seconds", "per_second", "statuses"}. Standard library
only; several processes so that the client is not the bottleneck.
"""

import base64
import collections
import hashlib
import hmac
import http.client
import json
import multiprocessing
import secrets
import sys
import time
from urllib.parse import urlencode, urlsplit


def sign_v3_post(url, params, nonce, token):
    payload = url + "?" + "".join(k + v for k, v in sorted(params.items())) + "." + nonce
    digest = hmac.new(token.encode(), payload.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def worker(args):
    target, jobs = args
    parts = urlsplit(target)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    statuses = collections.Counter()
    for method, path, body, headers in jobs:
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            statuses[resp.status] += 1
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        except (OSError, http.client.HTTPException):
            statuses["error"] += 1
            conn.close()
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.close()
    return statuses


def run(target, jobs, concurrency):
    chunks = [(target, jobs[i::concurrency]) for i in range(concurrency)]
    with multiprocessing.Pool(concurrency) as pool:
        start = time.monotonic()
        results = pool.map(worker, chunks)
        seconds = time.monotonic() - start
    total = collections.Counter()
    for r in results:
        total.update(r)
    return {"requests": len(jobs), "seconds": round(seconds, 3),
            "per_second": round(len(jobs) / seconds, 1),
            "statuses": {str(k): v for k, v in total.items()}}


def main():
    mode = sys.argv[1]
    if mode == "standin":
        url, auth_id, token_file, n, conc = sys.argv[2:7]
        token = open(token_file).read().strip()
        auth = "Basic " + base64.b64encode(f"{auth_id}:{token}".encode()).decode()
        jobs = []
        for i in range(int(n)):
            body = json.dumps({"src": "14155550000", "dst": f"1500{i:07d}", "type": "sms",
                               "text": "Your verification code is 123456.", "log": "false"})
            jobs.append(("POST", f"/v1/Account/{auth_id}/Message/", body,
                         {"Authorization": auth, "Content-Type": "application/json"}))
        print(json.dumps(run(url, jobs, int(conc))))
    elif mode == "callbacks":
        url, public_url, token_file, uuid_file, conc = sys.argv[2:7]
        rest = sys.argv[7:]
        path = rest[rest.index("--path") + 1] if "--path" in rest else "/plivo/sms-status"
        unsigned = "--unsigned" in rest
        token = open(token_file).read().strip()
        jobs = []
        for seq, uuid in enumerate(open(uuid_file).read().split()):
            params = {"MessageUUID": uuid, "Status": "delivered", "Sequence": "3",
                      "ErrorCode": "000", "From": "14155550000", "To": "15005550000",
                      "Type": "sms", "Units": "1"}
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            if not unsigned:
                nonce = str(secrets.randbelow(10 ** 20)).zfill(20)
                headers["X-Plivo-Signature-V3"] = sign_v3_post(public_url.rstrip("/") + path,
                                                               params, nonce, token)
                headers["X-Plivo-Signature-V3-Nonce"] = nonce
            jobs.append(("POST", path, urlencode(params), headers))
        print(json.dumps(run(url, jobs, int(conc))))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
