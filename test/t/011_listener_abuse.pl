# 011_listener_abuse.pl: what reaches the webhook listener that is not a
# good callback gets a fitting HTTP error and records nothing (405 with an
# Allow header, 404, 400, 413, 415, 403), also when it carries a valid
# signature; and no abuse (garbage bytes, idle and stalled connections,
# floods of bad requests, one address taking every connection slot) keeps
# it from answering Plivo's real callbacks promptly, nor kills the process
# (same pid afterwards; terminated on purpose, it comes back on its port).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(usleep);

my $plivo = start_standin();
my ($node, $port) = listener_node('listener_abuse', $plivo);
my $pid = listener_pid($node);
like($pid, qr/^\d+$/, 'the listener runs');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub snapshot
{
	return sql(q{SELECT (SELECT count(*) FROM plivo_otp.delivery_events) || ' events, '
		|| (SELECT count(*) FROM plivo_otp.callback_nonces) || ' nonces, '
		|| (SELECT string_agg(concat_ws(':', provider_uuid, delivery_status, delivery_sequence),
				', ') FROM plivo_otp.messages)});
}

sub connect_local
{
	my (%o) = @_;
	return IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
		Timeout => 5, %o);
}

# A message Plivo accepted, for the real callbacks sent during the abuse.
my $vid = sql("SELECT plivo_otp.otp_send('+14155550201')");
ok(wait_until(10, sub {
	sql("SELECT dispatch_state FROM plivo_otp.otp_status('$vid')") eq 'accepted' }),
	'a message is accepted by Plivo');
my $uuid = $plivo->messages_to('+14155550201')->[0]{message_uuid};

# A real callback from Plivo (the stand-in): answered 200 within 2 s and
# recorded.  Each carries a new Sequence, so each is a new event.
my $seq = 0;
sub plivo_gets_through
{
	my ($when, $secs) = @_;
	$seq++;
	my $t0 = Time::HiRes::time();
	my $r = $plivo->callback(message_uuid => $uuid, status => 'delivered', sequence => $seq,
		timeout => $secs // 5);
	my $took = Time::HiRes::time() - $t0;
	ok(($r->{status} // 0) == 200 && $took < 2,
		sprintf('%s: a signed callback is answered 200 promptly', $when))
	  or diag sprintf('status %s (%s) after %.1f s', $r->{status} // 'none', $r->{error} // '',
		$took);
	is(sql("SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid = '$uuid'"
		  . " AND sequence = $seq"), 1, "$when: ... and recorded");
}

plivo_gets_through('at first');

###########################################################################
# 1. Bad requests: the right status, nothing recorded.  Most carry a valid
# V3 signature over their form, so "nothing recorded" is the listener's
# doing, not the signature check's.

my $before = snapshot();
my $n = 0;
sub signed { return signed_request($port, uuid => 'bad-' . ++$n, status => 'failed', @_); }

# Resend a signed request's form with another request line / headers.
sub resend
{
	my ($req, %o) = @_;
	my ($head, $body) = split /\r\n\r\n/, $req->{raw}, 2;
	my @h = split /\r\n/, $head;
	$h[0] = $o{request_line} if $o{request_line};
	@h = map { $o{type} && /^Content-Type:/i ? "Content-Type: $o{type}" : $_ } @h;
	return http_send($port, join("\r\n", @h) . "\r\n\r\n" . ($o{body} // $body));
}

for my $m (qw(PUT DELETE PATCH))
{
	my $r = resend(signed(), request_line => "$m /plivo/sms-status HTTP/1.1");
	is($r->{status}, 405, "$m of a signed callback: 405");
	like($r->{headers}{allow} // '', qr/^(?=.*\bGET\b)(?=.*\bPOST\b)/, "... with Allow: GET, POST");
}
for my $path ('/plivo/sms-status/extra', '/plivo/voice-status/extra',
	'/', '/plivo/sms-status.php')
{
	my $r = signed_callback($port, uuid => 'bad-' . ++$n, status => 'failed', path => $path);
	is($r->{status}, 404, "POST to $path, signed for that URL: 404");
}
# Under the voice answer route every path gets its no-code answer, never 404.
for my $path ('/plivo/voice-answer/x', '/plivo/voice-answerX')
{
	my $r = signed_callback($port, uuid => 'bad-' . ++$n, status => 'failed', path => $path);
	is("$r->{status} $r->{body}", '200 <Response><Hangup/></Response>',
		"POST to $path, signed for that URL: the no-code answer");
}
# The call hang-up route wants a call's fields, not a message's.
is(signed_callback($port, uuid => 'bad-' . ++$n, status => 'failed', path => '/plivo/voice-status')
	  ->{status}, 400, 'a message-status callback signed for /plivo/voice-status: 400');
is(http_request($port, 'GET', '/_control/messages')->{status}, 404, 'GET of an unknown path: 404');

for my $form ('MessageUUID=%zz&Status=failed', 'MessageUUID=abc&Status=fail%', 'MessageUUID=a%4')
{
	my $r = http_request($port, 'POST', '/plivo/sms-status', body => $form,
		headers => { 'Content-Type' => 'application/x-www-form-urlencoded' });
	is($r->{status}, 400, "a malformed form ($form), unsigned: 400 (parsed before the signature)");
}
my $r = resend(signed(), request_line => 'POST /plivo/sms-status?Status=delivered HTTP/1.1');
is($r->{status}, 400, 'a POST with a query string besides its signed form: 400');
$r = signed_callback($port, uuid => 'bad-' . ++$n, status => 'failed',
	params => [ map { ("P$_" => 'x') } 1 .. 150 ]);
is($r->{status}, 400, 'a signed callback with 150 more parameters than usual: 400');
$r = signed_callback($port, uuid => '', status => 'failed');
is($r->{status}, 400, 'a signed callback without a MessageUUID: 400');
$r = signed_callback($port, uuid => 'bad-' . ++$n, status => 'failed', nonce => '1' x 200);
is($r->{status}, 403, 'a signed callback with a 200-digit nonce: 403');

for my $type ('text/plain', 'application/json', 'multipart/form-data; boundary=x')
{
	$r = resend(signed(), type => $type);
	is($r->{status}, 415, "a signed form sent as $type: 415");
}
$r = http_request($port, 'POST', '/plivo/sms-status',
	headers => { 'Content-Type' => 'application/json' },
	body => qq({"MessageUUID": "$uuid", "Status": "failed"}));
is($r->{status}, 415, 'a JSON body: 415');

# Over the 16 KB limit: refused from the Content-Length alone, before the
# body is sent; with a chunked body, once it passes the limit.
my $big = signed(params => [ Pad => 'x' x 17000 ]);
my ($big_head, $big_form) = split /\r\n\r\n/, $big->{raw}, 2;
my $s = connect_local() or die "connect: $!";
syswrite($s, "$big_head\r\n\r\n");
$r = read_response($s, 5);
close $s;
is($r->{status}, 413, 'Content-Length over 16 KB: 413 without waiting for the body');
$r = http_request($port, 'POST', '/plivo/sms-status',
	headers => { 'Content-Type' => 'application/x-www-form-urlencoded',
		'Content-Length' => '99999999999' });
is($r->{status}, 413, 'Content-Length of 100 GB: 413');

# The same signed form, chunked.
sub chunked
{
	my ($req, $size) = @_;
	my ($head, $form) = split /\r\n\r\n/, $req->{raw}, 2;
	$head =~ s/\r\nContent-Length: \d+//;
	my $raw = "$head\r\nTransfer-Encoding: chunked\r\n\r\n";
	$raw .= sprintf("%x\r\n%s\r\n", length $1, $1) while $form =~ /(.{1,$size})/gs;
	return $raw . "0\r\n\r\n";
}
$r = http_send($port, chunked($big, 4096));
is($r->{status}, 413, 'a chunked body over 16 KB: 413');
$r = http_send($port, chunked(signed(params => [ Pad => 'x' x 40000 ]), 40000));
is($r->{status}, 413, 'a chunked body over 16 KB in one chunk: 413');

is(snapshot(), $before, 'none of the bad requests recorded anything');

# The limits are not off by one, and a proxy that re-chunks is fine.
my $fit = signed_request($port, uuid => 'fit-16k', status => 'sent', params => [ Pad => '' ]);
my $pad = 16384 - length((split /\r\n\r\n/, $fit->{raw}, 2)[1]);
$fit = signed_request($port, uuid => 'fit-16k', status => 'sent', params => [ Pad => 'y' x $pad ]);
is(length((split /\r\n\r\n/, $fit->{raw}, 2)[1]), 16384, '(a signed form of exactly 16 KB)');
is(http_send($port, $fit->{raw})->{status}, 200, 'a signed callback of exactly 16 KB: 200');
is(http_send($port, chunked(signed_request($port, uuid => 'chunked-ok', status => 'sent'), 50))
	  ->{status}, 200, 'a signed callback sent in 50-byte chunks: 200');
is(sql("SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid IN ('fit-16k', 'chunked-ok')"),
	2, '... both recorded');

###########################################################################
# 2. Connections a reverse proxy keeps alive: one request after another,
# and pipelined.

$s = connect_local() or die "connect: $!";
my @ka;
for my $i (1 .. 3)
{
	my $req = signed_request($port, uuid => "keepalive-$i", status => 'sent', keep_alive => 1);
	syswrite($s, $req->{raw});
	push @ka, read_response($s, 5)->{status} // 'none';
}
close $s;
is("@ka", '200 200 200', 'three callbacks one after another on a kept-alive connection: 200 each');
$s = connect_local() or die "connect: $!";
syswrite($s, join '', map { signed_request($port, uuid => "pipelined-$_", status => 'sent',
	keep_alive => 1)->{raw} } 1 .. 3);
@ka = map { read_response($s, 5)->{status} // 'none' } 1 .. 3;
close $s;
is("@ka", '200 200 200', 'three pipelined callbacks on one connection: 200 each');
is(sql("SELECT count(*) FROM plivo_otp.delivery_events WHERE provider_uuid ~ '^(keepalive|pipelined)-'"),
	6, '... all recorded');

###########################################################################
# 3. Abuse while Plivo's callbacks keep arriving.  Plivo (the stand-in)
# calls from 127.0.0.1; the abuse comes from 127.0.0.2-5, as it would from
# addresses that are not Plivo's.

my @abusers = map { "127.0.0.$_" } 2 .. 5;
my $next_abuser = 0;
sub connect_abuser
{
	return connect_local(LocalAddr => $abusers[ $next_abuser++ % @abusers ])
	  // die "connect: $!";
}

# Connections that say nothing, stall in the headers, or stall in the body
# (held open, from the start of this section).
my $opened = time;
my (@idle, @stalled);
for my $i (1 .. 30)
{
	push @idle, connect_abuser();
	my $h = connect_abuser();
	syswrite($h, "POST /plivo/sms-status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le");
	push @stalled, $h;
	my $b = connect_abuser();
	syswrite($b, "POST /plivo/sms-status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		  . "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\nMessageUUID=");
	push @stalled, $b;
}

# Garbage: binary noise, a TLS handshake on the plain-HTTP port, blank
# lines, absurd request lines and headers.  None may be taken for a
# request; each is refused or closed (at the latest by the timeout, below).
srand(20240611);
my @garbage = (
	"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" . ("\x00" x 200),
	"\r\n\r\n\r\n\r\n",
	"GET " . ('A' x 20000) . " HTTP/1.1\r\nHost: x\r\n\r\n",
	"POST /plivo/sms-status HTTP/1.1\r\nHost: x\r\nX-Big: " . ('b' x 70000) . "\r\n\r\n",
	"POST /plivo/sms-status HTTP/9.9\r\nHost: x\r\n\r\n",
	"POST /plivo/sms-status HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
	"POST /plivo/sms-status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
	(map { join('', map { chr int rand 256 } 1 .. 1 + int rand 4096) . "\r\n\r\n" } 1 .. 20));
my @junk = map {
	my $c = connect_abuser();
	local $SIG{PIPE} = 'IGNORE';
	syswrite($c, $_);
	$c;
} @garbage;
plivo_gets_through('with 90 idle or stalled and ' . scalar(@garbage) . ' garbage connections');

# A flood of bad requests, one connection each, as fast as they come.
my @kinds = (
	[ 404, "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" ],
	[ 405, "PUT /plivo/sms-status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n" ],
	[ 403, signed_request($port, uuid => 'flood', status => 'failed', token => 'not-the-token')->{raw} ],
	[ 400, "POST /plivo/sms-status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
		  . "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\n%zz" ],
	[ 413, "POST /plivo/sms-status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
		  . "Content-Length: 1000000\r\n\r\n" ]);
my %got;
my $t0 = Time::HiRes::time();
for my $i (0 .. 399)
{
	my ($want, $raw) = @{ $kinds[ $i % @kinds ] };
	my $c = connect_abuser();
	syswrite($c, $raw);
	my $res = read_response($c, 5);
	close $c;
	$got{ ($res->{status} // 'none') eq $want ? 'right' : "$want->" . ($res->{status} // 'none') }++;
	last if Time::HiRes::time() - $t0 > 60;
}
is(join(' ', map { "$_=$got{$_}" } sort keys %got), 'right=400',
	sprintf('400 bad requests in a row, each with its status (%.1f s)', Time::HiRes::time() - $t0));
plivo_gets_through('right after the flood');

# The same, 80 at once.
my @flood = map {
	my $c = connect_abuser();
	syswrite($c, $kinds[ $_ % @kinds ][1]);
	[ $c, $kinds[ $_ % @kinds ][0] ];
} 0 .. 79;
plivo_gets_through('while 80 bad requests arrive at once');
my $right = grep { (read_response($_->[0], 10)->{status} // '') eq $_->[1] } @flood;
close $_->[0] for @flood;
is($right, 80, '... and each of them got its status');

# The connection timeout (10 s) closes what stalls.
my $wait = $opened + 12 - time;
sleep $wait if $wait > 0;
# (Readable here means closed: nothing else would have come.)
my $closed = grep { IO::Select->new($_)->can_read(1) } (@idle, @stalled);
is($closed, 90, 'the listener closed all 90 idle or stalled connections after its timeout');
close $_ for @idle, @stalled;
my %junk;
for my $c (@junk)
{
	my $res = read_response($c, 1);
	$junk{ ($res->{status} // 0) =~ /^2/ ? 'taken' : $res->{status} ? 'refused'
		  : ($res->{error} // '') eq 'timeout' ? 'open' : 'closed' }++;
	close $c;
}
ok(!$junk{taken} && !$junk{open},
	scalar(@garbage) . ' pieces of garbage: each refused or closed, none taken for a callback')
  or diag explain \%junk;

# Connection-slot exhaustion from one address: as many idle or half-sent
# connections as the listener takes in all (plivo_otp.listen_max_connections).
# Plivo, from elsewhere, must still get through.
my $max = sql('SHOW plivo_otp.listen_max_connections');
sub hog
{
	my ($count, @from) = @_;
	my @hog;
	for my $i (0 .. $count - 1)
	{
		my $c = connect_local(LocalAddr => $from[ $i % @from ]) or last;
		syswrite($c, "POST /plivo/sms-status HTTP/1.1\r\nHost: x\r\n") if $i % 2;
		push @hog, $c;
	}
	usleep(500_000);    # (until the listener has taken them all in)
	return @hog;
}
my @hog = hog($max, '127.0.0.2');
is(scalar @hog, $max, "$max connections opened from 127.0.0.2");
plivo_gets_through("while 127.0.0.2 holds $max connections", 4);
close $_ for @hog;
usleep(200_000);

# Every slot taken, from eight addresses: the limit is real then.  But
# when those connections all go at once (the listener is stopped for a
# moment so that it sees them go together), Plivo's next callback is
# answered at once, not at some later timeout.
@hog = hog($max, map { "127.0.0.$_" } 3 .. 10);
is(scalar @hog, $max, "$max connections opened from 127.0.0.3-10");
kill 'STOP', $pid;
close $_ for @hog;
usleep(300_000);
kill 'CONT', $pid;
plivo_gets_through("right after the $max connections went", 4);

###########################################################################
# 4. It was the same process all along.

is(listener_pid($node), $pid, 'the listener process survived it all (same pid)');
my $log = slurp_file($node->logfile);
unlike($log, qr/plivo_otp listener.*(terminated by signal|exited with exit code)/,
	'the log shows no listener crash or exit');

# Ended on purpose, it comes back and answers on the same port.
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok(wait_until(10, sub { my $p = listener_pid($node); $p ne '' && $p ne $pid }),
	'a terminated listener is started again');
ok(wait_until(10, sub {
	($plivo->callback(message_uuid => $uuid, status => 'delivered', sequence => ++$seq,
		timeout => 2)->{status} // 0) == 200 }),
	'... and answers callbacks on the same port');
$node->stop;
done_testing();
