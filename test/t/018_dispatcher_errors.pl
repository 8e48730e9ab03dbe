# 018_dispatcher_errors.pl: an ERROR raised outside a unit of work ends
# neither the dispatcher nor the requests it has in flight: pg_cancel_backend
# (an ERROR at the loop's CHECK_FOR_INTERRUPTS), answers nested beyond the
# JSON parser's depth (an ERROR while judging), a UUID too long for the
# unique index (an ERROR while recording).  Each time two other requests
# are in flight at Plivo, and they must still be recorded as accepted by the
# same dispatcher process.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $plivo = start_standin();
my $node = new_node('errors',
	conf => dispatcher_conf($plivo, request_timeout => '5s') . "restart_after_crash = on\n");

sub sql { my ($text) = @_; return $node->safe_psql('postgres', $text); }

sub send_code { my ($phone) = @_; return sql("SELECT plivo_otp.otp_send('$phone')"); }

sub state_of
{
	my ($vid) = @_;
	my $row = message_row($node, $vid);
	return $row ? $row->{dispatch_state} : '';
}

# Two requests held 2 s at Plivo; their verification ids.
sub in_flight_pair
{
	my ($base) = @_;
	$plivo->behave(mode => 'slow', count => 2, delay => 2);
	my @v = map { send_code(phone_n($base + $_)) } 0 .. 1;
	wait_until(5, sub { dispatcher_stats($node)->{in_flight} == 2 });
	return @v;
}

my $pid = dispatcher_pid($node);
like($pid, qr/^\d+$/, 'the dispatcher runs');

# pg_cancel_backend: an ERROR at the loop's CHECK_FOR_INTERRUPTS.
my @iv = in_flight_pair(830);
my $offset = -s $node->logfile;
is(sql("SELECT pg_cancel_backend($pid)"), 't', 'pg_cancel_backend(dispatcher) with two requests in flight');
ok(wait_until(5, sub { substr(slurp_file($node->logfile), $offset) =~ /ERROR:  canceling statement due to user request/ }),
	'the cancel is an ERROR');
ok(wait_until(10, sub { 2 == grep { state_of($_) eq 'accepted' } @iv }),
	'the requests in flight are still accepted: ' . join(', ', map { state_of($_) } @iv));
is(dispatcher_pid($node), $pid, 'by the same dispatcher');

# Answers the parser cannot take: nested beyond its depth (an ERROR inside
# judging), and a UUID too long for the unique index (an ERROR recording).
my %answers = (
	deep_202 => [ 202, '[' x 30000 . ']' x 30000, qr/^unknown$/ ],
	deep_400 => [ 400, '{"error":' x 30000 . '1' . '}' x 30000, qr/^refused$/ ],
	# (random hex: a repeated letter would compress small enough to fit)
	long_uuid => [ 202, '{"message_uuid":["' . join('', map { sprintf '%x', rand 16 } 1 .. 10000) . '"]}',
		qr/^unknown$/ ],
);
my $n = 840;
for my $case (sort keys %answers)
{
	my ($status, $body, $want) = @{ $answers{$case} };
	my @fv = in_flight_pair($n);
	$plivo->behave(mode => 'custom', count => 1, status => $status, body => $body);
	my $v = send_code(phone_n($n + 5));
	ok(wait_until(10, sub { state_of($v) =~ $want }), "$case: the message is " . state_of($v));
	ok(wait_until(10, sub { 2 == grep { state_of($_) eq 'accepted' } @fv }),
		"$case: the requests in flight meanwhile are accepted: " . join(', ', map { state_of($_) } @fv));
	is(dispatcher_pid($node), $pid, "$case: the same dispatcher");
	is(scalar @{ $plivo->requests_to(phone_n($n + 5)) }, 1, "$case: sent once");
	$n += 10;
}
is(sql("SELECT count(*) FROM plivo_otp.messages WHERE dispatch_state IN ('pending', 'sending')"),
	'0', 'nothing is left queued or in flight');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|exited with exit code/, 'no server process crashed or exited');
unlike($log, qr/stack depth limit exceeded/, 'the deep answers never reached the parser');

$node->stop;
done_testing();
