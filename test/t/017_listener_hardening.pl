# 017_listener_hardening.pl: a V2 signature (which covers only the URL and
# the nonce) counts only for a message queued less than the nonce window
# ago, so a captured V2 request replayed with a rewritten body once its
# nonce is forgotten changes nothing, in the listener and in
# ingest_callback(); an event for a message UUID the extension never
# recorded waits a few minutes at most; each request must arrive whole
# within 10 s (slow senders are cut at that deadline) and a slowloris flood
# that fills every connection slot does not keep Plivo's callbacks out; a
# second server configured with the same listen port cannot bind it (no
# SO_REUSEPORT), says so once in its log, and takes the port over once it
# is free.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time);

my $plivo = start_standin();
my ($node, $port) = listener_node('hardening', $plivo);
my $url = "http://127.0.0.1:$port/plivo/sms-status";

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Send a code; (verification id, Plivo's UUID) once the dispatcher recorded it.
my $phones = 0;
sub send_code
{
	my $phone = phone_n(700 + ++$phones);
	my $vid = sql("SELECT plivo_otp.otp_send('$phone')");
	wait_until(10, sub {
		sql("SELECT dispatch_state FROM plivo_otp.otp_status('$vid')") eq 'accepted' })
	  or die "the message to $phone was not accepted";
	return ($vid, $plivo->messages_to($phone)->[0]{message_uuid});
}

sub status_of
{
	my ($vid) = @_;
	return sql("SELECT coalesce(delivery_status, '') || '|' || coalesce(error_code, '')"
		  . " FROM plivo_otp.otp_status('$vid')");
}

sub snapshot
{
	return sql(q{SELECT (SELECT count(*) FROM plivo_otp.delivery_events) || ' events, '
		|| (SELECT count(*) FROM plivo_otp.callback_nonces) || ' nonces, '
		|| (SELECT string_agg(concat_ws(':', provider_uuid, delivery_status, delivery_sequence),
				', ' ORDER BY provider_uuid) FROM plivo_otp.messages)});
}

sub age_message
{
	my ($uuid, $interval) = @_;
	sql("UPDATE plivo_otp.messages SET created_at = now() - interval '$interval'"
		  . " WHERE provider_uuid = '$uuid'");
}

###########################################################################
# 1. V2 is bounded by the nonce window (24 h).  Time moves by UPDATE.

my ($vid, $uuid) = send_code();
my $v2 = $plivo->callback(message_uuid => $uuid, status => 'sent', sequence => 2,
	signature => 'v2');
is($v2->{status}, 200, 'a V2-only callback for a message queued just now: 200');
age_message($uuid, '23 hours 50 minutes');
my $r = $plivo->callback(message_uuid => $uuid, status => 'delivered', sequence => 3,
	signature => 'v2');
is($r->{status}, 200, 'a V2-only callback for a message queued 23 h 50 min ago: 200');
is(status_of($vid), 'delivered|', '... and applied');

# A day later the nonce of that first request is purged.  Whoever captured
# the request sends it again with a body of their choosing: V2 still
# verifies (it does not cover the body) and the nonce is new again.
age_message($uuid, '24 hours 10 minutes');
sql("DELETE FROM plivo_otp.callback_nonces WHERE nonce = '$v2->{headers}{'X-Plivo-Signature-V2-Nonce'}'");
my $before = snapshot();
$r = $plivo->replay({ %$v2,
	params => { %{ $v2->{params} }, Status => 'failed', ErrorCode => '30', Sequence => '99' } });
is($r->{status}, 403, 'that V2 request replayed with a rewritten body after 24 h: 403');
like($r->{body} // '', qr/too old/, '... saying the V2 signature is too old for the message');
is(snapshot(), $before, '... and nothing recorded (no event, no nonce, no state moved)');
$r = $plivo->callback(message_uuid => $uuid, status => 'undelivered', sequence => 4,
	signature => 'v2');
is($r->{status}, 403, 'any V2-only callback for that message, even with a new nonce: 403');
$r = $plivo->callback(message_uuid => $uuid, status => 'undelivered', sequence => 5,
	error_code => 80);
is($r->{status}, 200, 'a V3 callback for it still counts (V3 covers the body): 200');
is(status_of($vid), 'undelivered|80', '... and applied');

# ingest_callback() applies the same rule (V2 on the message's own URL).
sub ingest
{
	my ($vid, $uuid, $status, $seq) = @_;
	my $own = "$url/" . sql("SELECT id FROM plivo_otp.messages WHERE verification_id = '$vid'");
	my $nonce = new_nonce();
	my $params = encode_json({ MessageUUID => $uuid, Status => $status, Sequence => "$seq",
		ErrorCode => '30' });
	my $headers = encode_json({ 'X-Plivo-Signature-V2' => sign_v2($own, $nonce),
		'X-Plivo-Signature-V2-Nonce' => $nonce });
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT plivo_otp.ingest_callback('POST', '$own', \$j\$$params\$j\$, \$j\$$headers\$j\$)");
	return $rc == 0 ? $out : $err;
}
$before = snapshot();
like(ingest($vid, $uuid, 'failed', 98), qr/callback signature is too old for this message/,
	'ingest_callback: a V2-only callback for a message queued over 24 h ago is refused');
is(snapshot(), $before, '... and records nothing');
my ($vid2, $uuid2) = send_code();
is(ingest($vid2, $uuid2, 'failed', 1), 'recorded', 'ingest_callback: V2-only for a fresh message: recorded');
is(status_of($vid2), 'failed|30', '... and applied');

###########################################################################
# 2. An event for a UUID the extension never recorded waits a few minutes
# (it may have beaten the dispatcher's commit), then the sweep drops it.

for my $u (qw(never-sent-old never-sent-new))
{
	is(signed_callback($port, uuid => $u, status => 'delivered')->{status}, 200,
		"a signed callback for an unknown UUID ($u) is kept, as it may be early: 200");
}
is(sql("SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid LIKE 'never-sent-%'"
	  . " AND applied_at IS NULL"), 2, '... both waiting');
sql("UPDATE plivo_otp.delivery_events SET received_at = received_at - interval '6 minutes'"
	  . " WHERE provider_uuid = 'never-sent-old'");
ok(wait_until(5, sub { callback_count($node, 'never-sent-old') == 0 }),
	'one whose UUID is still unknown after 5 minutes is dropped by the sweep');
is(callback_count($node, 'never-sent-new'), 1, 'a younger one still waits');
is(sql("SELECT count(*) FROM plivo_otp.messages WHERE delivery_status IS NOT NULL"
	  . " AND provider_uuid NOT IN ('$uuid', '$uuid2')"), 0, 'neither changed any message');

###########################################################################
# 3. Each request must arrive whole within 10 s of its connection (or of
# the previous answer on it).  Slow senders keep libmicrohttpd's idle timer
# (also 10 s) from ever firing: one header line, or one byte of the body,
# every 2 s.

sub slow_connection
{
	my ($from, $in_body) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
		LocalAddr => $from, Timeout => 5) or return undef;
	syswrite($s, "POST /plivo/sms-status HTTP/1.1\r\nHost: x\r\n"
		  . ($in_body ? "Content-Type: application/x-www-form-urlencoded\r\n"
			  . "Content-Length: 500\r\n\r\nMessageUUID=" : ''));
	return { sock => $s, from => $from, in_body => $in_body, opened => time, n => 0 };
}

# Trickle into every open connection every 2 s for at most $secs seconds,
# reopening closed ones if $reopen; returns the closed ones (each with its
# lifetime).  $during->() runs between trickles.
sub trickle
{
	my ($conns, $secs, $reopen, $during) = @_;
	local $SIG{PIPE} = 'IGNORE';
	my (@closed, $next);
	my $end = time + $secs;
	$next = time + 2;
	while (time < $end && grep { $_->{sock} } @$conns)
	{
		my $sel = IO::Select->new(map { $_->{sock} } grep { $_->{sock} } @$conns);
		my $wait = $next - time;
		for my $s ($sel->can_read($wait > 0 ? ($wait < 0.2 ? $wait : 0.2) : 0))
		{
			my ($c) = grep { ($_->{sock} // 0) == $s } @$conns;
			my $buf;
			next if sysread($s, $buf, 4096);
			close $s;
			$c->{sock} = undef;
			push @closed, { %$c, lived => time - $c->{opened} };
			%$c = %{ slow_connection($c->{from}, $c->{in_body}) // {} } if $reopen;
		}
		if (time >= $next)
		{
			for my $c (grep { $_->{sock} } @$conns)
			{
				$c->{n}++;
				syswrite($c->{sock}, $c->{in_body} ? 'x' : "X-Slow-$c->{n}: y\r\n");
			}
			$next += 2;
		}
		$during->() if $during;
	}
	close $_->{sock} for grep { $_->{sock} } @$conns;
	return @closed;
}

my @slow = map { slow_connection('127.0.0.2', $_ % 2) } 1 .. 20;
is(scalar(grep { defined } @slow), 20, '20 slow connections opened (headers or body trickling)');
my @cut = trickle(\@slow, 16, 0);
is(scalar @cut, 20, 'the listener cut every one of them');
my ($min, $max) = (99, 0);
for (@cut) { $min = $_->{lived} if $_->{lived} < $min; $max = $_->{lived} if $_->{lived} > $max; }
ok(@cut == 20 && $min >= 9.5 && $max <= 11.5,
	sprintf('... 10 s after they opened (between %.1f and %.1f s)', $min, $max));

# A flood of such connections, 50 from each of four addresses (the
# per-address limit), fills all 200 slots (plivo_otp.listen_max_connections)
# and reopens whatever is closed.  Plivo's callbacks must still get through.
my $limit = sql('SHOW plivo_otp.listen_max_connections');
my @flood;
for my $a (2 .. 5)
{
	push @flood, map { slow_connection("127.0.0.$a", $_ % 2) } 1 .. $limit / 4;
}
is(scalar(grep { $_ && $_->{sock} } @flood), $limit, "a slowloris flood of $limit connections");
my ($seq, @took) = (10);
my $t_start = time + 2;
my $next_cb = $t_start;
trickle(\@flood, 14, 1, sub {
	return if time < $next_cb || time > $t_start + 10;
	$next_cb = time + 0.5;
	my $t0 = time;
	my $res = $plivo->callback(message_uuid => $uuid2, status => 'failed', sequence => ++$seq,
		timeout => 4);
	push @took, ($res->{status} // 0) == 200 ? time - $t0 : 99;
});
my $worst = (sort { $b <=> $a } @took)[0] // 99;
ok(@took >= 5 && $worst < 3,
	sprintf('%d signed callbacks during the flood, each answered 200 (slowest %.1f s)',
		scalar @took, $worst));
is(sql("SELECT delivery_sequence FROM plivo_otp.messages WHERE provider_uuid = '$uuid2'"), $seq,
	'... and recorded');

###########################################################################
# 4. A second server with the same listen port: its listener cannot bind
# it (no SO_REUSEPORT), says so once, keeps trying without restarting, and
# takes the port over once it is free.  The first keeps every callback.

my $other = new_node('same_port',
	conf => dispatcher_conf($plivo, public_url => "http://127.0.0.1:$port")
	  . "plivo_otp.listen_port = $port\n");
# (Also the wording before the retry loop: a worker exiting at each try.)
my $refusal =
  qr/plivo_otp listener (?:cannot|could not) listen on 127\.0\.0\.1 port $port: Address already in use/;
sub refusals { my @l = (slurp_file($other->logfile) =~ /$refusal/g); return scalar @l; }
ok(wait_until(10, sub { refusals() >= 1 }), "the second server's listener says it cannot listen")
  or diag slurp_file($other->logfile);
my $other_pid = $other->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'plivo_otp listener'");
like($other_pid, qr/^\d+$/, '... and stays up, waiting for the port');

my $ok = 0;
$ok += (signed_callback($port, uuid => "shared-port-$_", status => 'sent')->{status} // 0) == 200
  for 1 .. 20;
is($ok, 20, '20 callbacks to the port are answered 200');
is(sql("SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid LIKE 'shared-port-%'"),
	20, '... all by the first server');
is($other->safe_psql('postgres', 'SELECT count(*) FROM plivo_otp.delivery_events'), 0,
	'... none by the second');

ok(!wait_until(5, sub { refusals() > 1 }), 'the refusal is logged once, not at every retry');
is($other->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'plivo_otp listener'"),
	$other_pid, 'the same listener process throughout (no restart loop)');
unlike(slurp_file($other->logfile), qr/plivo_otp listener.*exited with exit code/,
	'no listener exit in its log');

$node->stop;
ok(wait_until(10, sub {
	slurp_file($other->logfile) =~ /plivo_otp listener accepts callbacks on 127\.0\.0\.1 port $port/ }),
	'once the port is free, the second server listens on it');
is(signed_callback($port, uuid => 'after-takeover', status => 'sent')->{status}, 200,
	'... and answers callbacks');
is($other->safe_psql('postgres',
	"SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid = 'after-takeover'"),
	1, '... recorded by it');
$other->stop;
done_testing();
