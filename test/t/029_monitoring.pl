# 029_monitoring.pl: the health columns of plivo_otp_monitor with real
# workers.  dispatcher_health: queue depth and the age of the oldest due
# message while the dispatcher is stopped (SIGSTOP: the alert "queue age >
# 60 s" is made of this), requests in flight while Plivo hangs, the last
# error and the messages awaiting a retry while Plivo is unreachable, when
# Plivo last took a message.  listener_health: callbacks recorded, and
# refused by reason (bad signature, replay, malformed, unknown path), each
# with its HTTP status; activity counts what the dispatcher did.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $plivo = start_standin();
my ($node, $port) = listener_node('monitoring', $plivo,
	conf => "plivo_otp.request_timeout = '3s'\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

# One column (or expression) of dispatcher_health.
sub health { return sql("SELECT $_[0] FROM plivo_otp_monitor.dispatcher_health"); }

# outcome => "last_5min|http_status" of listener_health.
sub listener_counts
{
	my %h;
	for (split /\n/, sql("SELECT outcome, last_5min || '|' || coalesce(http_status::text, '')"
		  . " FROM plivo_otp_monitor.listener_health"))
	{
		my ($k, $v) = split /\|/, $_, 2;
		$h{$k} = $v;
	}
	return \%h;
}

# The change of one listener outcome's last_5min between two readings.
sub grew
{
	my ($before, $after, $outcome) = @_;
	return (split /\|/, $after->{$outcome})[0] - (split /\|/, $before->{$outcome})[0];
}

my $phones = 0;
sub send_code { my $p = phone_n(2900 + ++$phones); return (sql("SELECT plivo_otp.otp_send('$p')"), $p); }
sub state_of { return sql("SELECT dispatch_state FROM plivo_otp.otp_status('$_[0]')"); }

# ---------------------------------------------------------------------------
# A message Plivo takes: last_accepted_at, and activity counts it.
is(health('last_accepted_at IS NULL'), 't', 'no message taken yet: last_accepted_at is NULL');
my ($vid) = send_code();
ok(wait_until(10, sub { state_of($vid) eq 'accepted' }), 'a code is accepted by Plivo');
is(health('last_accepted_at > now() - interval \'1 minute\' AND since_last_accepted < interval \'1 minute\''),
	't', 'dispatcher_health.last_accepted_at: just now');
is(health('dispatcher_running AND dispatcher_pid = (SELECT pid FROM pg_stat_activity'
	  . " WHERE backend_type = 'plivo_otp dispatcher')"), 't', 'dispatcher_running, with its pid');
is(sql("SELECT last_5min FROM plivo_otp_monitor.activity WHERE event = 'plivo_accepted'"), '1',
	'activity.plivo_accepted counts it');

# ---------------------------------------------------------------------------
# The dispatcher stopped: the queue grows old (the "queue age" alert).
my $dpid = dispatcher_pid($node);
kill 'STOP', $dpid;
my ($v_stopped) = send_code();
my ($v_stopped2) = send_code();
sleep 2;
is(health('queue_depth'), '2', 'dispatcher stopped: queue_depth counts the two queued codes');
cmp_ok(health('extract(epoch FROM oldest_due_age)'), '>=', 2,
	'oldest_due_age: the first has been due for two seconds');
# The README's alert, with its threshold lowered to what the test can wait.
is(sql("SELECT count(*) FROM plivo_otp_monitor.dispatcher_health"
	  . " WHERE oldest_due_age > interval '1 second' OR NOT dispatcher_running"), '1',
	'the queue-age alert query fires');
kill 'CONT', $dpid;
ok(wait_until(10, sub { state_of($v_stopped) eq 'accepted' && state_of($v_stopped2) eq 'accepted' }),
	'dispatcher resumed: both are sent');
is(health("queue_depth || '|' || coalesce(oldest_due_age::text, 'none')"), '0|none',
	'the queue is empty again, no age');

# ---------------------------------------------------------------------------
# Plivo hangs: the request is in flight.
$plivo->behave(mode => 'hang', count => 1);
my ($v_hang) = send_code();
ok(wait_until(5, sub { health('in_flight') eq '1' }), 'Plivo hangs: in_flight is 1');
ok(wait_until(10, sub { health('in_flight') eq '0' }), 'after the request timeout: in_flight is 0 again');

# Plivo unreachable: the last error, and the message awaiting its retry.
my $closed = PostgreSQL::Test::Cluster::get_free_port();
reload_dispatcher($node, "plivo_otp.api_url = 'http://127.0.0.1:$closed'\n");
my ($v_down) = send_code();
ok(wait_until(10, sub { health('awaiting_retry') ne '0' }),
	'Plivo unreachable: awaiting_retry counts the queued message tried once');
like(health('last_error'), qr/request not sent/, 'last_error says the request was not sent');
is(health("last_error_at > now() - interval '1 minute'"), 't', 'last_error_at: just now');
unlike(health('last_error'), qr/\d{7}/, 'last_error shows no phone number');
cmp_ok(sql("SELECT last_5min FROM plivo_otp_monitor.activity WHERE event = 'retried'"), '>=', 1,
	'activity.retried counts the retry');
reload_dispatcher($node, "plivo_otp.api_url = '$plivo->{url}'\n");
ok(wait_until(15, sub { state_of($v_down) eq 'accepted' }), 'Plivo back: the message is sent');

# ---------------------------------------------------------------------------
# The listener: a good callback, then refusals by reason.
my $uuid = sql("SELECT provider_uuid FROM plivo_otp.messages WHERE verification_id = '$vid'");
my $path = '/plivo/sms-status/' . sql("SELECT id FROM plivo_otp.messages WHERE verification_id = '$vid'");
my $c0 = listener_counts();
like($c0->{bad_signature}, qr/^0\|403$/, 'listener_health: no bad signature yet, its status 403');

my $r = signed_callback($port, uuid => $uuid, status => 'delivered', path => $path);
is($r->{status}, 200, 'a signed callback is answered 200');
my $c1 = listener_counts();
is(grew($c0, $c1, 'recorded'), 1, 'listener_health.recorded counts it');

$r = signed_callback($port, uuid => $uuid, status => 'delivered', path => $path, v3_token => 'not-the-token');
is($r->{status}, 403, 'a callback signed with another token: 403');
my $c2 = listener_counts();
is(grew($c1, $c2, 'bad_signature'), 1, 'listener_health.bad_signature counts it');
is(grew($c1, $c2, 'recorded'), 0, 'and recorded does not');

$r = http_send($port, $r->{request}{raw});
$r = signed_callback($port, uuid => $uuid, status => 'sent', sequence => 5, path => $path,
	nonce => '12345678901234567890');
is($r->{status}, 200, 'another callback, nonce N: 200');
$r = signed_callback($port, uuid => $uuid, status => 'sent', sequence => 6, path => $path,
	nonce => '12345678901234567890');
is($r->{status}, 403, 'the same nonce again: 403');
my $c3 = listener_counts();
is(grew($c2, $c3, 'replay'), 1, 'listener_health.replay counts the replay');
is(grew($c2, $c3, 'bad_signature'), 1, 'bad_signature counts the resent forgery');

$r = http_request($port, 'POST', '/plivo/sms-status?x=1',
	headers => { 'Content-Type' => 'application/x-www-form-urlencoded' }, body => 'a=b');
is($r->{status}, 400, 'a POST with a query: 400');
$r = http_request($port, 'GET', '/elsewhere');
is($r->{status}, 404, 'an unknown path: 404');
my $c4 = listener_counts();
is(grew($c3, $c4, 'malformed'), 1, 'listener_health.malformed counts the 400');
is(grew($c3, $c4, 'not_found'), 1, 'listener_health.not_found counts the 404');
is($c4->{malformed}, (split /\|/, $c4->{malformed})[0] . '|400', 'with its status 400');

# The README's spike alert, with its threshold lowered.
is(sql("SELECT sum(last_5min) > 3 FROM plivo_otp_monitor.listener_health"
	  . " WHERE outcome NOT IN ('recorded', 'duplicate')"), 't', 'the refused-callbacks alert sums the refusals');

done_testing();
