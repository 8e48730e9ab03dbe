# 018_dispatcher_locks.pl: the dispatcher never waits on a row lock that an
# application holds.  An open "BEGIN; SELECT plivo_otp.otp_cancel(id);" on
# a code about to expire (the expiry step meets its message row), and an
# operator's lock on a row whose request is in flight (recording its outcome
# meets it), stop no other message; the outcome is recorded once the lock
# goes.  SIGTERM (pg_terminate_backend) while those locks are held ends the
# dispatcher within moments, and the new one sends at once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use POSIX ();

my $plivo = start_standin();
my $node = new_node('locks', conf => dispatcher_conf($plivo) . "restart_after_crash = on\n");

sub sql { my ($text) = @_; return $node->safe_psql('postgres', $text); }

sub state_of
{
	my ($vid) = @_;
	my $row = message_row($node, $vid);
	return $row ? $row->{dispatch_state} : '';
}

# Send a code; seconds until its request reached Plivo (99 if not within 5 s).
sub send_latency
{
	my ($phone) = @_;
	my $t0 = time;
	sql("SELECT plivo_otp.otp_send('$phone')");
	wait_until(5, sub { @{ $plivo->requests_to($phone) } >= 1 });
	my $r = $plivo->requests_to($phone)->[0];
	return $r ? $r->{time} - $t0 : 99;
}

# A code that expires in 7 s, its message queued but not yet due, as if
# waiting for a retry: the expiry step takes its row from 5 s before.
my $x = sql(q{WITH v AS (
	INSERT INTO plivo_otp.verifications (id, phone, purpose, channel, code_digest, max_attempts,
	  created_at, expires_at, updated_at)
	VALUES (gen_random_uuid(), '+14155550901', 'default', 'sms', decode(repeat('00', 32), 'hex'), 5,
	  now(), now() + interval '7 s', now()) RETURNING id)
	INSERT INTO plivo_otp.messages (id, verification_id, channel, phone, next_try_at, expires_at,
	  created_at, updated_at)
	SELECT gen_random_uuid(), id, 'sms', '+14155550901', now() + interval '1 hour',
	  now() + interval '7 s', now(), now() FROM v RETURNING verification_id});
my $app = $node->background_psql('postgres');
$app->query_safe("BEGIN; SELECT plivo_otp.otp_cancel('$x')");
my $locked_at = time;

# An operator locks the row of a message whose request is in flight.
$plivo->behave(mode => 'slow', count => 1, delay => 1);
my $c = sql("SELECT plivo_otp.otp_send('" . phone_n(902) . "')");
ok(wait_until(5, sub { dispatcher_stats($node)->{in_flight} == 1 }), 'a request is in flight');
my $op = $node->background_psql('postgres');
$op->query_safe("BEGIN; SELECT 1 FROM plivo_otp.messages WHERE verification_id = '$c' FOR UPDATE");
ok(wait_until(5, sub { defined(($plivo->requests_to(phone_n(902))->[0] // {})->{status}) }),
	'Plivo answered it');

# By now the expiry step has met the locked row of the expiring code.
wait_until(5, sub { time > $locked_at + 3 });
my $lat = send_latency(phone_n(903));
cmp_ok($lat, '<', 1, sprintf('with both rows locked, a new message reaches Plivo in %.2f s', $lat));
is(state_of($c), 'sending', 'the outcome of the locked row waits');

# Seconds of CPU a process has used (utime + stime, in clock ticks).
sub cpu_seconds
{
	my ($pid) = @_;
	my @f = split ' ', (slurp_file("/proc/$pid/stat") =~ s/^.*\) //sr);
	return ($f[11] + $f[12]) / POSIX::sysconf(POSIX::_SC_CLK_TCK());
}

# Waiting for the lock, the dispatcher tries again now and then: it does
# not spin (nothing else is in flight, so the hold does not apply).
my $busy = cpu_seconds(dispatcher_pid($node));
sleep 2;
$busy = cpu_seconds(dispatcher_pid($node)) - $busy;
cmp_ok($busy, '<', 0.5, sprintf('meanwhile the dispatcher used %.2f s of CPU in 2 s', $busy));
is(sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'plivo_otp dispatcher'"
	  . " AND wait_event_type = 'Lock'"), '0', 'the dispatcher is not waiting on a lock');

# SIGTERM while the application and the operator hold their locks.
my $pid = dispatcher_pid($node);
my $t0 = time;
sql("SELECT pg_terminate_backend($pid)");
ok(wait_until(5, sub { sql("SELECT count(*) FROM pg_stat_activity WHERE pid = $pid") eq '0' }),
	'pg_terminate_backend ends the dispatcher');
my $took = time - $t0;
cmp_ok($took, '<', 2, sprintf('within %.2f s', $took));
ok(wait_until(10, sub { my $p = dispatcher_pid($node); $p ne '' && $p ne $pid }), 'a new dispatcher starts');
$lat = send_latency(phone_n(904));
cmp_ok($lat, '<', 1, sprintf('and sends at once, the locks still held (%.2f s)', $lat));

# The locks go: the expiring code is canceled, and the row whose outcome
# could not be recorded is settled by the at-most-once rule.
$app->query_safe('COMMIT');
$op->query_safe('COMMIT');
ok(wait_until(5, sub { state_of($x) eq 'canceled' }), 'the code the application canceled is canceled');
ok(wait_until(5, sub { state_of($c) =~ /^(accepted|unknown)$/ }),
	'the row held during its outcome is settled: ' . state_of($c));
is(scalar @{ $plivo->requests_to(phone_n(902)) }, 1, 'and was sent once');

# The same lock, released while the dispatcher runs: the outcome that
# waited is recorded as Plivo gave it (not lost, not 'unknown').
$plivo->behave(mode => 'slow', count => 1, delay => 1);
my $w = sql("SELECT plivo_otp.otp_send('" . phone_n(905) . "')");
ok(wait_until(5, sub { dispatcher_stats($node)->{in_flight} == 1 }), 'another request is in flight');
$op->query_safe("BEGIN; SELECT 1 FROM plivo_otp.messages WHERE verification_id = '$w' FOR UPDATE");
ok(wait_until(5, sub { defined(($plivo->requests_to(phone_n(905))->[0] // {})->{status}) }),
	'Plivo answered it');
sleep 1;
is(state_of($w), 'sending', 'its outcome waits for the lock');
$op->query_safe('COMMIT');
ok(wait_until(5, sub { state_of($w) eq 'accepted' }), 'the lock gone, the outcome is recorded: ' . state_of($w));
isnt(message_row($node, $w)->{provider_uuid} // '', '', 'with the UUID Plivo gave');
$app->quit;
$op->quit;
unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no server process crashed');

$node->stop;
done_testing();
