#!/usr/bin/python3
"""test/listen_events.py: LISTEN plivo_otp_events and append each payload, one a line, to a
file, until SIGTERM.  Used by the TAP tests (test/t/031_events.pl): a separate session, as
an application's listener would be.  The line "listening" is written once LISTEN is in
effect.  Usage: listen_events.py CONNINFO OUTFILE"""
import select
import signal
import sys

import psycopg


def main():
    conninfo, outfile = sys.argv[1], sys.argv[2]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    with psycopg.connect(conninfo, autocommit=True) as conn, open(outfile, "a") as out:
        conn.add_notify_handler(lambda n: (out.write(n.payload + "\n"), out.flush()))
        conn.execute("LISTEN plivo_otp_events")
        out.write("listening\n")
        out.flush()
        while not stop:
            if select.select([conn.fileno()], [], [], 0.2)[0]:
                conn.execute("SELECT 1")    # reads what arrived; the handler gets each event


if __name__ == "__main__":
    main()
