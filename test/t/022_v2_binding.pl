# 022_v2_binding.pl: each message gets its own callback URL,
# {public_url}/plivo/sms-status/{message id}, and a V2 signature (which
# covers only the URL and the nonce) counts only for the message that URL
# names: a V2-signed callback for message A's URL carrying message B's
# MessageUUID is refused (403) and changes nothing, in the listener and in
# ingest_callback(); the genuine V2 callback for A is recorded; V2 on the
# bare URL is refused; V3 works on both URL forms; an early V2 callback
# (before the dispatcher committed the UUID) is held for its message and
# applied only to it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;

my $plivo = start_standin();
my ($node, $port) = listener_node('v2bind', $plivo);
my $public = "http://127.0.0.1:$port";
my $uuid_re = qr/[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/;

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Send a code; (verification id, message id, Plivo's UUID, phone) once the
# dispatcher recorded the UUID.
my $phones = 0;
sub send_code
{
	my $phone = phone_n(2200 + ++$phones);
	my $vid = sql("SELECT plivo_otp.otp_send('$phone')");
	wait_until(10, sub {
		sql("SELECT dispatch_state FROM plivo_otp.otp_status('$vid')") eq 'accepted' })
	  or die "the message to $phone was not accepted";
	my $mid = sql("SELECT id FROM plivo_otp.messages WHERE verification_id = '$vid'");
	return ($vid, $mid, $plivo->messages_to($phone)->[0]{message_uuid}, $phone);
}

sub status_of
{
	my ($vid) = @_;
	return sql("SELECT coalesce(delivery_status, '') || '|' || coalesce(error_code, '')"
		  . " FROM plivo_otp.otp_status('$vid')");
}

# Everything a callback can change: events, nonces, every message's state.
sub snapshot
{
	return sql(q{SELECT (SELECT count(*) FROM plivo_otp.delivery_events) || ' events, '
		|| (SELECT count(*) FROM plivo_otp.callback_nonces) || ' nonces, '
		|| (SELECT string_agg(concat_ws(':', provider_uuid, delivery_status, delivery_sequence,
				error_code), ', ' ORDER BY provider_uuid) FROM plivo_otp.messages)});
}

# A callback that must be refused with $status (403) and change nothing.
sub refused
{
	my ($what, $send, $status) = @_;
	my $before = snapshot();
	my $r = $send->();
	is($r->{status}, $status // 403, "$what: answered " . ($status // 403))
	  or diag explain $r;
	is(snapshot(), $before, "$what: nothing recorded (no event, no nonce), no state moved");
	return $r;
}

###########################################################################
# 1. The request shape: Plivo is given the message's own URL, and the
# stand-in calls back exactly that URL.

my ($vid_a, $mid_a, $uuid_a, $phone_a) = send_code();
my $url_a = "$public/plivo/sms-status/$mid_a";
like($mid_a, qr/^$uuid_re$/, 'the message id is a time-ordered (v7) UUID');
my ($req) = @{ $plivo->requests_to($phone_a) };
is($req->{json}{url}, $url_a, 'the Send Message request carries url = public_url/plivo/sms-status/{message id}');
is($req->{json}{method}, 'POST', '... and method POST');

my $genuine = $plivo->callback(message_uuid => $uuid_a, status => 'queued', signature => 'v2');
is($genuine->{url}, $url_a, "the stand-in calls back the message's own URL, path suffix included");
is($genuine->{status}, 200, 'the genuine V2-only callback for A is answered 200');
is(status_of($vid_a), 'queued|', '... and recorded');

###########################################################################
# 2. V2 for A's URL carrying B's MessageUUID: 403, nothing changes.

my ($vid_b, $mid_b, $uuid_b) = send_code();
is($plivo->callback(message_uuid => $uuid_b, status => 'sent')->{status}, 200,
	"V3 on B's own URL: 200");
is(status_of($vid_b), 'sent|', '... and applied');

refused("a V2 signature for A's URL (never presented to us) with B's MessageUUID",
	sub { $plivo->callback(message_uuid => $uuid_b, status => 'failed', sequence => 9,
		error_code => 30, url => $url_a, signature => 'v2') });
# A genuine V2 callback for A, captured before it reached us, its body
# rewritten to name B.
my $forged = refused("a captured V2 callback for A rewritten to name B",
	sub { $plivo->callback(message_uuid => $uuid_a, status => 'sent', signature => 'v2',
		tamper => { MessageUUID => $uuid_b, ParentMessageUUID => $uuid_b,
			Status => 'failed', ErrorCode => '30', Sequence => '99' }) });
like($forged->{body}, qr/another message/, '... saying it is for another message');
is(status_of($vid_b), 'sent|', "B's state did not move");
# The refusal burnt nothing: the same request with its own body still counts.
my %own_body = (%{ $forged->{params} }, MessageUUID => $uuid_a, ParentMessageUUID => $uuid_a,
	Status => 'sent', ErrorCode => '000', Sequence => '2');
is($plivo->replay({ %$forged, params => \%own_body })->{status}, 200,
	'the captured request with its own body (same nonce) is accepted for A');
is(status_of($vid_a), 'sent|', '... and recorded for A');

refused('V2 on the bare URL (names no message)',
	sub { signed_callback($port, uuid => $uuid_a, status => 'delivered', sequence => 3,
		v3 => 0, v2 => 1) });
refused('V2 on a URL naming no message of ours',
	sub { signed_callback($port, uuid => $uuid_a, status => 'delivered', sequence => 3,
		path => '/plivo/sms-status/00000000-0000-4000-8000-000000000000', v3 => 0, v2 => 1) });
refused('a token not in canonical form', sub { signed_callback($port, uuid => $uuid_a,
	status => 'delivered', path => '/plivo/sms-status/' . uc($mid_a), v3 => 0, v2 => 1) }, 404);
refused('a path below the token', sub { signed_callback($port, uuid => $uuid_a,
	status => 'delivered', path => "/plivo/sms-status/$mid_a/x", v3 => 0, v2 => 1) }, 404);

###########################################################################
# 3. V3 on both URL forms (the bare one serves messages sent before
# per-message URLs).

is($plivo->callback(message_uuid => $uuid_a, status => 'delivered', sequence => 3)->{status}, 200,
	"V3 on A's own URL: 200");
is(status_of($vid_a), 'delivered|', '... and applied');
is(signed_callback($port, uuid => $uuid_b, status => 'delivered', sequence => 3)->{status}, 200,
	'V3 on the bare URL: 200');
is(status_of($vid_b), 'delivered|', '... and applied');
refused('V3 on the bare URL, body altered after signing',
	sub { $plivo->callback(message_uuid => $uuid_b, status => 'delivered', sequence => 4,
		url => "$public/plivo/sms-status", tamper => { Status => 'failed' }) });

###########################################################################
# 4. ingest_callback() applies the same rule from the URL it is given.

sub ingest
{
	my ($url, $params, %o) = @_;
	my $nonce = new_nonce();
	my @pairs = map { [ $_, $params->{$_} ] } sort keys %$params;
	my %h = $o{v3}
	  ? ('X-Plivo-Signature-V3' => sign_v3('POST', $url, \@pairs, $nonce),
		'X-Plivo-Signature-V3-Nonce' => $nonce)
	  : ('X-Plivo-Signature-V2' => sign_v2($url, $nonce), 'X-Plivo-Signature-V2-Nonce' => $nonce);
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT plivo_otp.ingest_callback('POST', '$url', \$j\$" . encode_json($params)
		  . "\$j\$, \$j\$" . encode_json(\%h) . "\$j\$)");
	return $rc == 0 ? $out : $err;
}
my $before = snapshot();
like(ingest($url_a, { MessageUUID => $uuid_b, Status => 'failed', Sequence => '20' }),
	qr/callback is for another message than its URL/,
	"ingest_callback: V2 for A's URL carrying B's MessageUUID is refused (28000)");
like(ingest("$public/plivo/sms-status", { MessageUUID => $uuid_b, Status => 'failed',
	Sequence => '20' }), qr/callback signature does not name a message/,
	'ingest_callback: V2 on the bare URL is refused');
is(snapshot(), $before, '... and neither records anything');
is(ingest($url_a, { MessageUUID => $uuid_a, Status => 'undelivered', Sequence => '5',
	ErrorCode => '30' }), 'recorded', "ingest_callback: V2 for A's own URL and UUID: recorded");
is(status_of($vid_a), 'undelivered|30', '... and applied');
is(ingest("$public/plivo/sms-status/$mid_b", { MessageUUID => $uuid_b, Status => 'undelivered',
	Sequence => '6', ErrorCode => '80' }, v3 => 1), 'recorded', "ingest_callback: V3 on B's URL");
is(ingest("$public/plivo/sms-status", { MessageUUID => $uuid_b, Status => 'undelivered',
	Sequence => '7', ErrorCode => '20' }, v3 => 1), 'recorded', 'ingest_callback: V3 on the bare URL');
is(status_of($vid_b), 'undelivered|20', '... both applied');

###########################################################################
# 5. An early V2 callback (the dispatcher has not committed the UUID yet) is
# held for the message its URL names, and applied only to it once the UUID
# is recorded: one naming another message is dropped.  Plivo answers
# slowly; a row lock holds the dispatcher's recording of the UUID.

$plivo->behave(mode => 'slow', delay => 2, count => 1);
my $phone_c = phone_n(2299);
my $vid_c = sql("SELECT plivo_otp.otp_send('$phone_c')");
my $mid_c = sql("SELECT id FROM plivo_otp.messages WHERE verification_id = '$vid_c'");
ok(wait_until(5, sub { (message_row($node, $vid_c)->{dispatch_state} // '') eq 'sending' }),
	'the dispatcher claimed message C and is waiting on Plivo');
my $locker = $node->background_psql('postgres');
$locker->query_safe("BEGIN; SELECT id FROM plivo_otp.messages WHERE id = '$mid_c' FOR UPDATE");
ok(wait_until(10, sub { @{ $plivo->messages_to($phone_c) } == 1 }), 'Plivo accepted it');
# (The dispatcher does not wait on the lock: the outcome waits, retried.)
ok(wait_until(10, sub { dispatcher_stats($node)->{in_flight} == 0
	  && message_row($node, $vid_c)->{dispatch_state} eq 'sending' }),
	'the dispatcher is held before committing the UUID');
my $uuid_c = $plivo->messages_to($phone_c)->[0]{message_uuid};
is($plivo->messages_to($phone_c)->[0]{url}, "$public/plivo/sms-status/$mid_c",
	"C was sent with its own URL");
my $b_before = sql("SELECT concat_ws(':', delivery_status, delivery_sequence, error_code)"
	  . " FROM plivo_otp.messages WHERE id = '$mid_b'");
my $r = $plivo->callback(message_uuid => $uuid_b, status => 'delivered', sequence => 50,
	url => "$public/plivo/sms-status/$mid_c", signature => 'v2');
is($r->{status}, 200, "an early V2 callback for C's URL naming B: 200 (it could be early)");
$r = $plivo->callback(message_uuid => $uuid_c, status => 'delivered', signature => 'v2');
is($r->{status}, 200, 'the genuine early V2 callback for C: 200');
is(sql("SELECT string_agg(params->>'MessageUUID', ' ' ORDER BY id) FROM plivo_otp.delivery_events"
	  . " WHERE provider_uuid = 'message:$mid_c' AND applied_at IS NULL"),
	"$uuid_b $uuid_c", 'both are held, keyed to message C');
is(sql("SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid = '$uuid_b'"
	  . " AND sequence = 50"), 0, 'no event for B was stored');
$locker->query_safe('ROLLBACK');
$locker->quit;
ok(wait_until(3, sub { status_of($vid_c) eq 'delivered|' }),
	"once C's UUID is committed the genuine held event applies to C")
  or diag status_of($vid_c);
ok(wait_until(3, sub {
	sql("SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid = 'message:$mid_c'")
	  == 0 }), 'no held event is left');
is(sql("SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid = '$uuid_c'"
	  . " AND applied_at IS NOT NULL"), 1, "C has its one applied event");
is(sql("SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid = '$uuid_b'"
	  . " AND sequence = 50"), 0, 'the one naming B was dropped, never stored for B');
is(sql("SELECT concat_ws(':', delivery_status, delivery_sequence, error_code)"
	  . " FROM plivo_otp.messages WHERE id = '$mid_b'"), $b_before, "B's state did not move");

$node->stop;
done_testing();
