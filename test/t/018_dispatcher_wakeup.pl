# 018_dispatcher_wakeup.pl: no commit's wake-up is lost.  With requests in
# flight at a slow Plivo, thirty commits in a row each reach Plivo within
# 300 ms; a commit that finds no room (max_inflight reached, or the rate
# limit's bucket empty) goes as soon as there is room, not at a backstop;
# COMMIT PREPARED, which wakes nobody, is sent within the documented second.
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
my $node = new_node('wakeup',
	conf => dispatcher_conf($plivo, max_requests_per_second => 1000)
	  . "max_prepared_transactions = 2\n");

sub sql { my ($text) = @_; return $node->safe_psql('postgres', $text); }

# When the first request for a number reached Plivo (undef if not within $secs).
sub arrival
{
	my ($phone, $secs) = @_;
	wait_until($secs // 5, sub { @{ $plivo->requests_to($phone) } >= 1 });
	my $r = $plivo->requests_to($phone)->[0];
	return $r ? $r->{time} : undef;
}

# ---------------------------------------------------------------------------
# Commits one after another while three requests wait at a slow Plivo.
$plivo->behave(mode => 'slow', count => 3, delay => 4);
sql('SELECT plivo_otp.otp_send(p) FROM unnest(ARRAY[' . join(',', map { "'" . phone_n(950 + $_) . "'" } 0 .. 2) . ']) p');
ok(wait_until(5, sub { dispatcher_stats($node)->{in_flight} == 3 }), 'three requests in flight');
my $sess = $node->background_psql('postgres');
my @lat;
for my $i (1 .. 30)
{
	my $phone = phone_n(960 + $i);
	usleep(int(rand(30_000)));
	$sess->query_safe("SELECT plivo_otp.otp_send('$phone')");
	my $committed = time;
	my $at = arrival($phone, 2);
	push @lat, defined $at ? $at - $committed : 99;
}
$sess->quit;
cmp_ok(max(@lat), '<', latency_bound(0.3), sprintf('each of 30 commits reached Plivo within 300 ms (worst %.0f ms)', max(@lat) * 1000));

# ---------------------------------------------------------------------------
# No room: max_inflight = 2, both taken by slow requests; a third commit
# waits for the first slot, not for a timer.
reload_dispatcher($node, "plivo_otp.max_inflight = 2\n");
ok(wait_until(10, sub { dispatcher_stats($node)->{in_flight} == 0 }), 'the slow requests are done');
$plivo->behave(mode => 'slow', count => 2, delay => 1.5);
sql("SELECT plivo_otp.otp_send('" . phone_n(991) . "'), plivo_otp.otp_send('" . phone_n(992) . "')");
my $first = arrival(phone_n(991));
ok(wait_until(5, sub { dispatcher_stats($node)->{in_flight} == 2 }), 'max_inflight = 2 requests in flight');
sql("SELECT plivo_otp.otp_send('" . phone_n(993) . "')");
my $third = arrival(phone_n(993), 8) // 99;
my $gap = $third - $first;
ok($gap >= 1.4 && $gap < 2.2, sprintf('the third went when a slot freed, %.2f s after the first (1.5 s each)', $gap));

# No room: the rate limit's bucket is empty (2 a second, a burst of one).
reload_dispatcher($node, "plivo_otp.max_inflight = 10\nplivo_otp.max_requests_per_second = 2\n");
sql("SELECT plivo_otp.otp_send('" . phone_n(994) . "')");
$first = arrival(phone_n(994));
sql("SELECT plivo_otp.otp_send('" . phone_n(995) . "')");
my $second = arrival(phone_n(995), 8) // 99;
$gap = $second - $first;
cmp_ok($gap, '<', 1, sprintf('a commit in an empty bucket went with the next token, %.2f s after the first', $gap));
reload_dispatcher($node, "plivo_otp.max_requests_per_second = 1000\n");

# ---------------------------------------------------------------------------
# COMMIT PREPARED wakes nobody: the backstop claims within a second.  A send
# just before it makes the dispatcher claim (and so start its backstop
# anew) right then.
sql("BEGIN; SELECT plivo_otp.otp_send('" . phone_n(996) . "'); PREPARE TRANSACTION 'later'");
sql("SELECT plivo_otp.otp_send('" . phone_n(997) . "')");
arrival(phone_n(997));
my $t0 = time;
sql("COMMIT PREPARED 'later'");
my $prepared = arrival(phone_n(996), 8) // 99;
cmp_ok($prepared - $t0, '<', 1.3, sprintf('a COMMIT PREPARED message reached Plivo %.2f s after the commit', $prepared - $t0));

$node->stop;
done_testing();
