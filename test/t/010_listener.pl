# 010_listener.pl: the webhook listener turns Plivo's signed message-status
# callbacks into delivery states (queued -> sent -> delivered; undelivered
# with Plivo's error and its meaning); refuses forged, unsigned, altered,
# replayed and downgraded callbacks with 403 and changes nothing; never moves
# a state backwards; keeps a callback that beats the dispatcher's commit of
# the UUID and applies it afterwards; answers 200 only once the event has
# committed (and 5xx, without burning the nonce, when it could not); checks
# signatures against plivo_otp.public_url, reloaded on SIGHUP, not against
# the address it listens on.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;

my $plivo = start_standin();
my ($node, $port) = listener_node('listener', $plivo);
my $local_url = "http://127.0.0.1:$port/plivo/sms-status";

my $listener = listener_pid($node);
like($listener, qr/^\d+$/, 'pg_stat_activity shows the listener');

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Send a code and wait until Plivo (the stand-in) accepted it and the
# dispatcher recorded its UUID.  Returns (verification id, Plivo's UUID).
my $phones = 0;
sub send_code
{
	my $phone = phone_n(100 + ++$phones);
	my $vid = sql("SELECT plivo_otp.otp_send('$phone')");
	wait_until(10, sub {
		sql("SELECT dispatch_state FROM plivo_otp.otp_status('$vid')") eq 'accepted' })
	  or die "the message to $phone was not accepted";
	my ($msg) = @{ $plivo->messages_to($phone) };
	return ($vid, $msg->{message_uuid});
}

# The path of the callback URL of a code's message (its own, ending with its id).
sub path_of
{
	my ($vid) = @_;
	return '/plivo/sms-status/'
	  . sql("SELECT id FROM plivo_otp.messages WHERE verification_id = '$vid'");
}

# delivery_status|error_code|error_text|dispatch_state of a code's message.
sub status_of
{
	my ($vid) = @_;
	return sql("SELECT concat_ws('|', coalesce(delivery_status, ''), coalesce(error_code, ''),"
		  . " coalesce(error_text, ''), dispatch_state) FROM plivo_otp.otp_status('$vid')");
}

# Everything a callback can change: events, nonces, every message's state.
sub snapshot
{
	return sql(q{SELECT (SELECT count(*) FROM plivo_otp.delivery_events) || ' events, '
		|| (SELECT count(*) FROM plivo_otp.callback_nonces) || ' nonces, '
		|| (SELECT string_agg(concat_ws(':', provider_uuid, delivery_status, delivery_sequence,
				error_code), ', ' ORDER BY provider_uuid) FROM plivo_otp.messages)});
}

# A callback the listener must refuse: 403 and nothing changes.
sub refused
{
	my ($what, $send) = @_;
	my $before = snapshot();
	my $r = $send->();
	is($r->{status}, 403, "$what: answered 403")
	  or diag explain $r;
	is(snapshot(), $before, "$what: nothing recorded, no state moved");
	return $r;
}

###########################################################################
# 1. Signed callbacks move an accepted message through Plivo's states.

my ($vid_a, $uuid_a) = send_code();
is(status_of($vid_a), '|||accepted', 'an accepted message has no delivery status yet');
for my $st (qw(queued sent delivered))
{
	my $r = $plivo->callback(message_uuid => $uuid_a, status => $st);
	is($r->{status}, 200, "V3-signed '$st' callback answered 200");
	# No waiting: the 200 comes only after the event committed.
	is(status_of($vid_a), "$st|||accepted", "otp_status shows '$st' as soon as it was answered");
}
is(sql("SELECT string_agg(status || '/' || sequence || '/' || (applied_at IS NOT NULL), ' '"
	  . " ORDER BY id) FROM plivo_otp.delivery_events WHERE provider_uuid = '$uuid_a'"),
	'queued/1/true sent/2/true delivered/3/true', 'each callback is one applied delivery event');
is(sql("SELECT params->>'To' || ' ' || (params->>'Units') FROM plivo_otp.delivery_events"
	  . " WHERE provider_uuid = '$uuid_a' AND status = 'delivered'"),
	'14155550101 1', "the event keeps the callback's parameters");

# V2 alone (what Plivo's messaging docs describe) is accepted too; an
# undelivered message shows Plivo's ErrorCode and what it means.
my ($vid_b, $uuid_b) = send_code();
my $r = $plivo->callback(message_uuid => $uuid_b, status => 'sent', signature => 'v2');
is($r->{status}, 200, "a V2-only 'sent' callback is answered 200");
$r = $plivo->callback(message_uuid => $uuid_b, status => 'undelivered', error_code => 30,
	signature => 'v2');
is($r->{status}, 200, "a V2-only 'undelivered' callback is answered 200");
is(status_of($vid_b), 'undelivered|30|spam detected by the carrier|accepted',
	'undelivered with ErrorCode 30: error_code 30 and its meaning in error_text');

# GET callbacks (method=GET in the send request) carry the parameters in the
# query; both signature families at once are what Plivo usually sends; the
# main-account header (Ma-V3) counts like V3.
my ($vid_c, $uuid_c) = send_code();
$r = $plivo->callback(message_uuid => $uuid_c, status => 'queued', method => 'GET');
is($r->{status}, 200, 'a V3-signed GET callback is answered 200');
is(status_of($vid_c), 'queued|||accepted', 'and applied');
$r = $plivo->callback(message_uuid => $uuid_c, status => 'sent', signature => 'both');
is($r->{status}, 200, 'a callback signed with both V2 and V3 is answered 200');
$r = signed_callback($port, uuid => $uuid_c, status => 'delivered', sequence => 3,
	v3_header => 'X-Plivo-Signature-Ma-V3');
is($r->{status}, 200, 'a callback signed in X-Plivo-Signature-Ma-V3 is answered 200');
is(status_of($vid_c), 'delivered|||accepted', 'and applied');

###########################################################################
# 2. Forged, unsigned, altered, replayed and downgraded callbacks: 403.

refused('a signature made with another token',
	sub { $plivo->callback(message_uuid => $uuid_a, status => 'failed', signature => 'bad') });
refused('no signature at all',
	sub { $plivo->callback(message_uuid => $uuid_a, status => 'failed', signature => 'none') });
refused('a body altered after V3 signing (Status)',
	sub { $plivo->callback(message_uuid => $uuid_a, status => 'delivered', sequence => 7,
		tamper => { Status => 'undelivered', ErrorCode => '30' }) });
refused('a body altered after V3 signing (MessageUUID pointed at another message)',
	sub { $plivo->callback(message_uuid => $uuid_a, status => 'failed', sequence => 8,
		tamper => { MessageUUID => $uuid_c }) });
# No downgrade: when V3 is there it must verify; a valid V2 beside it
# (which does not cover the body) does not rescue it.
refused('V2 valid but V3 no longer matching the altered body',
	sub { $plivo->callback(message_uuid => $uuid_a, status => 'delivered', sequence => 9,
		signature => 'both', tamper => { Status => 'failed' }) });
refused('V2 valid but V3 signed with another token (body unaltered)',
	sub { signed_callback($port, uuid => $uuid_a, status => 'sent', sequence => 10,
		path => path_of($vid_a), v3_token => 'wrong-token', v2 => 1) });
# (The same V2 signature alone is good, so the 403 above is V3's doing.)
$r = signed_callback($port, uuid => $uuid_a, status => 'sent', sequence => 10,
	path => path_of($vid_a), v3 => 0, v2 => 1);
is($r->{status}, 200, 'control: the same V2 signing alone is accepted');

# A replay: the very same request again, same nonce.
my ($vid_d, $uuid_d) = send_code();
my $first = $plivo->callback(message_uuid => $uuid_d, status => 'sent');
is($first->{status}, 200, 'a callback is accepted once');
refused('the same request replayed (same nonce)', sub { $plivo->replay($first) });
$first = $plivo->callback(message_uuid => $uuid_d, status => 'delivered', signature => 'v2');
is($first->{status}, 200, 'a V2-only callback is accepted once');
refused('the same V2-only request replayed (same nonce)', sub { $plivo->replay($first) });
is(status_of($vid_d), 'delivered|||accepted', 'the replays changed nothing');

# A replay downgraded to V2: Plivo sent V2 and V3 headers; whoever saw that
# request strips the V3 headers and sends the V2 ones again, with a body of
# their choosing (V2 does not cover the body).  The V2 nonce was part of a
# request already accepted, so this is a replay and must change nothing.
$first = $plivo->callback(message_uuid => $uuid_d, status => 'delivered', sequence => 5,
	signature => 'both');
is($first->{status}, 200, 'a callback signed with V2 and V3 is accepted');
my %v2_only = map { $_ => $first->{headers}{$_} } grep { !/V3/ } keys %{ $first->{headers} };
refused('that request replayed with the V3 headers stripped and the body rewritten',
	sub { $plivo->replay({ %$first, headers => \%v2_only,
		params => { %{ $first->{params} }, Status => 'failed', ErrorCode => '30', Sequence => '99' } }) });
is(status_of($vid_d), 'delivered|||accepted', 'the downgraded replay changed nothing');

###########################################################################
# 3. Out of order and duplicates: states only move forward.

my ($vid_e, $uuid_e) = send_code();
is($plivo->callback(message_uuid => $uuid_e, status => 'delivered', sequence => 5)->{status}, 200,
	"'delivered' (Sequence 5) accepted");
for ([ sent => 3 ], [ queued => 1 ], [ undelivered => 4 ])
{
	my ($st, $seq) = @$_;
	is($plivo->callback(message_uuid => $uuid_e, status => $st, sequence => $seq)->{status}, 200,
		"a late '$st' (Sequence $seq) is answered 200 (Plivo must not retry it)");
	is(status_of($vid_e), 'delivered|||accepted', "... and does not move 'delivered' back");
}
is(callback_count($node, $uuid_e), 4, 'the late events are kept as received');
my $before = snapshot();
$r = $plivo->callback(message_uuid => $uuid_e, status => 'delivered', sequence => 5);
is($r->{status}, 200, 'the same event again under a new nonce is answered 200');
is(snapshot() =~ s/ \d+ nonces//r, $before =~ s/ \d+ nonces//r,
	'... and changes nothing (no new event, same state)');
# One final status replaces another only with a higher Sequence.
$r = $plivo->callback(message_uuid => $uuid_e, status => 'undelivered', sequence => 6,
	error_code => 80);
is($r->{status}, 200, "a later final status (Sequence 6) is accepted");
is(status_of($vid_e),
	'undelivered|80|destination temporarily unavailable (handset off or out of coverage)|accepted',
	'... and replaces the earlier final status');

###########################################################################
# 4. A callback that beats the dispatcher's commit of the UUID is kept and
# applied once the UUID is recorded.  Plivo answers slowly; meanwhile a row
# lock holds the dispatcher's recording of the UUID, so the callback for
# the just-accepted message arrives while its UUID is still uncommitted.

$plivo->behave(mode => 'slow', delay => 2, count => 1);
my $race_phone = phone_n(150);
my $vid_r = sql("SELECT plivo_otp.otp_send('$race_phone')");
ok(wait_until(5, sub { (message_row($node, $vid_r)->{dispatch_state} // '') eq 'sending' }),
	'the dispatcher claimed the message and is waiting on Plivo');
my $locker = $node->background_psql('postgres');
$locker->query_safe(
	"BEGIN; SELECT id FROM plivo_otp.messages WHERE verification_id = '$vid_r' FOR UPDATE");
ok(wait_until(10, sub { @{ $plivo->messages_to($race_phone) } == 1 }), 'Plivo accepted it');
# (The dispatcher does not wait on the lock: the outcome waits, retried.)
ok(wait_until(10, sub { dispatcher_stats($node)->{in_flight} == 0
	  && message_row($node, $vid_r)->{dispatch_state} eq 'sending' }),
	'the dispatcher is held before committing the UUID');
my $uuid_r = $plivo->messages_to($race_phone)->[0]{message_uuid};
$r = $plivo->callback(message_uuid => $uuid_r, status => 'delivered');
is($r->{status}, 200, 'a callback for the not yet recorded UUID is answered 200, not 403');
is(sql("SELECT coalesce(provider_uuid, 'none') || ' ' || coalesce(delivery_status, 'none')"
	  . " FROM plivo_otp.messages WHERE verification_id = '$vid_r'"),
	'none none', 'the message does not know its UUID yet');
is(sql("SELECT status || ' ' || (applied_at IS NULL) FROM plivo_otp.delivery_events"
	  . " WHERE provider_uuid = '$uuid_r'"),
	'delivered true', 'the event is kept, waiting');
$locker->query_safe('ROLLBACK');
$locker->quit;
ok(wait_until(2, sub { status_of($vid_r) eq 'delivered|||accepted' }),
	'once the dispatcher commits the UUID the waiting event applies (within 2 s)')
  or diag status_of($vid_r);
is(sql("SELECT applied_at IS NOT NULL FROM plivo_otp.delivery_events WHERE provider_uuid = '$uuid_r'"),
	't', 'the event is marked applied');

###########################################################################
# 5. 200 only after commit; otherwise 5xx, and Plivo's retry (same request,
# same nonce) is accepted later.

# A burst of concurrent callbacks: each 200 is visible at once to a new
# connection.
my @conns;
for my $i (1 .. 20)
{
	my $req = signed_request($port, uuid => "burst-$i", status => 'sent');
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
	  or die "connect: $!";
	syswrite($s, $req->{raw});
	push @conns, [ $s, $req ];
}
my ($answered, $visible) = (0, 0);
for my $c (@conns)
{
	my $res = read_response($c->[0], 10);
	next unless ($res->{status} // 0) == 200;
	$answered++;
	my $uuid = $c->[1]{pairs}[0][1];
	$visible++
	  if sql("SELECT (SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid = '$uuid')"
		  . " + (SELECT count(*) FROM plivo_otp.callback_nonces WHERE nonce = '$c->[1]{nonce}')") == 2;
	close $c->[0];
}
is($answered, 20, 'twenty concurrent callbacks are all answered 200');
is($visible, 20, 'each one is visible to a new connection right after its 200');

# The queue table locked (DROP EXTENSION or a long DDL in progress): the
# listener cannot record, so it answers 503 and records nothing.
my $req = signed_request($port, uuid => 'retry-1', status => 'delivered');
$locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE plivo_otp.messages IN ACCESS EXCLUSIVE MODE');
$r = http_send($port, $req->{raw});
is($r->{status}, 503, 'a callback that cannot be recorded now is answered 503');
$locker->query_safe('COMMIT');
$locker->quit;
is(callback_count($node, 'retry-1'), 0, '... and nothing was recorded');
is(sql("SELECT count(*) FROM plivo_otp.callback_nonces WHERE nonce = '$req->{nonce}'"), 0,
	'... not even its nonce');
$r = http_send($port, $req->{raw});
is($r->{status}, 200, "Plivo's retry (same request, same nonce) is accepted afterwards");
is(callback_count($node, 'retry-1'), 1, '... and recorded');

# One callback whose row cannot be stored (a failing trigger stands in for
# any error) gets a 5xx, without failing the others recorded with it and
# without burning its nonce.
sql(q{CREATE FUNCTION public.poison() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN IF NEW.provider_uuid LIKE 'poison%' THEN RAISE EXCEPTION 'poisoned'; END IF;
	RETURN NEW; END $$;
	CREATE TRIGGER poison BEFORE INSERT ON plivo_otp.delivery_events
	FOR EACH ROW EXECUTE FUNCTION public.poison()});
my @batch = map { signed_request($port, uuid => $_, status => 'sent') }
  ('poison-1', map { "batch-$_" } 1 .. 8);
@conns = map {
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
	  or die "connect: $!";
	$s;
} @batch;
syswrite($conns[$_], $batch[$_]{raw}) for 0 .. $#batch;
my @codes = map { read_response($_, 10)->{status} // 'none' } @conns;
close $_ for @conns;
like($codes[0], qr/^5\d\d$/, 'the callback that cannot be stored gets a 5xx');
is("@codes[1 .. 8]", join(' ', (200) x 8), 'the callbacks arriving with it get 200');
is(sql("SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid LIKE 'batch-%'"), 8,
	'... and are recorded');
is(sql("SELECT count(*) FROM plivo_otp.callback_nonces WHERE nonce = '$batch[0]{nonce}'"), 0,
	'the failed one did not burn its nonce');
sql('DROP TRIGGER poison ON plivo_otp.delivery_events');
is(http_send($port, $batch[0]{raw})->{status}, 200, "its retry is accepted once the fault is gone");

###########################################################################
# 6. The signed URL is plivo_otp.public_url + the path, reloaded on SIGHUP:
# behind a reverse proxy (Plivo calls https://otp.example.com/..., the
# proxy connects to the listener) callbacks for the public URL count, and
# callbacks signed for the listener's own address no longer do.

$node->append_conf('postgresql.conf', "plivo_otp.public_url = 'https://otp.example.com/'\n");
$node->reload;
my $probe = 0;
ok(wait_until(10, sub {
	(signed_callback($port, uuid => 'reload-probe-' . ++$probe, status => 'sent',
		url => "https://otp.example.com/plivo/sms-status")->{status} // 0) == 200 }),
	'after a reload, callbacks signed for the new public URL are accepted');
is(listener_pid($node), $listener, 'the listener reloaded without restarting');

my ($vid_p, $uuid_p) = send_code();
is($plivo->messages_to(phone_n(100 + $phones))->[0]{url},
	'https://otp.example.com' . path_of($vid_p),
	"Plivo is given the message's own callback URL under the public URL");
$r = $plivo->callback(message_uuid => $uuid_p, status => 'delivered',
	send_to => "http://127.0.0.1:$port");
is($r->{status}, 200, 'a callback through the reverse proxy, signed for the public URL, is accepted');
is(status_of($vid_p), 'delivered|||accepted', '... and applied');
refused('a callback signed for the old public URL (the listening address)',
	sub { $plivo->callback(message_uuid => $uuid_p, status => 'failed', sequence => 9,
		url => $local_url) });
refused('a callback signed for http:// instead of https://',
	sub { $plivo->callback(message_uuid => $uuid_p, status => 'failed', sequence => 9,
		url => 'http://otp.example.com/plivo/sms-status', send_to => "http://127.0.0.1:$port") });
refused('a callback signed for another host',
	sub { $plivo->callback(message_uuid => $uuid_p, status => 'failed', sequence => 9,
		url => 'https://evil.example.com/plivo/sms-status', send_to => "http://127.0.0.1:$port") });

is(listener_pid($node), $listener, 'the listener ran throughout as one process');
$node->stop;
done_testing();
