#!/usr/bin/python3
"""examples/app_psycopg.py: an application's login flow with psycopg 3 (Debian's
python3-psycopg): issue a code with plivo_otp.otp_send, wait on LISTEN plivo_otp_events
until the SMS is delivered (or fails), ask the user for the code they received, and check it
with plivo_otp.otp_check.

    app_psycopg.py CONNINFO PHONE [--purpose login] [--timeout 60]

The code reaches only the user's phone: the database keeps a digest of it, so the example
cannot know it.  It prints "enter the code:" once the SMS is delivered and reads the code
from standard input, as a login form would take it from the user.  (test/t/030_app_example.pl
plays the user: it reads the SMS text the Plivo stand-in received and types the code in.)

It exits 0 when the code is approved, 1 when it is not (incorrect, expired, ...), 2 when
the SMS could not be delivered or no event came in time.  The role needs the API grants the
README shows (otp_send, otp_check); LISTEN needs no grant.
"""
import argparse
import json
import select
import sys
import time

import psycopg

# The events that end the wait for a delivery (api/events.c has the full list).
DELIVERED = {"message_delivered"}
NOT_DELIVERED = {"message_failed", "message_refused", "message_expired", "message_unknown",
                 "message_canceled", "code_expired", "code_canceled", "code_locked"}


def wait_for_delivery(conn, events, verification_id, timeout):
    """Wait until an event for verification_id says the code was delivered or cannot be;
    returns that event (a dict), or None after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for event in events:
            if event["verification_id"] != verification_id:
                continue            # another login's event: this session sees them all
            print(f"event: {event['event']} ({event['state']})", flush=True)
            if event["event"] in DELIVERED | NOT_DELIVERED:
                return event
        events.clear()
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        # Notifications arrive on the socket; any statement reads them, and psycopg hands
        # each to the handler added below.
        if select.select([conn.fileno()], [], [], left)[0]:
            conn.execute("SELECT 1")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("conninfo")
    parser.add_argument("phone")
    parser.add_argument("--purpose", default="login")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()

    # One session listens (autocommit: LISTEN takes effect at once), one does the work.
    listener = psycopg.connect(args.conninfo, autocommit=True)
    events = []
    listener.add_notify_handler(lambda n: events.append(json.loads(n.payload)))
    # LISTEN before the send commits, or the first events could be missed.
    listener.execute("LISTEN plivo_otp_events")

    with psycopg.connect(args.conninfo) as app:
        # The SMS leaves only if this transaction commits (the with block commits it).
        with app.transaction():
            verification_id = str(app.execute(
                "SELECT plivo_otp.otp_send(%s, 'sms', %s)", (args.phone, args.purpose)).fetchone()[0])
        print(f"code sent: verification {verification_id}", flush=True)

        event = wait_for_delivery(listener, events, verification_id, args.timeout)
        if event is None:
            print("no delivery event in time", flush=True)
            return 2
        if event["event"] not in DELIVERED:
            print(f"not delivered: {event['event']}; offer a call (otp_resend(id, 'voice'))",
                  flush=True)
            return 2

        print("enter the code:", flush=True)
        code = sys.stdin.readline().strip()
        # A bind parameter: the code is not in the statement text (pg_stat_activity, logs).
        with app.transaction():
            result = app.execute("SELECT plivo_otp.otp_check(%s, %s, %s)",
                                 (args.phone, code, args.purpose)).fetchone()[0]
        print(f"otp_check: {result}", flush=True)
        return 0 if result == "approved" else 1


if __name__ == "__main__":
    sys.exit(main())
