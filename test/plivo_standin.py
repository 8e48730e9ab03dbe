#!/usr/bin/env python3
"""plivo_standin.py - a local stand-in for Plivo's REST API, for plivo_otp's tests.

The TAP tests, the demo script and the benchmarks point plivo_otp.api_url at this server
instead of https://api.plivo.com. It accepts Send Message and Make Call requests the way
Plivo does (plivo-api.md sections 1 and 4 of the design notes), records every request,
can be told to fail in chosen ways, and sends message-status callbacks signed with
Plivo's V2/V3 schemes (section 3) to the extension's listener.

A call it accepts (with an answer_url) then behaves like Plivo's voice platform: after
--call-answer-delay seconds it POSTs the answer_url (form-encoded CallUUID, From, To,
CallStatus=in-progress, Direction=outbound, ALegUUID, ALegRequestUUID, RequestUUID,
Event=StartApp, ..., signed with V3) and records the status, the body and every <Speak>
(text and attributes) it got; after --call-hangup-delay more seconds it POSTs the
hangup_url (V3) with CallStatus, HangupCause, HangupCauseCode, HangupCauseName,
HangupSource, Duration, BillDuration and the answer parameters.

Python 3.11, standard library only; `--help` shows the command line. The control API
(loopback clients only, JSON in and out):
  POST /_control/behave    {"mode", "count", "retry_after", "delay"}: queue a failure rule
                           (mode "custom": answer {"status"} with the raw {"body"} given);
                           or {"call_outcome", "count"}: how the next accepted calls end,
                           "answered" (the default), "busy", "no-answer", "failed",
                           "timeout" (no answer fetch, only a hang-up callback with a fitting
                           HangupCauseCode) or "machine" (an answering machine: with
                           machine_detection "hangup" no fetch, else fetched and spoken)
  POST /_control/call_timing {"answer_delay", "hangup_delay"}: seconds, for calls accepted
                           from now on
  POST /_control/call_fetch {"request_uuid", "url", "tamper", "signature", "nonce"}: fetch a
                           call's answer URL (or url) again with its answer parameters, signed
                           "v3" (default; with nonce if given, e.g. the recorded one to
                           replay), "none" or "bad"; tamper {k: v or null} after signing;
                           returns status, body, speak, nonce, params, headers
  POST /_control/reset     forget rules, requests, messages, calls and counters
  GET  /_control/requests?since=N, /_control/messages, /_control/stats
  GET  /_control/calls     each call: its request fields, outcome, call_uuid, and answer /
                           hangup records ({status, body, speak, nonce, params, headers,
                           error, at})
  POST /_control/callback  {"message_uuid", "status", "error_code", "signature", "sequence",
                            "url", "method", "extra_params", "tamper", "timeout", "send_to"}
  POST /_control/replay    {"url", "method", "params", "headers", "send_to"}: resend a
                           callback as is (send_to: connect to this base URL instead of
                           the signed url's host, as through a reverse proxy)
"""

import argparse
import base64
import collections
import copy
import hashlib
import hmac
import http.client
import ipaddress
import json
import os
import queue
import re
import secrets
import select
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit
from xml.etree import ElementTree

# --------------------------------------------------------------------------------------
# Signatures (plivo-api.md section 3)


def _b64_hmac(token, message):
    digest = hmac.new(token.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _base_and_query(url):
    """scheme://host[:port]/path as written (fragment and query cut off) and the decoded
    query pairs, blank values kept."""
    parts = urlsplit(url)
    return (f"{parts.scheme}://{parts.netloc}{parts.path}",
            parse_qsl(parts.query, keep_blank_values=True))


def _pairs(params):
    """Flatten {key: value or [values]} into (key, value) pairs."""
    out = []
    for key, value in (params or {}).items():
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            out.append((str(key), "" if v is None else str(v)))
    return out


def sign_v2(url, nonce, token):
    """X-Plivo-Signature-V2: the URL without query/fragment, then the nonce; the body is
    not covered."""
    base, _ = _base_and_query(url)
    return _b64_hmac(token, base + nonce)


def sign_v3(method, url, params, nonce, token):
    """X-Plivo-Signature-V3 over method, URL (as configured), parameters and nonce."""
    base, query = _base_and_query(url)
    params = _pairs(params)
    # Sorting (key, value) tuples orders by key first and sorts repeated keys by value,
    # as the python/node SDKs do; str comparison is code-point order, like UTF-8 bytes.
    if method.upper() == "GET":
        merged = sorted(query + params)
        if merged:
            base += "?" + "&".join(f"{k}={v}" for k, v in merged)
    else:
        qs = "&".join(f"{k}={v}" for k, v in sorted(query))
        if params:
            base += "?" + (qs + "." if qs else "") + "".join(k + v for k, v in sorted(params))
        elif qs:
            base += "?" + qs
    return _b64_hmac(token, base + "." + nonce)


def self_test():
    """Check sign_v2/sign_v3 against every vector in plivo-signature-vectors.json."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plivo-signature-vectors.json")
    with open(path, encoding="utf-8") as f:
        vectors = json.load(f)
    passed = failed = 0
    for v in vectors:
        if v["version"] == "v3":
            mine = sign_v3(v["method"], v["url"], v["params"], v["nonce"], v["auth_token"])
            # A V3 header may carry several comma-separated signatures; any one may match.
            valid = mine in v["expected_signature"].split(",")
        else:
            mine = sign_v2(v["url"], v["nonce"], v["auth_token"])
            valid = mine == v["expected_signature"]
        if valid == v["expect_valid"]:
            passed += 1
        else:
            failed += 1
            print(f"FAIL vector {v.get('id')}: computed {mine}, expected {v['expected_signature']}"
                  f" (expect_valid={v['expect_valid']})")
    # The headers every outgoing callback and call fetch carries, V3 as above.
    params = {"CallUUID": "c", "RequestUUID": "r", "CallStatus": "in-progress"}
    hdrs = signed_headers("v3", "POST", "https://x.example/a#ct=2000", params, "tok", nonce="123")
    ok = (hdrs["X-Plivo-Signature-V3"] == sign_v3("POST", "https://x.example/a", params, "123", "tok")
          and hdrs["X-Plivo-Signature-V3-Nonce"] == "123"
          and signed_headers("none", "POST", "https://x.example/a", params, "tok") == {})
    ok = ok and speak_of('<Response><Wait length="1"/><Speak voice="WOMAN" language="en-US"'
                         ' loop="2">Your code is 1, 2.</Speak><Hangup/></Response>') == [
        {"text": "Your code is 1, 2.", "voice": "WOMAN", "language": "en-US", "loop": "2"}]
    ok = ok and speak_of("not xml") == [] and speak_of("<Response><Hangup/></Response>") == []
    passed, failed = (passed + 1, failed) if ok else (passed, failed + 1)
    if not ok:
        print("FAIL call fetch signing or <Speak> parsing")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


# --------------------------------------------------------------------------------------
# Outgoing callbacks


def _plivo_time(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def _nonce():
    return f"{secrets.randbelow(10 ** 20):020d}"


def _units(text):
    # Rough GSM-7 vs UCS-2 split: plain ASCII counts as GSM-7, anything else as UCS-2.
    single, part = (160, 153) if text.isascii() else (70, 67)
    return 1 if len(text) <= single else -(-len(text) // part)


def signed_headers(mode, method, url, params, token, nonce=None):
    """The signature headers of an outgoing request: mode v3, v2, both, none or bad (V3
    well-formed under a wrong key); nonce for V3 (a fresh one if None)."""
    headers = {}
    if mode in ("v3", "both", "bad"):
        nonce = nonce or _nonce()
        key = token + ("x" if mode == "bad" else "")
        headers["X-Plivo-Signature-V3"] = sign_v3(method, url, params, nonce, key)
        headers["X-Plivo-Signature-V3-Nonce"] = nonce
    if mode in ("v2", "both"):
        n2 = _nonce()
        headers["X-Plivo-Signature-V2"] = sign_v2(url, n2, token)
        headers["X-Plivo-Signature-V2-Nonce"] = n2
    return headers


def speak_of(xml_text):
    """Every <Speak> of a Plivo XML answer: text and attributes; [] if it is not XML."""
    try:
        root = ElementTree.fromstring(xml_text)
    except (ElementTree.ParseError, TypeError):
        return []
    return [{"text": el.text or "", **el.attrib} for el in root.iter("Speak")]


def deliver(url, method, params, headers, timeout=8.0):
    """Send one callback the way Plivo does: POST as a form, GET as a query string.
    Returns (status or None, body text, error text or None)."""
    parts = urlsplit(url)
    target = parts.path or "/"
    query, body = parts.query, None
    hdrs = {"User-Agent": "plivo-standin", "Connection": "close", **headers}
    if method.upper() == "GET":
        extra = urlencode(_pairs(params))
        query = "&".join(q for q in (query, extra) if q)
    else:
        body = urlencode(_pairs(params)).encode("ascii")
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
    if query:
        target += "?" + query
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = cls(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request(method.upper(), target, body=body, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace"), None
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError) as e:
        return None, "", f"{type(e).__name__}: {e}"


class AutoCallbacks:
    """Sends --auto-callbacks off the request path through a small pool of workers, so a
    slow receiver never stalls the API and no thread is spawned per message. Each job is
    queued with the time it is due; as every job waits the same interval, the FIFO is also
    in due order. A message's next status is queued only after the previous one was sent,
    which keeps its callbacks in order."""

    def __init__(self, app, statuses, interval, workers=16):
        self.app, self.statuses, self.interval = app, statuses, interval
        self.jobs = queue.Queue()
        for _ in range(workers):
            threading.Thread(target=self._work, daemon=True).start()

    def start(self, message_uuid, statuses=None):
        self.jobs.put((time.monotonic() + self.interval, message_uuid, statuses or self.statuses))

    def _work(self):
        while True:
            due, message_uuid, statuses = self.jobs.get()
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                self.app.send_callback({"message_uuid": message_uuid, "status": statuses[0],
                                        "signature": self.app.callback_signature})
            except LookupError:      # forgotten by a reset (or by --max-records)
                continue
            if len(statuses) > 1:
                self.start(message_uuid, statuses[1:])


# --------------------------------------------------------------------------------------
# State and control API


class Refused(Exception):
    """Raised with (HTTP status, error text) to refuse an API or control request."""


MODES = {"ok", "500", "502", "503", "504", "429", "400", "401", "hang", "slow", "drop", "custom"}
SIGNATURES = ("v3", "v2", "both", "none", "bad")

# How a call ends: its final CallStatus and hang-up cause (name, code, HangupCauseName,
# HangupSource), and whether it is answered (its answer_url fetched). 4000 is Plivo's
# normal hang-up; the 2xxx/3xxx codes here are the stand-in's picks for each case.
CALL_OUTCOMES = {
    "answered": ("completed", "NORMAL_CLEARING", "4000", "Normal Hangup", "Callee", True),
    "busy": ("busy", "USER_BUSY", "3000", "Busy Line", "Callee", False),
    "no-answer": ("no-answer", "NO_ANSWER", "3020", "No Answer", "Callee", False),
    "timeout": ("timeout", "RING_TIMEOUT", "3030", "Ring Timeout Reached", "Plivo", False),
    "failed": ("failed", "DESTINATION_OUT_OF_ORDER", "2010", "Destination Out Of Service",
               "Carrier", False),
    "machine": ("completed", "MACHINE_DETECTED", "3110", "Machine Detected", "Plivo", True),
}


class App:
    """All mutable state, guarded by one lock (requests are short; contention is low)."""

    def __init__(self, args, token):
        self.auth_id, self.auth_token = args.auth_id, token
        self.verbose = args.verbose
        self.callback_signature = args.callback_signature
        statuses = [s.strip() for s in args.auto_callbacks.split(",") if s.strip()]
        self.lock = threading.Lock()
        self.max_records = args.max_records or None
        self.rules = collections.deque()
        self.call_rules = collections.deque()
        self.call_answer_delay = args.call_answer_delay
        self.call_hangup_delay = args.call_hangup_delay
        self._reset_data()
        self.auto = (AutoCallbacks(self, statuses, args.callback_interval)
                     if statuses else None)

    def _reset_data(self):
        self.records = collections.deque(maxlen=self.max_records)
        self.seq = 0
        self.messages = collections.OrderedDict()   # message_uuid -> message dict
        self.calls = collections.OrderedDict()      # request_uuid -> call dict
        self.cb_sequence = collections.OrderedDict()  # message_uuid -> last Sequence sent
        self.stats = collections.Counter()

    def _bound(self, od):
        while self.max_records and len(od) > self.max_records:
            od.popitem(last=False)

    # -- used by the API handler

    def record(self, method, path, headers, body):
        """Record an API request and consume one unit of the head rule (if any)."""
        with self.lock:
            self.seq += 1
            self.stats["requests"] += 1
            rec = {"seq": self.seq, "time": time.time(), "method": method, "path": path,
                   "headers": headers, "body": body, "status": None, "uuid": None}
            self.records.append(rec)
            rule = self.rules[0] if self.rules else {"mode": "ok", "count": None}
            if rule["count"] is not None:
                rule["count"] -= 1
                if rule["count"] <= 0:
                    self.rules.popleft()
            return rec, rule

    def finish(self, rec, status, uuid_given):
        with self.lock:
            rec["status"], rec["uuid"] = status, uuid_given

    def accept(self, table, key, entry):
        with self.lock:
            table[key] = entry
            self._bound(table)
        if self.auto and table is self.messages and entry["url"]:
            self.auto.start(key)

    # -- calls (the voice platform's side)

    def next_call_outcome(self):
        with self.lock:
            if not self.call_rules:
                return "answered"
            rule = self.call_rules[0]
            if rule["count"] is not None:
                rule["count"] -= 1
                if rule["count"] <= 0:
                    self.call_rules.popleft()
            return rule["call_outcome"]

    def _answer_params(self, call):
        return {"CallUUID": call["call_uuid"], "From": call["from"] or "", "To": call["to"] or "",
                "CallStatus": "in-progress", "Direction": "outbound",
                "ALegUUID": call["call_uuid"], "ALegRequestUUID": call["request_uuid"],
                "RequestUUID": call["request_uuid"], "Event": "StartApp",
                "BillRate": "0.00850", "ParentAuthID": self.auth_id,
                "SessionStart": _plivo_time(call["accepted_at"]), "CallerName": ""}

    def fetch_answer(self, call, url=None, mode="v3", nonce=None, tamper=None):
        """POST (or GET) a call's answer URL as Plivo does; the result, with what <Speak>
        said, the nonce and the parameters."""
        url = url or call["answer_url"]
        method = str(call.get("answer_method") or "POST").upper()
        if mode not in SIGNATURES:
            raise Refused(400, f"signature must be one of {', '.join(SIGNATURES)}")
        params = self._answer_params(call)
        headers = signed_headers(mode, method, url, params, self.auth_token, nonce)
        for k, v in (tamper or {}).items():      # after signing: the receiver must refuse
            if v is None:
                params.pop(k, None)
            else:
                params[str(k)] = str(v)
        res = self.replay({"url": url, "method": method, "params": params, "headers": headers})
        return {"status": res["status"], "body": res["body"], "error": res["error"],
                "speak": speak_of(res["body"]) if res["status"] == 200 else [],
                "nonce": headers.get("X-Plivo-Signature-V3-Nonce"), "params": params,
                "headers": headers, "url": url, "method": method, "at": time.time()}

    def _current(self, call):
        with self.lock:
            return self.calls.get(call["request_uuid"]) is call

    def run_call(self, call, answer_delay, hangup_delay):
        """A call's life after it was accepted: ring, maybe fetch the script, hang up."""
        status, cause, code, name, source, answered = CALL_OUTCOMES[call["outcome"]]
        machine = call["outcome"] == "machine"
        if machine and call.get("machine_detection") == "hangup":
            answered = False           # detected and hung up before any script
        time.sleep(answer_delay)
        if not self._current(call):
            return                     # forgotten by a reset
        answer = None
        if answered and call.get("answer_url"):
            answer = self.fetch_answer(call)
            with self.lock:
                call["answer"] = answer
        if machine and not answered:
            cause, code, name = "MACHINE_DETECTED", "3110", "Machine Detected"
        elif machine:
            cause, code, name, source = "NORMAL_CLEARING", "4000", "Normal Hangup", "Callee"
        time.sleep(hangup_delay)
        if not self._current(call) or not call.get("hangup_url"):
            return
        duration = str(max(1, round(hangup_delay))) if answered else "0"
        params = self._answer_params(call)
        now = _plivo_time(time.time())
        params.update({"CallStatus": status, "Event": "Hangup", "HangupCause": cause,
                       "HangupCauseCode": code, "HangupCauseName": name,
                       "HangupSource": source, "Duration": duration, "BillDuration": duration,
                       "StartTime": _plivo_time(call["accepted_at"]),
                       "AnswerTime": now if answered else "", "EndTime": now,
                       "TotalCost": "0.00850" if answered else "0.00000"})
        if machine:
            params["Machine"] = "true"
        method = str(call.get("hangup_method") or "POST").upper()
        headers = signed_headers("v3", method, call["hangup_url"], params, self.auth_token)
        res = self.replay({"url": call["hangup_url"], "method": method, "params": params,
                           "headers": headers})
        with self.lock:
            call["hangup"] = {"status": res["status"], "body": res["body"],
                              "error": res["error"], "params": params, "headers": headers,
                              "url": call["hangup_url"], "at": time.time()}

    # -- callbacks

    def send_callback(self, req):
        """Build, sign and send one message-status callback; LookupError if there is
        nowhere to send it."""
        message_uuid = str(req.get("message_uuid") or "")
        status = str(req.get("status") or "delivered")
        mode = req.get("signature") or "v3"
        if mode not in SIGNATURES:
            raise Refused(400, f"signature must be one of {', '.join(SIGNATURES)}")
        now = time.time()
        with self.lock:
            msg = self.messages.get(message_uuid)
            if req.get("sequence") is not None:
                sequence = int(req["sequence"])
            else:
                sequence = self.cb_sequence.get(message_uuid, 0) + 1
                self.cb_sequence[message_uuid] = sequence
                self._bound(self.cb_sequence)
        # An unknown uuid is allowed when the caller names the url: tests need callbacks
        # for messages this server never issued (forgeries, races).
        msg = msg or {"src": "", "dst": "", "text": "", "type": None, "url": None,
                      "method": None, "powerpack_uuid": None, "requester_ip": "",
                      "accepted_at": now}
        url = req.get("url") or msg["url"]
        if not url:
            raise LookupError(f"message {message_uuid!r} is unknown or has no url,"
                              " and no url was given")
        method = str(req.get("method") or msg["method"] or "POST").upper()
        failing = status in ("failed", "undelivered", "rejected")
        units, stamp = _units(msg["text"]), _plivo_time(now)
        params = {
            "MessageUUID": message_uuid, "From": msg["src"] or "", "To": msg["dst"],
            "Type": msg["type"] or "sms", "Status": status,
            "ErrorCode": str(req.get("error_code") or ("1000" if failing else "000")),
            "Units": str(units), "TotalRate": "0.00500", "TotalAmount": f"{0.005 * units:.5f}",
            "MCC": "310", "MNC": "260",      # placeholders; the extension only stores them
            "ParentMessageUUID": message_uuid, "PartInfo": "1 of 1", "Sequence": str(sequence),
            "MessageTime": _plivo_time(msg["accepted_at"]),
            "QueuedTime": _plivo_time(msg["accepted_at"]),
            "SentTime": stamp if status in ("sent", "delivered", "undelivered") else "",
            "DeliveryReportTime": stamp if status in ("delivered", "undelivered") else "",
            "requester_ip": msg["requester_ip"], "PowerpackUUID": msg["powerpack_uuid"] or "",
        }
        params.update({str(k): str(v) for k, v in (req.get("extra_params") or {}).items()})
        headers = signed_headers(mode, method, url, params, self.auth_token)
        # Tampering happens after signing, so the receiver must reject the result.
        for k, v in (req.get("tamper") or {}).items():
            if v is None:
                params.pop(k, None)
            else:
                params[str(k)] = str(v)
        return self.replay({"url": url, "method": method, "params": params,
                            "headers": headers, "timeout": req.get("timeout"),
                            "send_to": req.get("send_to")})

    def replay(self, req):
        url, method = req.get("url"), str(req.get("method") or "POST").upper()
        if not url:
            raise Refused(400, "url is required")
        params, headers = req.get("params") or {}, req.get("headers") or {}
        # send_to: connect elsewhere than the signed url says, as a reverse proxy
        # in front of the listener does (the signature still covers url).
        target = url
        if req.get("send_to"):
            parts = urlsplit(url)
            target = str(req["send_to"]).rstrip("/") + parts.path + (
                "?" + parts.query if parts.query else "")
        status, body, error = deliver(target, method, params, headers,
                                      float(req.get("timeout") or 8))
        with self.lock:
            self.stats["callbacks_sent"] += 1
            if status is None or not 200 <= status < 300:
                self.stats["callback_failures"] += 1
        if self.verbose:
            sys.stderr.write(f"callback {method} {url} -> {status or error}\n")  # one write
        return {"status": status, "body": body, "error": error, "url": url, "method": method,
                "params": params, "headers": headers}

    # -- control endpoints: each takes the parsed JSON body and the query, returns JSON

    def ctl_behave(self, body, query):
        """Append a rule {mode, count, retry_after, delay} to the FIFO, or a call rule
        {call_outcome, count} to the calls' FIFO."""
        if "call_outcome" in body:
            outcome, count = body["call_outcome"], body.get("count")
            if outcome not in CALL_OUTCOMES:
                raise Refused(400, f"call_outcome must be one of {', '.join(CALL_OUTCOMES)}")
            if count is not None and (type(count) is not int or count < 1):
                raise Refused(400, "count must be a positive integer or null")
            with self.lock:
                self.call_rules.append({"call_outcome": outcome, "count": count})
                return {"ok": True, "call_rules": len(self.call_rules)}
        mode = str(body.get("mode", ""))
        if mode not in MODES:
            raise Refused(400, f"mode must be one of {', '.join(sorted(MODES))}")
        count = body.get("count")
        if count is not None and (type(count) is not int or count < 1):
            raise Refused(400, "count must be a positive integer or null")
        delay = body.get("delay")
        if delay is not None and (not isinstance(delay, (int, float)) or delay < 0):
            raise Refused(400, "delay must be a non-negative number")
        rule = {"mode": mode, "count": count, "retry_after": body.get("retry_after"),
                "delay": 1.0 if mode == "slow" and delay is None else delay}
        if mode == "custom":
            status, raw = body.get("status"), body.get("body")
            if type(status) is not int or not 100 <= status <= 599 or not isinstance(raw, str):
                raise Refused(400, "custom needs an integer status and a string body")
            rule.update(status=status, body=raw)
        with self.lock:
            self.rules.append(rule)
            return {"ok": True, "rules": len(self.rules)}

    def ctl_reset(self, body, query):
        with self.lock:
            self.rules.clear()
            self.call_rules.clear()
            self._reset_data()      # queued auto-callbacks and calls then find nothing, stop
        return {"ok": True}

    def ctl_call_timing(self, body, query):
        with self.lock:
            for key, attr in (("answer_delay", "call_answer_delay"),
                              ("hangup_delay", "call_hangup_delay")):
                if key in body:
                    v = body[key]
                    if not isinstance(v, (int, float)) or v < 0:
                        raise Refused(400, f"{key} must be a non-negative number")
                    setattr(self, attr, float(v))
            return {"answer_delay": self.call_answer_delay,
                    "hangup_delay": self.call_hangup_delay}

    def ctl_call_fetch(self, body, query):
        with self.lock:
            call = self.calls.get(str(body.get("request_uuid") or ""))
        if call is None:
            raise LookupError(f"call {body.get('request_uuid')!r} is unknown")
        if not (body.get("url") or call.get("answer_url")):
            raise LookupError("the call has no answer_url, and no url was given")
        return self.fetch_answer(call, body.get("url"), body.get("signature") or "v3",
                                 body.get("nonce"), body.get("tamper"))

    def ctl_requests(self, body, query):
        try:
            since = int(query.get("since") or 0)
        except ValueError:
            raise Refused(400, "since must be an integer") from None
        with self.lock:   # copy under the lock: hang/slow handlers still update records
            found = [dict(r) for r in self.records if r["seq"] > since]
        for r in found:   # parsed here rather than stored, to keep records small
            try:
                r["json"] = json.loads(r["body"]) if r["body"] else None
            except ValueError:
                r["json"] = None
        return found

    def ctl_list(self, table):
        with self.lock:    # a copy: calls are updated by their threads meanwhile
            return copy.deepcopy(list(table.values()))

    def ctl_stats(self, body, query):
        with self.lock:
            counters = ("requests", "control_requests", "callbacks_sent", "callback_failures")
            return {**{k: self.stats[k] for k in counters}, "messages": len(self.messages),
                    "calls": len(self.calls), "rules": len(self.rules)}

    ROUTES = {("POST", "/_control/behave"): ctl_behave, ("POST", "/_control/reset"): ctl_reset,
              ("GET", "/_control/requests"): ctl_requests,
              ("GET", "/_control/messages"): lambda app, body, query: app.ctl_list(app.messages),
              ("GET", "/_control/calls"): lambda app, body, query: app.ctl_list(app.calls),
              ("GET", "/_control/stats"): ctl_stats,
              ("POST", "/_control/callback"): lambda app, body, query: app.send_callback(body),
              ("POST", "/_control/replay"): lambda app, body, query: app.replay(body),
              ("POST", "/_control/call_timing"): ctl_call_timing,
              ("POST", "/_control/call_fetch"): ctl_call_fetch}


# --------------------------------------------------------------------------------------
# HTTP handler

API_PATH = re.compile(r"^/v1/Account/([^/]+)/(Message|Call)/$")
NO_AUTH = {"error": "authentication credentials were not provided"}   # Plivo sends no api_id here


def _api_id():
    return str(uuid.uuid4())


def _require(body, *keys):
    for key in keys:
        if not isinstance(body.get(key), str) or not body[key]:
            raise Refused(400, f"{key} is required")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"          # keep-alive, like libcurl expects
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle plus the client's
    # delayed ACK would stall every keep-alive response by ~40 ms.
    disable_nagle_algorithm = True

    def version_string(self):
        return "plivo-standin"

    def log_message(self, fmt, *args):
        if self.server.app.verbose:
            super().log_message(fmt, *args)

    def _send_json(self, status, obj, headers=()):
        data = json.dumps(obj).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_raw(self, status, data):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self):
        # libcurl, curl and the Perl clients send Content-Length; chunked bodies are refused
        # (and the connection closed) rather than misread as the next request.
        length = self.headers.get("Content-Length") or "0"
        if "Transfer-Encoding" in self.headers or not length.isdigit():
            self.close_connection = True
            return self._send_json(400, {"api_id": _api_id(), "error": "need a Content-Length"})
        raw = self.rfile.read(int(length))
        parts = urlsplit(self.path)
        if parts.path.startswith("/_control/"):
            return self._control(parts, raw)
        return self._api(parts.path, raw.decode("utf-8", "replace"))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    # -- control

    def _control(self, parts, raw):
        app = self.server.app
        with app.lock:
            app.stats["control_requests"] += 1
        if not ipaddress.ip_address(self.client_address[0].removeprefix("::ffff:")).is_loopback:
            return self._send_json(403, {"error": "control API is for loopback clients only"})
        handler = App.ROUTES.get((self.command, parts.path))
        if handler is None:
            return self._send_json(404, {"error": "not found"})
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise Refused(400, "body must be a JSON object")
            result = handler(app, body, dict(parse_qsl(parts.query)))
        except (ValueError, TypeError) as e:       # includes json.JSONDecodeError
            return self._send_json(400, {"error": f"bad request: {e}"})
        except LookupError as e:      # a callback with nowhere to go
            return self._send_json(404, {"error": e.args[0]})
        except Refused as e:
            return self._send_json(e.args[0], {"error": e.args[1]})
        self._send_json(200, result)

    # -- Plivo API

    def _api(self, path, text):
        app = self.server.app
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        rec, rule = app.record(self.command, self.path, dict(self.headers.items()), text)
        mode, headers, given = rule["mode"], (), None
        if mode == "drop":
            self.close_connection = True        # handler exit closes the socket unanswered
            return
        if mode == "hang":
            return self._hang(rule.get("delay"))
        if mode == "slow":
            time.sleep(rule["delay"])
        if mode in ("429", "503") and rule.get("retry_after") is not None:
            headers = (("Retry-After", str(rule["retry_after"])),)
        if mode == "custom":
            app.finish(rec, rule["status"], None)
            return self._send_raw(rule["status"], rule["body"].encode("utf-8", "surrogateescape"))
        try:
            if mode not in ("ok", "slow"):
                dst = parsed.get("dst", "") if isinstance(parsed, dict) else ""
                raise Refused(int(mode), {"500": "internal error", "502": "bad gateway",
                                          "503": "service unavailable", "504": "gateway timeout",
                                          "429": "too many requests",
                                          "400": f"'{dst}' is not a valid phone number."}.get(mode))
            status, body, given = self._plivo(path, parsed)
        except Refused as e:
            status = e.args[0]
            body = NO_AUTH if status == 401 else {"api_id": _api_id(), "error": e.args[1]}
        # Finish the record before answering: once a client holds the response, the
        # record (and any accepted message) is visible through the control API.
        app.finish(rec, status, given)
        self._send_json(status, body, headers)

    def _hang(self, delay):
        """Never answer: wait until the client goes away or `delay` seconds pass."""
        self.close_connection = True
        deadline = None if delay is None else time.monotonic() + delay
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            try:
                readable, _, _ = select.select([self.connection], [], [], left)
                if readable and not self.connection.recv(65536):
                    return              # client closed
            except OSError:
                return

    def _plivo(self, path, body):
        """Plivo's own behaviour: (status, JSON body, uuid(s) given), or raises Refused."""
        app = self.server.app
        m = API_PATH.match(path)
        if not m or self.command != "POST":
            raise Refused(404, "not found")
        expected = "Basic " + base64.b64encode(
            f"{app.auth_id}:{app.auth_token}".encode("utf-8")).decode("ascii")
        given = self.headers.get("Authorization", "")
        if m.group(1) != app.auth_id or not hmac.compare_digest(given.encode(), expected.encode()):
            raise Refused(401, None)
        # Plivo accepts only JSON; libcurl defaults to a form content type, so check it.
        if self.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
            raise Refused(400, "Content-Type must be application/json")
        if not isinstance(body, dict):
            raise Refused(400, "request body must be a JSON object")
        return self._message(body) if m.group(2) == "Message" else self._call(body)

    def _message(self, body):
        _require(body, "dst", "text")
        if bool(body.get("src")) == bool(body.get("powerpack_uuid")):
            raise Refused(400, "specify exactly one of src and powerpack_uuid")
        if str(body.get("method") or "POST").upper() not in ("GET", "POST"):
            raise Refused(400, "method must be GET or POST")
        app, now, uuids = self.server.app, time.time(), []
        for dst in body["dst"].split("<"):     # one message (and uuid) per destination
            u = str(uuid.uuid4())
            uuids.append(u)
            app.accept(app.messages, u, {
                "message_uuid": u, "src": body.get("src"), "dst": dst, "text": body["text"],
                "url": body.get("url"), "method": body.get("method"),
                "message_expiry": body.get("message_expiry"), "log": body.get("log"),
                "type": body.get("type"), "powerpack_uuid": body.get("powerpack_uuid"),
                "requester_ip": self.client_address[0], "accepted_at": now})
        answer = {"api_id": _api_id(), "message": "message(s) queued", "message_uuid": uuids}
        return 202, answer, uuids[0] if len(uuids) == 1 else uuids

    def _call(self, body):
        _require(body, "from", "to", "answer_url")
        app, u = self.server.app, str(uuid.uuid4())
        kept = ("from", "to", "answer_url", "answer_method", "hangup_url", "hangup_method",
                "ring_url", "ring_method", "time_limit", "ring_timeout", "machine_detection")
        call = {"request_uuid": u, **{k: body.get(k) for k in kept},
                "accepted_at": time.time(), "call_uuid": str(uuid.uuid4()),
                "outcome": app.next_call_outcome(), "answer": None, "hangup": None}
        app.accept(app.calls, u, call)
        with app.lock:
            delays = (app.call_answer_delay, app.call_hangup_delay)
        # After the answer below has gone out (the dispatcher must know the request_uuid
        # first, as with Plivo, whose calls take seconds to ring).
        threading.Thread(target=app.run_call, args=(call, *delays), daemon=True).start()
        return 201, {"api_id": _api_id(), "message": "call fired", "request_uuid": u}, u


class Server(ThreadingHTTPServer):
    daemon_threads = True        # hung handlers must not keep the process alive
    block_on_close = False
    request_queue_size = 1024    # benchmarks open many connections at once

    def handle_error(self, request, client_address):
        # Clients vanishing mid-request (timeouts, wrk stopping) are normal here.
        if self.app.verbose or not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


# --------------------------------------------------------------------------------------
# Main


def parse_args(argv):
    p = argparse.ArgumentParser(description="Local stand-in for Plivo's REST API (tests only).")
    add = p.add_argument
    add("--self-test", action="store_true", help="check the signature functions against "
        "plivo-signature-vectors.json (beside this file) and exit")
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=0, help="0 picks a free port")
    add("--port-file", help="write the port here (atomically) once listening")
    add("--auth-id")
    add("--auth-token-file")
    add("--auto-callbacks", default="", help="statuses sent, in order, after each accepted "
        "message that has a url, e.g. queued,sent,delivered")
    add("--callback-signature", choices=("v3", "v2", "both", "none"), default="v3")
    add("--callback-interval", type=float, default=0.05,
        help="seconds before each auto-callback (default 0.05)")
    add("--max-records", type=int, default=100000, help="keep at most this many requests, "
        "messages and calls, dropping the oldest (0 = no limit; default 100000)")
    add("--call-answer-delay", type=float, default=0.2,
        help="seconds from accepting a call to fetching its answer_url (default 0.2)")
    add("--call-hangup-delay", type=float, default=0.2,
        help="seconds from the answer fetch to the hang-up callback (default 0.2)")
    add("--verbose", action="store_true", help="log requests and callbacks to stderr")
    args = p.parse_args(argv)
    if not args.self_test and not (args.auth_id and args.auth_token_file):
        p.error("--auth-id and --auth-token-file are required")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.self_test:
        return self_test()
    with open(args.auth_token_file, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:
        sys.exit("auth token file is empty")
    Server.address_family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    server = Server((args.host, args.port), Handler)
    server.app = App(args, token)

    def stop(signum, frame):
        # shutdown() waits for serve_forever() to return, so it cannot run on this thread;
        # called before serve_forever() starts, it makes it return at once.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = server.server_address[1]
    if args.port_file:      # temp name + rename: a reader never sees a partial file
        tmp = f"{args.port_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    if args.verbose:
        print(f"plivo-standin listening on {args.host}:{port}", file=sys.stderr)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if args.port_file:
            try:
                os.unlink(args.port_file)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
