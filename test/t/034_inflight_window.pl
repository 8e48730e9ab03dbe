# 034_inflight_window.pl: the dispatcher's in-flight window
# (src/dispatcher/inflight_window.c).  While Plivo answers, max_inflight
# holds as set; a 5xx halves the window; requests that get no answer at
# all (they time out, and are 'unknown', never re-sent) drop it to one, so
# the next codes are not put at risk eight at a time; each answer then
# grows it by one, back to max_inflight, and the log says each step.  A
# refused connection (the request never left: retried) drops it to one too.
#
# Round sizes are read from the stand-in's request start times: with every
# answer held back 0.6 s, the requests that start before the first answer
# came back are the window's first round.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $plivo = start_standin();
my $node = new_node('inflight_window',
	conf => dispatcher_conf($plivo, max_inflight => 8, request_timeout => '1s',
		max_requests_per_second => 1000));

my $n = 0;
# Queue a code to each of k new numbers in one transaction: their numbers.
sub send_batch
{
	my ($k) = @_;
	my @phones = map { phone_n(3400 + ++$n) } 1 .. $k;
	my $list = join(',', map { "'$_'" } @phones);
	$node->safe_psql('postgres', "SELECT count(plivo_otp.otp_send(p)) FROM unnest(ARRAY[$list]) p");
	return @phones;
}

# Once every one of phones has a finished request: their start times, sorted.
sub start_times
{
	my (@phones) = @_;
	my %want = map { (my $d = $_) =~ s/^\+//; ($d => 1) } @phones;
	my @t;
	wait_until(30, sub {
		my @done = grep { $_->{json} && $want{ $_->{json}{dst} // '' } && defined $_->{status} }
		  @{ $plivo->requests };
		@t = sort { $a <=> $b } map { $_->{time} } @done;
		@t >= @phones });
	return @t;
}

# How many of the sorted start times fall within 0.4 s of the k-th round's first.
sub rounds
{
	my (@t) = @_;
	my @sizes;
	while (@t)
	{
		my $first = $t[0];
		my @round = grep { $_ < $first + 0.4 } @t;
		push @sizes, scalar @round;
		splice(@t, 0, scalar @round);
	}
	return @sizes;
}

sub states_of
{
	my (@phones) = @_;
	my $list = join(',', map { "'$_'" } @phones);
	return $node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT dispatch_state, ',') FROM plivo_otp.messages WHERE phone IN ($list)");
}

# While Plivo answers: eight at once, as max_inflight says.
$plivo->behave(mode => 'slow', count => 8, delay => 0.6);
my @full = send_batch(8);
is(join(' ', rounds(start_times(@full))), '8', 'with Plivo answering, max_inflight (8) requests run at once');

# A 500 (Plivo may have taken it: unknown) halves the window.
my $offset = -s $node->logfile;
$plivo->behave(mode => '500', count => 1);
my @five = send_batch(1);
ok(wait_until(10, sub { states_of(@five) eq 'unknown' }), 'the request answered 500 is unknown');
$node->wait_for_log(qr/lets at most 4 requests wait on Plivo at once/, $offset);
like(substr(slurp_file($node->logfile), $offset), qr/DETAIL:  Plivo answered that it is overloaded/,
	'the log says the window halved, and why');
$plivo->behave(mode => 'slow', count => 8, delay => 0.6);
my @half = send_batch(8);
my @r = rounds(start_times(@half));
is($r[0], 4, 'after the 500, four requests start before any answer (' . join(' ', @r) . ')');

# Eight requests that get no answer: they time out (1 s), are unknown, and
# drop the window to one, once.
$offset = -s $node->logfile;
$plivo->behave(mode => 'hang', count => 8, delay => 5);
my @hung = send_batch(8);
ok(wait_until(15, sub { states_of(@hung) eq 'unknown' }), 'eight requests without an answer are unknown');
$node->wait_for_log(qr/lets at most 1 request wait on Plivo at once/, $offset);
my @said = substr(slurp_file($node->logfile), $offset) =~ /lets at most (\d+) request/g;
is(join(' ', @said), '1', 'the eight timeouts at once shrink the window once, to one');

# The next codes go one, then two, then four at a time as answers come back.
$offset = -s $node->logfile;
$plivo->behave(mode => 'slow', count => 7, delay => 0.6);
my @after = send_batch(7);
@r = rounds(start_times(@after));
is(join(' ', @r), '1 2 4', 'after the timeouts the window grows from one with each answer');
is(states_of(@after), 'accepted', 'and all seven were accepted');
$node->wait_for_log(qr/lets up to 8 requests wait on Plivo at once again/, $offset);
pass('the log says when max_inflight holds again');

# Back to full: eight at once again.
$plivo->behave(mode => 'slow', count => 8, delay => 0.6);
my @again = send_batch(8);
is(join(' ', rounds(start_times(@again))), '8', 'and eight requests run at once again');

# Nothing listens at api_url (connection refused): the eight requests never
# left, so they wait for a retry, and the window drops to one, once.
my $closed = PostgreSQL::Test::Cluster::get_free_port();
$offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "plivo_otp.api_url = 'http://127.0.0.1:$closed'\n");
$node->reload;
$node->wait_for_log(qr/dispatcher sends to http:\/\/127\.0\.0\.1:$closed /, $offset);
my @refused = send_batch(8);
my $list = join(',', map { "'$_'" } @refused);
ok(wait_until(10, sub {
	$node->safe_psql('postgres', "SELECT bool_and(dispatch_state = 'pending' AND tries >= 1"
		  . " AND last_error LIKE 'request not sent%') FROM plivo_otp.messages WHERE phone IN ($list)") eq 't' }),
	'eight refused connections: the requests never left, and wait for a retry');
$node->wait_for_log(qr/lets at most 1 request wait on Plivo at once/, $offset);
@said = substr(slurp_file($node->logfile), $offset) =~ /lets at most (\d+) request/g;
is(join(' ', @said), '1', 'the refused connections shrink the window once, to one');

# Plivo is back: each is sent, once.
$node->append_conf('postgresql.conf', "plivo_otp.api_url = '$plivo->{url}'\n");
$node->reload;
ok(wait_until(40, sub { states_of(@refused) eq 'accepted' }), 'once Plivo is back, all eight are accepted');
is(join(' ', map { scalar @{ $plivo->requests_to($_) } } @refused), '1 1 1 1 1 1 1 1',
	'each reached Plivo once');

$node->stop;
done_testing();
