# 006_dispatch_failures.pl: what the dispatcher does with each kind of Plivo
# failure (src/dispatcher/outcome.c, header): 503 and 429 are retried with
# back-off (Retry-After honoured) until accepted; 4xx is refused for good; a
# 500, 502 or 504, and no answer after the request left (timeout, dropped
# connection), are 'unknown' and never re-sent (Plivo may have taken the
# message); a request that never left (connection refused) is retried, and a
# SIGHUP that fixes plivo_otp.api_url lets it through; a code whose Plivo is
# down ends 'expired', with nothing sent after its expiry minus 5 s.  The
# counters of plivo_otp.dispatcher_stats follow along.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

sub send_code
{
	my ($node, $phone, $pre) = @_;
	return $node->safe_psql('postgres', ($pre // '') . "SELECT plivo_otp.otp_send('$phone')");
}

sub state_of
{
	my ($node, $vid) = @_;
	my $row = message_row($node, $vid);
	return $row ? $row->{dispatch_state} : '';
}

sub status_of
{
	my ($node, $vid, $cols) = @_;
	return $node->safe_psql('postgres', "SELECT $cols FROM plivo_otp.otp_status('$vid')");
}

# ---------------------------------------------------------------------------
# Expiry while Plivo is down.  It takes up to the code's 30 s life, so it has
# its own node and stand-in and runs while the rest of this file does.
# restart_after_crash (the framework turns it off): should a server process
# crash, the server comes back, the checks fail, and the run goes on.
my $restart = "restart_after_crash = on\n";
my $down = start_standin();
$down->behave(mode => '503');    # every request, forever
my $node_x = new_node('expiry', conf => dispatcher_conf($down) . $restart);
my $x_phone = phone_n(201);
my $x_vid = send_code($node_x, $x_phone, "SET plivo_otp.code_ttl = '30s'; ");
ok(wait_until(10, sub { dispatcher_stats($node_x)->{queue_depth} == 1 && @{ $down->requests_to($x_phone) } >= 1 }),
	'while Plivo answers 503 the message waits in the queue (queue_depth 1)');

# ---------------------------------------------------------------------------
my $plivo = start_standin();
my $node = new_node('failures', conf => dispatcher_conf($plivo, request_timeout => '1s') . $restart);
my $base = dispatcher_stats($node);

# 503 twice, then 202: accepted once.
$plivo->behave(mode => '503', count => 2);
my $p1 = phone_n(101);
my $v1 = send_code($node, $p1);
ok(wait_until(15, sub { state_of($node, $v1) eq 'accepted' }), '503, 503, then 202: the message is accepted');
my @r = @{ $plivo->requests_to($p1) };
is(join(',', map { $_->{status} // 'none' } @r), '503,503,202', 'Plivo saw three requests: 503, 503, 202');
my $msgs = $plivo->messages_to($p1);
is(scalar @$msgs, 1, 'Plivo accepted exactly one message');
ok(@r == 3 && $r[1]{time} - $r[0]{time} >= 0.5 && $r[2]{time} - $r[1]{time} >= 0.5,
	'each retry waited (back-off), '
	  . join(' s, ', map { sprintf('%.2f', $r[$_]{time} - $r[ $_ - 1 ]{time}) } grep { $_ < @r } 1 .. 2) . ' s');
is(status_of($node, $v1, 'dispatch_state, provider_uuid'), "accepted|$msgs->[0]{message_uuid}",
	"otp_status shows accepted with Plivo's message UUID");
my $s = dispatcher_stats($node);
is($s->{retried} - $base->{retried}, 2, 'dispatcher_stats.retried counts the two retries');
is($s->{accepted} - $base->{accepted}, 1, 'dispatcher_stats.accepted counts one');
like($s->{last_error}, qr/HTTP 503/, 'dispatcher_stats.last_error shows the 503');

# 500, 502, 504: the request reached something that may have passed it on to
# Plivo's queue: unknown, never re-sent.
for my $code (500, 502, 504)
{
	$plivo->behave(mode => "$code", count => 1);
	my $p = phone_n(90 + $code % 10);
	my $v = send_code($node, $p);
	ok(wait_until(10, sub { state_of($node, $v) eq 'unknown' }), "$code: the message is unknown");
	like(message_row($node, $v)->{last_error}, qr/HTTP $code.*not re-sent/, "$code: last_error says it is not re-sent");
	my $next = send_code($node, phone_n(190 + $code % 10));
	ok(wait_until(10, sub { state_of($node, $next) eq 'accepted' }), "$code: the dispatcher carries on");
	is(scalar @{ $plivo->requests_to($p) }, 1, "$code: the message was sent once, never again");
}

# 429 with Retry-After: 3 (longer than the first back-off step, at most 1 s).
$plivo->behave(mode => '429', count => 1, retry_after => 3);
my $p2 = phone_n(102);
my $v2 = send_code($node, $p2);
ok(wait_until(5, sub { @{ $plivo->requests_to($p2) } >= 1 }), 'the 429 request arrived');
ok(wait_until(2, sub { my $st = dispatcher_stats($node); $st->{queue_depth} == 1 && $st->{last_error} =~ /HTTP 429/ }),
	'after the 429 the message is queued again (queue_depth 1, last_error HTTP 429)');
ok(wait_until(15, sub { state_of($node, $v2) eq 'accepted' }), '429 then 202: accepted');
@r = @{ $plivo->requests_to($p2) };
is(join(',', map { $_->{status} // 'none' } @r), '429,202', 'two requests: 429, 202');
my $gap = @r == 2 ? $r[1]{time} - $r[0]{time} : 0;
cmp_ok($gap, '>=', 3, sprintf('the retry came no sooner than Retry-After (%.2f s after the 429)', $gap));
cmp_ok($gap, '<', 5, 'and not much later');

# 400: refused, not retried, visible (masked) in otp_status.
$plivo->behave(mode => '400', count => 1);
my $p3 = phone_n(103);
my $v3 = send_code($node, $p3);
ok(wait_until(10, sub { state_of($node, $v3) eq 'refused' }), '400: the message is refused');
my $refused_at = time;
my $err = status_of($node, $v3, 'error_text');
like($err, qr/HTTP 400.*not a valid phone number/, "otp_status.error_text carries Plivo's error ($err)");
unlike($err, qr/4155550103/, 'the number in the error is masked');
like(dispatcher_stats($node)->{last_error}, qr/HTTP 400/, 'dispatcher_stats.last_error shows the 400');
# Let a retry (if any) have its chance: another message goes through meanwhile.
my $v3b = send_code($node, phone_n(113));
ok(wait_until(10, sub { state_of($node, $v3b) eq 'accepted' && time > $refused_at + 2 }), 'the dispatcher carries on');
is(scalar @{ $plivo->requests_to($p3) }, 1, 'the refused message was not retried');
my $row = message_row($node, $v3);
is("$row->{dispatch_state}|$row->{tries}|$row->{http_status}|$row->{wiped}", 'refused|1|400|t',
	'still refused after one try, HTTP 400 recorded, body wiped');
my $log = slurp_file($node->logfile);
like($log, qr/Plivo refused the message to \+1415\*+03/, 'the refusal is logged with the number masked');
unlike($log, qr/4155550103/, 'the full number is not in the log');

# A hanging Plivo: request_timeout (1 s) after the request left -> unknown,
# never re-sent.
$plivo->behave(mode => 'hang', count => 1);
my $p4 = phone_n(104);
my $v4 = send_code($node, $p4);
ok(wait_until(5, sub { dispatcher_stats($node)->{in_flight} == 1 }), 'dispatcher_stats.in_flight shows the hanging request');
ok(wait_until(10, sub { state_of($node, $v4) eq 'unknown' }), 'no answer within request_timeout: unknown');
my $unknown_at = time;
like(status_of($node, $v4, 'error_text'), qr/not re-sent/, 'otp_status says it is not re-sent');
is(status_of($node, $v4, 'state'), 'pending', 'the code itself stays valid (the application may offer a new send)');
like(dispatcher_stats($node)->{last_error}, qr/no answer after the request was sent/i,
	'dispatcher_stats.last_error shows the timeout');
my $v4b = send_code($node, phone_n(114));
ok(wait_until(10, sub { state_of($node, $v4b) eq 'accepted' && time > $unknown_at + 2 }), 'the next message is accepted');
is(scalar @{ $plivo->requests_to($p4) }, 1, 'the timed-out message was sent once, never again');
is(message_row($node, $v4)->{wiped}, 't', 'its body is wiped');

# Plivo closes the connection after reading the request (no answer): unknown.
# The message just before left a kept-alive connection behind, as in production.
$plivo->behave(mode => 'drop', count => 1);
my $p5 = phone_n(105);
my $v5 = send_code($node, $p5);
ok(wait_until(10, sub { state_of($node, $v5) !~ /^(pending|sending|)$/ }), 'the dropped request has an outcome');
my $dropped_at = time;
is(state_of($node, $v5), 'unknown', 'a connection closed after the request left: unknown');
# libcurl would send it again on a new connection (it cannot tell that the
# first reached Plivo); the dispatcher refuses that second attempt.
like(status_of($node, $v5, 'error_text'), qr/connection closed before any answer.*not re-sent/,
	'otp_status: the connection closed before any answer, not re-sent');
wait_until(2, sub { time > $dropped_at + 2 });
is(scalar @{ $plivo->requests_to($p5) }, 1, 'the dropped message reached Plivo once (no silent re-send)');
is(scalar @{ $plivo->messages_to($p5) }, 0, 'and no second copy was accepted');

# The request never leaves (connection refused): retried; a SIGHUP that
# points api_url at Plivo lets it through, without a restart.
my $closed = PostgreSQL::Test::Cluster::get_free_port();
my $pid_before = dispatcher_pid($node);
my $offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "plivo_otp.api_url = 'http://127.0.0.1:$closed'\n");
$node->reload;
ok($node->wait_for_log(qr/dispatcher sends to http:\/\/127\.0\.0\.1:$closed /, $offset),
	'SIGHUP: the dispatcher now sends to the new api_url');
my $p6 = phone_n(106);
my $v6 = send_code($node, $p6);
ok(wait_until(10, sub { my $m = message_row($node, $v6); $m->{dispatch_state} eq 'pending' && $m->{tries} >= 2 }),
	'connection refused: the message is retried (pending after two tries)');
like(message_row($node, $v6)->{last_error}, qr/request not sent/, 'last_error says the request was not sent');
ok(dispatcher_stats($node)->{queue_depth} >= 1, 'dispatcher_stats.queue_depth counts it');
$offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "plivo_otp.api_url = '$plivo->{url}'\n");
$node->reload;
ok($node->wait_for_log(qr/dispatcher sends to \Q$plivo->{url}\E /, $offset), 'SIGHUP: back to the stand-in');
# (Its next try may be a back-off of up to 16 s away by the time the reload is
# seen: tries doubles the delay, 1, 2, 4, 8, 16 s.)
ok(wait_until(40, sub { state_of($node, $v6) eq 'accepted' }), 'the retried message is then accepted');
is(scalar @{ $plivo->requests_to($p6) }, 1, 'Plivo received it once');
is(dispatcher_pid($node), $pid_before, 'same dispatcher process: reloaded, not restarted');

$s = dispatcher_stats($node);
is($s->{refused} - $base->{refused}, 1, 'dispatcher_stats.refused counts the 400');
is($s->{unknown} - $base->{unknown}, 5, 'dispatcher_stats.unknown counts 500, 502, 504, the timeout and the drop');
cmp_ok($s->{retried} - $base->{retried}, '>=', 5, 'dispatcher_stats.retried counts 503, 503, 429 and the refused connections');
is($s->{accepted} - $base->{accepted}, 8, 'dispatcher_stats.accepted counts the eight accepted messages');
is("$s->{queue_depth}|$s->{in_flight}", '0|0', 'nothing left queued or in flight');

# ---------------------------------------------------------------------------
# Back to the code whose Plivo was down.
ok(wait_until(40, sub { state_of($node_x, $x_vid) eq 'expired' }), 'Plivo down until the code expires: the message ends expired');
my $xrow = message_row($node_x, $x_vid);
# Watch until the code is past its expiry, so a late send would be seen.
wait_until(40, sub { time > $xrow->{expires_epoch} + 1 });
my @xr = @{ $down->requests_to($x_phone) };
cmp_ok(scalar @xr, '>=', 3, scalar(@xr) . ' tries while Plivo was down');
my @late = grep { $_->{time} > $xrow->{expires_epoch} - 5 } @xr;
is(scalar @late, 0, 'nothing was sent after the expiry minus 5 s');
my @long = grep { !defined $_->{json}{message_expiry}
	  || $_->{time} + $_->{json}{message_expiry} > $xrow->{expires_epoch} + 1 } @xr;
is(scalar @long, 0, "each request asked Plivo to expire the message by the code's expiry");
is(state_of($node_x, $x_vid), 'expired', 'the message is still expired, never sent late');
my $marked = $node_x->safe_psql('postgres',
	"SELECT extract(epoch FROM expires_at - updated_at) FROM plivo_otp.messages WHERE verification_id = '$x_vid'");
cmp_ok($marked, '>=', 3, "it was marked expired before the code's last 5 s ran out");
like(status_of($node_x, $x_vid, 'dispatch_state || \' \' || error_text'), qr/^expired .*expired/,
	'otp_status shows expired with the reason');
$s = dispatcher_stats($node_x);
is("$s->{expired}|$s->{accepted}|$s->{queue_depth}", '1|0|0', 'dispatcher_stats: one expired, none accepted, queue empty');
ok($s->{retried} == @xr - 1 || $s->{retried} == @xr,
	"dispatcher_stats.retried counts every failed try that was queued again ($s->{retried})");

unlike(slurp_file($node->logfile) . slurp_file($node_x->logfile), qr/terminated by signal/,
	'no server process crashed');

$node->stop;
$node_x->stop;
done_testing();
