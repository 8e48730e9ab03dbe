# 029_wait_events.pl: pg_stat_activity says what each worker waits for.  On
# PostgreSQL 17 each wait has its own wait event (wait_event_type
# Extension, wait_event PlivoOtpDispatcherIdle, ...); on 15, which has no
# named extension wait events, wait_event is "Extension" and the worker's
# query says "waiting (PlivoOtpDispatcherIdle): ...".  The dispatcher idle
# and waiting on a hanging Plivo request, the listener idle, with a client
# that has not finished its request, and unable to listen (port taken).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;

my $plivo = start_standin();
my ($node, $port) = listener_node('waits', $plivo, conf => "plivo_otp.request_timeout = '5s'\n");
my $named = $node->safe_psql('postgres', 'SHOW server_version_num') >= 170000;
note($named ? 'PostgreSQL 17+: named wait events' : 'PostgreSQL 15/16: the wait in the activity text');

# What worker $who ('dispatcher' or 'listener') shows: "type|event|query".
sub shown
{
	my ($n, $who) = @_;
	return $n->safe_psql('postgres',
		"SELECT wait_event_type || '|' || wait_event || '|' || coalesce(query, '') "
		  . "FROM pg_stat_activity WHERE backend_type = 'plivo_otp $who'");
}

# True when worker $who shows wait $name, by this version's means.
sub shows
{
	my ($n, $who, $name) = @_;
	my ($type, $event, $query) = split /\|/, shown($n, $who), 3;
	return 0 unless defined $query && $type eq 'Extension';
	return $event eq $name if $named;
	return $event eq 'Extension' && $query =~ /^waiting \(\Q$name\E\): \S/;
}

# Wait up to 10 s for it; the test names the wait.
sub waits_on
{
	my ($n, $who, $name, $what) = @_;
	ok(wait_until(10, sub { shows($n, $who, $name) }), "$what: $name")
	  or diag("pg_stat_activity shows: " . shown($n, $who));
}

waits_on($node, 'dispatcher', 'PlivoOtpDispatcherIdle', 'the idle dispatcher');
waits_on($node, 'listener', 'PlivoOtpListenerIdle', 'the idle listener');

# A request to Plivo that gets no answer: the dispatcher waits on it.
$plivo->behave(mode => 'hang', count => 1);
$node->safe_psql('postgres', "SELECT plivo_otp.otp_send('" . phone_n(1) . "')");
waits_on($node, 'dispatcher', 'PlivoOtpDispatcherHttp', 'a request to Plivo in flight');
$plivo->reset;

# A client that opened a connection and sent half a request.
my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
  or die "connect: $!";
print $sock "POST /plivo/sms-status/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n";
$sock->flush;
waits_on($node, 'listener', 'PlivoOtpListenerClients', 'a callback connection with its request to come');
close $sock;
waits_on($node, 'listener', 'PlivoOtpListenerIdle', 'the connection closed');

# A second server whose listener finds its port taken (by the first's).
my $other = new_node('waits_taken',
	conf => dispatcher_conf($plivo) . "plivo_otp.listen_port = $port\n");
waits_on($other, 'listener', 'PlivoOtpListenerRetry', 'a listener that cannot listen yet');
$other->stop;

if ($named)
{
	# Registered names are listed by PostgreSQL 17's pg_wait_events.
	is($node->safe_psql('postgres',
		"SELECT string_agg(name, ',' ORDER BY name) FROM pg_wait_events "
		  . "WHERE type = 'Extension' AND name LIKE 'PlivoOtp%'"),
		'PlivoOtpDispatcherHttp,PlivoOtpDispatcherIdle,PlivoOtpListenerClients,PlivoOtpListenerIdle',
		'pg_wait_events lists the names the workers used');
}
else
{
	# On 15 the text is the only place the name shows.
	# (Sampled until seen: one sample can catch the dispatcher between waits.)
	my $seen = '';
	ok(wait_until(5, sub { $seen = shown($node, 'dispatcher');
		$seen =~ /^Extension\|Extension\|waiting \(PlivoOtpDispatcher\w+\): / }),
		'on 15: wait_event Extension, query names the wait') or diag "last seen: $seen";
}

$node->stop;
done_testing();
