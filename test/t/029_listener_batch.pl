# 029_listener_batch.pl: the V3-signed status callbacks that arrive within
# one turn of the listener's loop are recorded together (one statement for
# their nonces, one for their events, one to apply them) and answered after
# that one commit; a callback that makes the batch fail costs the others
# nothing: they are recorded one by one and answered 200, it alone gets a
# 500 with nothing recorded and its nonce still usable; a nonce twice in one
# batch counts once; every delivery state moves as it would one by one.
#
# To put requests in one batch, their connections are opened first, the
# listener is paused (SIGSTOP), every request is written, and the listener
# resumed: its next turn reads them all.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(usleep);

my $plivo = start_standin();
my ($node, $port) = listener_node('batch', $plivo);
my $listener = listener_pid($node);
like($listener, qr/^\d+$/, 'pg_stat_activity shows the listener');

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Accepted messages with Plivo UUIDs (finished codes: nothing else moves them).
my $count = 0;
sub accepted_message
{
	my $n = ++$count;
	my $uuid = "batch-uuid-$n";
	sql("WITH v AS (INSERT INTO plivo_otp.verifications (id, phone, purpose, channel,"
		  . " code_digest, state, max_attempts, created_at, expires_at, updated_at)"
		  . " VALUES (gen_random_uuid(), '+1415555" . sprintf('%04d', $n) . "', 'default', 'sms',"
		  . " sha256('$n'), 'approved', 5, now(), now() + interval '10 min', now()) RETURNING id)"
		  . " INSERT INTO plivo_otp.messages (id, verification_id, channel, phone, dispatch_state,"
		  . " provider_uuid, tries, next_try_at, expires_at, created_at, updated_at)"
		  . " SELECT gen_random_uuid(), id, 'sms', '+1415555" . sprintf('%04d', $n) . "', 'accepted',"
		  . " '$uuid', 1, now(), now() + interval '10 min', now(), now() FROM v");
	return $uuid;
}

# Write every request on its own connection while the listener is paused,
# so that its next turn takes them all; the responses, in order.
sub one_batch
{
	my @raw = @_;
	my @socks;
	for (@raw)
	{
		my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
			Proto => 'tcp', Timeout => 5) or die "connect: $!";
		$s->autoflush(1);
		push @socks, $s;
	}
	usleep(300_000);	# libmicrohttpd has accepted them
	kill 'STOP', $listener or die "cannot pause the listener: $!";
	syswrite($socks[$_], $raw[$_]) for 0 .. $#raw;
	usleep(100_000);
	kill 'CONT', $listener;
	my @res = map { read_response($_, 10) } @socks;
	close $_ for @socks;
	return @res;
}

sub state_of
{
	my ($uuid) = @_;
	return sql("SELECT coalesce(delivery_status, '') || '/' || coalesce(delivery_sequence, -1)"
		  . " FROM plivo_otp.messages WHERE provider_uuid = '$uuid'");
}

###########################################################################
# 1. A batch: every callback recorded, each message moved.

my @uuids = map { accepted_message() } 1 .. 6;
my @res = one_batch(map { signed_request($port, uuid => $_, status => 'delivered', sequence => 3)->{raw} }
	  @uuids);
is(join(' ', map { $_->{status} // 'none' } @res), '200 200 200 200 200 200',
	'six callbacks in one batch: each answered 200');
is(join(' ', map { state_of($_) } @uuids), join(' ', ('delivered/3') x 6),
	'each message shows its delivered status');
is(sql("SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid LIKE 'batch-uuid-%'"
	  . " AND applied_at IS NOT NULL"), 6, 'six applied events');

###########################################################################
# 2. One bad callback in a batch: the others are recorded, it gets a 500.

sql(q{CREATE FUNCTION public.refuse_bad_event() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF NEW.provider_uuid = 'batch-uuid-9' THEN
			RAISE EXCEPTION 'test trigger refuses the event of %', NEW.provider_uuid;
		END IF;
		RETURN NEW;
	END $$});
sql("CREATE TRIGGER refuse_bad_event BEFORE INSERT ON plivo_otp.delivery_events"
	  . " FOR EACH ROW EXECUTE FUNCTION public.refuse_bad_event()");
my @more = map { accepted_message() } 1 .. 5;	# batch-uuid-7 .. 11; 9 is the bad one
my @reqs = map { signed_request($port, uuid => $_, status => 'sent', sequence => 2) } @more;
my $log_offset = -s $node->logfile;
@res = one_batch(map { $_->{raw} } @reqs);
is(join(' ', map { $_->{status} // 'none' } @res), '200 200 500 200 200',
	'a batch with one callback that cannot be stored: the others 200, it 500');
is(join(' ', map { state_of($_) } @more), 'sent/2 sent/2 /-1 sent/2 sent/2',
	'the others moved their messages; the bad one changed nothing');
is(sql("SELECT count(*) FROM plivo_otp.callback_nonces WHERE nonce = '$reqs[2]{nonce}'"), 0,
	'the failed callback did not burn its nonce');
my $log = substr(slurp_file($node->logfile), $log_offset);
like($log, qr/test trigger refuses the event of batch-uuid-9\n(?:.*\n){0,4}?.*ROWS FROM/,
	'the batch statement failed (the five were in one batch)');
is(scalar(() = $log =~ /test trigger refuses the event/g), 2,
	'and then only the bad callback failed again, alone');

sql('DROP TRIGGER refuse_bad_event ON plivo_otp.delivery_events');
my $retry = http_send($port, $reqs[2]{raw});
is($retry->{status}, 200, "Plivo's retry of the failed callback, same nonce, is answered 200");
is(state_of($more[2]), 'sent/2', 'and recorded');

###########################################################################
# 3. Nonces within one batch: the same one twice counts once; a V2 nonce
#    seen before refuses its request (its V3 nonce is new), changing nothing.

my ($x, $y) = map { accepted_message() } 1 .. 2;
my $twice = signed_request($port, uuid => $x, status => 'delivered', sequence => 3);
my $other = signed_request($port, uuid => $y, status => 'queued', sequence => 1,
	nonce => $twice->{nonce});
my $v2_seen = signed_request($port, uuid => $y, status => 'delivered', sequence => 3, v2 => 1,
	v2_nonce => $reqs[0]{nonce});
@res = one_batch($twice->{raw}, $twice->{raw}, $other->{raw}, $v2_seen->{raw});
is(join(' ', map { $_->{status} // 'none' } @res), '200 403 403 403',
	'one nonce three times in a batch: the first 200, the rest 403; a V2 nonce seen before 403');
is(state_of($x) . ' ' . state_of($y), 'delivered/3 /-1', 'only the first one moved its message');
is(sql("SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid IN ('$x', '$y')"), 1,
	'one event stored');
is(sql("SELECT count(*) FROM plivo_otp.callback_nonces WHERE nonce = '$twice->{nonce}'"), 1,
	'the nonce recorded once');

###########################################################################
# 4. A batch applies as one by one would: within a batch the best status of
#    a message wins, and a duplicate of a stored event is answered 200.

my $z = accepted_message();
@res = one_batch(
	signed_request($port, uuid => $z, status => 'sent', sequence => 2)->{raw},
	signed_request($port, uuid => $z, status => 'delivered', sequence => 3)->{raw},
	signed_request($port, uuid => $z, status => 'queued', sequence => 1)->{raw},
	signed_request($port, uuid => $uuids[0], status => 'delivered', sequence => 3)->{raw});
is(join(' ', map { $_->{status} // 'none' } @res), '200 200 200 200',
	'three statuses of one message and a duplicate event: all 200');
is(state_of($z), 'delivered/3', 'the message shows the furthest status');
is(sql("SELECT string_agg(status, ' ' ORDER BY id) FROM plivo_otp.delivery_events"
	  . " WHERE provider_uuid = '$z'"), 'sent delivered queued', 'each event stored, in arrival order');
is(sql("SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid = '$uuids[0]'"), 1,
	'the duplicate stored nothing');

done_testing();
