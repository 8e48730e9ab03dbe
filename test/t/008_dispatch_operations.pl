# 008_dispatch_operations.pl: the dispatcher in day-to-day operation.  A
# commit wakes it (a send reaches Plivo within 300 ms, well inside its 1 s
# timer tick), and a burst of 50 flows without stalls; it keeps to
# max_requests_per_second and max_inflight; of two concurrent right answers
# with the code from the SMS exactly one is approved; DROP EXTENSION with
# requests in flight completes promptly, and after CREATE EXTENSION the
# dispatcher sends again; dispatcher_stats can be read while messages wait.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use List::Util qw(max);

my $plivo = start_standin();
# restart_after_crash: should a backend crash, the server comes back and the
# rest of the file still runs (the framework turns it off).
my $node = new_node('operations', conf => dispatcher_conf($plivo) . "restart_after_crash = on\n");

# All in one transaction; returns the verification ids.
sub send_all
{
	my (@phones) = @_;
	my $list = join(',', map { "'$_'" } @phones);
	return split /\n/, $node->safe_psql('postgres',
		"SELECT plivo_otp.otp_send(p) FROM unnest(ARRAY[$list]) WITH ORDINALITY AS t(p, n) ORDER BY n");
}

# Stand-in request times (sorted) for these numbers, once all are accepted.
sub accepted_times
{
	my ($secs, @phones) = @_;
	my %want = map { (my $d = $_) =~ s/^\+//; ($d => 1) } @phones;
	my @t;
	wait_until($secs, sub {
		@t = sort { $a <=> $b } map { $_->{time} }
		  grep { $_->{json} && $want{ $_->{json}{dst} // '' } && ($_->{status} // 0) == 202 } @{ $plivo->requests };
		@t >= @phones });
	return @t;
}

sub max_gap
{
	my @t = @_;
	return max(0, map { $t[$_] - $t[ $_ - 1 ] } 1 .. $#t);
}

# ---------------------------------------------------------------------------
# Woken at commit.  The dispatcher also wakes every second on its own (the
# expiry timer), so one fast send could be luck; five in a row, at random
# offsets from that tick, are not (a polling worker would pass 0.3^5 of the time).
my $sess = $node->background_psql('postgres');
my @lat;
ok(wait_until(5, sub { dispatcher_stats($node)->{in_flight} == 0 }), 'the dispatcher is idle');
for my $i (1 .. 5)
{
	my $phone = phone_n(400 + $i);
	usleep(200_000 + int(rand(800_000)));
	my $out = $sess->query_safe("BEGIN; SELECT plivo_otp.otp_send('$phone') IS NOT NULL;"
		  . " SELECT extract(epoch FROM clock_timestamp()); COMMIT;");
	my $before_commit = (split /\n/, $out)[-1];
	wait_until(3, sub { @{ $plivo->requests_to($phone) } >= 1 });
	my $r = $plivo->requests_to($phone)->[0];
	push @lat, $r ? $r->{time} - $before_commit : 99;
}
cmp_ok(max(@lat), '<', latency_bound(0.3), 'each committed send reached Plivo within 300 ms of COMMIT ('
	  . join(', ', map { sprintf('%.0f ms', $_ * 1000) } @lat) . ')');

# ---------------------------------------------------------------------------
# Two concurrent right answers, with the code read from the SMS.
my $vp = phone_n(410);
my ($vid) = send_all($vp);
ok(wait_until(5, sub { @{ $plivo->messages_to($vp) } == 1 }), 'the SMS reached Plivo');
my $code = code_from_text($plivo->messages_to($vp)->[0]{text});
like($code, qr/^\d{4}$/, 'the code is read from the SMS text');
my $s2 = $node->background_psql('postgres');
$sess->query_safe('BEGIN');
is($sess->query_safe("SELECT plivo_otp.otp_verify('$vp', '$code')"), 't', 'first session: the right code verifies');
$s2->query_safe('BEGIN');
$s2->{stdin} .= "SELECT plivo_otp.otp_check('$vp', '$code');\n";
$s2->{run}->pump_nb;
ok(wait_until(10, sub { $node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT plivo_otp.otp_check%'") eq '1' }),
	'second session: the same right code waits for the first');
$sess->query_safe('COMMIT');
my $second = $s2->query_until(qr/^\w+\n/m, '');
chomp $second;
is($second, 'not_found', 'after the first commits, the second gets not_found');
$s2->query_safe('COMMIT');
is($node->safe_psql('postgres', "SELECT state, attempts FROM plivo_otp.verifications WHERE id = '$vid'"),
	'approved|0', 'the code is approved once, and the second answer used no attempt');
is($node->safe_psql('postgres', "SELECT attempts_left FROM plivo_otp.otp_status('$vid')"),
	'5', 'otp_status: no attempt used');
$s2->quit;
$sess->quit;

# ---------------------------------------------------------------------------
# max_requests_per_second = 5 (the default): 15 sends committed at once.
my @rp = map { phone_n(420 + $_) } 1 .. 15;
send_all(@rp);
my @t = accepted_times(20, @rp);
is(scalar @t, 15, 'all 15 arrive');
my $span = @t ? $t[-1] - $t[0] : 0;
cmp_ok($span, '>=', 1.9, sprintf('first to last took %.2f s (15 at 5 a second)', $span));
my $window = max(map { my $s = $_; scalar grep { $_ >= $s && $_ < $s + 1 } @t } @t);
# (One more than the rate: the stand-in sees a request up to tens of
# milliseconds late under load; the window is checked at 100 a second below.)
cmp_ok($window, '<=', 6, "no 1-second window holds more than 5+1 requests ($window)")
  or diag('request times (s after the first): ' . join(' ', map { sprintf('%.3f', $_ - $t[0]) } @t));
cmp_ok(max_gap(@t), '<', 1.5, sprintf('and no stall beyond the pace itself (largest gap %.2f s)', max_gap(@t)));

# max_requests_per_second = 100 and a backlog of 250: the bucket's burst
# (10) must not come on top of the first second's 100, whichever second
# Plivo counts, and the pace still reaches the rate.  The stand-in sees
# the first requests late by their new connections' setup (up to 50 ms
# here), so its windows are 0.95 s: a burst on top of the rate puts 105
# in one.
reload_dispatcher($node, "plivo_otp.max_requests_per_second = 100\n");
my @wp = map { phone_n(3000 + $_) } 1 .. 250;
send_all(@wp);
@t = accepted_times(20, @wp);
is(scalar @t, 250, 'all 250 of the backlog arrive');
$window = max(map { my $s = $_; scalar grep { $_ >= $s && $_ < $s + 0.95 } @t } @t);
cmp_ok($window, '<=', 100, "at 100 a second, no 0.95-second window holds more than 100 requests ($window)")
  or diag('request times (s after the first): ' . join(' ', map { sprintf('%.3f', $_ - $t[0]) } @t));
$span = @t ? $t[-1] - $t[0] : 0;
cmp_ok($span, '<=', 3.0, sprintf('and the 250 took %.2f s, no more than the rate needs (about 2.5 s)', $span));

# max_inflight = 2 with a slow Plivo (1 s per request): the stand-in's
# request times show how many were in progress at once.
reload_dispatcher($node, "plivo_otp.max_inflight = 2\nplivo_otp.max_requests_per_second = 100\n");
$plivo->behave(mode => 'slow', count => 6, delay => 1);
my @ip = map { phone_n(440 + $_) } 1 .. 6;
my %ipd = map { (my $d = $_) =~ s/^\+//; ($d => 1) } @ip;
send_all(@ip);
wait_until(15, sub { 6 == grep { $_->{json} && $ipd{ $_->{json}{dst} } && defined $_->{status} } @{ $plivo->requests } });
my @starts = sort { $a <=> $b } map { $_->{time} } grep { $_->{json} && $ipd{ $_->{json}{dst} } } @{ $plivo->requests };
is(scalar @starts, 6, 'all six slow requests were made');
my $overlap = max(map { my $s = $_; scalar grep { $_ <= $s && $s < $_ + 1 } @starts } @starts);
is($overlap, 2, 'max_inflight = 2: two requests, never more, were in progress at Plivo at once');
cmp_ok($starts[-1] - $starts[0], '>=', 2, 'six 1-second requests, two at a time, took at least 2 s to start');

# A burst of 50 in one transaction, with the rate limit out of the way.
reload_dispatcher($node, "plivo_otp.max_inflight = 10\nplivo_otp.max_requests_per_second = 1000\n");
my @bp = map { phone_n(500 + $_) } 1 .. 50;
my $t0 = time;
send_all(@bp);
@t = accepted_times(15, @bp);
is(scalar @t, 50, 'all 50 of the burst arrive');
cmp_ok($t[-1] - $t0, '<', 3, sprintf('within %.2f s of the commit', $t[-1] - $t0));
cmp_ok(max_gap(@t), '<', 0.5, sprintf('without pauses (largest gap %.3f s)', max_gap(@t)));
my $s = dispatcher_stats($node);
is("$s->{queue_depth}|$s->{in_flight}", '0|0', 'dispatcher_stats: queue empty, nothing in flight');
is($s->{accepted}, 5 + 1 + 15 + 250 + 6 + 50, 'dispatcher_stats.accepted counts every accepted message');
is($s->{last_error}, '', 'dispatcher_stats.last_error is empty: nothing failed');

# ---------------------------------------------------------------------------
# DROP EXTENSION while requests are in flight, then CREATE EXTENSION again.
$plivo->behave(mode => 'slow', count => 3, delay => 2);
my @dp = map { phone_n(600 + $_) } 1 .. 3;
send_all(@dp);
ok(wait_until(5, sub { dispatcher_stats($node)->{in_flight} == 3 }), 'three requests in flight');
my $pid = dispatcher_pid($node);
$t0 = time;
my ($rc, $out, $err) = $node->psql('postgres', 'DROP EXTENSION plivo_otp', timeout => 30);
my $took = time - $t0;
is($rc, 0, "DROP EXTENSION succeeds $err");
cmp_ok($took, '<', 5, sprintf('and completes promptly (%.2f s)', $took));
# Let the slow answers come back while the extension is gone.
ok(wait_until(10, sub { 3 == grep { $_->{json} && $_->{json}{dst} =~ /^141555506/ && defined $_->{status} } @{ $plivo->requests } }),
	'the requests in flight were answered');
sleep 1;
$node->safe_psql('postgres', 'CREATE EXTENSION plivo_otp');
is(dispatcher_pid($node), $pid, 'the dispatcher lived through it');
my $np = phone_n(610);
my ($nv) = send_all($np);
ok(wait_until(5, sub { $node->safe_psql('postgres', "SELECT dispatch_state FROM plivo_otp.otp_status('$nv')") eq 'accepted' }),
	'after CREATE EXTENSION the dispatcher sends new messages');
is(scalar @{ $plivo->requests_to($np) }, 1, 'once');

# ---------------------------------------------------------------------------
# dispatcher_stats while messages are due and waiting.  An unconfigured
# dispatcher leaves them queued ("Queued messages wait until it is
# configured"): each read of the view then computes oldest_due_age at a
# different microsecond.
my $offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "plivo_otp.auth_id = ''\n");
$node->reload;
$node->wait_for_log(qr/dispatcher is not configured and sends nothing/, $offset);
my @wp = map { phone_n(620 + $_) } 1 .. 2;
send_all(@wp);
sleep 1;
($rc, $out, $err) = $node->psql('postgres',
	'SELECT min(extract(epoch FROM age)), max(extract(epoch FROM age)), min(depth), max(depth)'
	  . ' FROM (SELECT (s).oldest_due_age AS age, (s).queue_depth AS depth'
	  . '  FROM (SELECT plivo_otp.dispatcher_stats() AS s FROM generate_series(1, 200)) x) y');
is($rc, 0, 'dispatcher_stats can be read (200 times) while messages are due') or diag($err);
my ($amin, $amax, $dmin, $dmax) = split /\|/, ($out // '');
ok(defined $amax && $amin >= 0.9 && $amax < 10,
	'oldest_due_age is the age of the oldest due message each time (' . ($out // '') . ')');
is(($dmin // '') . '-' . ($dmax // ''), '2-2', 'queue_depth counts the two waiting messages');
unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no server process crashed');
# (After a crash the server restarts: wait for it before going on.)
wait_until(30, sub { $node->psql('postgres', 'SELECT 1') == 0 });
$node->append_conf('postgresql.conf', "plivo_otp.auth_id = '$AUTH_ID'\n");
$node->reload;
ok(wait_until(10, sub { 2 == grep { @{ $plivo->messages_to($_) } == 1 } @wp }),
	'configured again, the dispatcher sends what waited');

$node->stop;
done_testing();
