# 018_dispatcher_durability.pl: the workers' commits are durable even when
# the server says synchronous_commit = off.  A claim is on disk before its
# request leaves, so a crash while the request is at Plivo leaves the row
# 'sending' (then 'unknown', never re-sent), not 'pending' again (sent
# twice).  A callback answered 200 is on disk, so a crash right after the
# answer loses no delivery event (Plivo does not retry a 200).
# wal_writer_delay = 10s keeps the WAL writer from flushing asynchronous
# commits behind our back; an immediate stop loses whatever WAL was not
# written out.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $async = "synchronous_commit = off\nwal_writer_delay = 10s\n";
my $plivo = start_standin();

# ---------------------------------------------------------------------------
# The dispatcher's claim.
my $node = new_node('claims', conf => dispatcher_conf($plivo) . $async);
my $phone = phone_n(1);
$plivo->behave(mode => 'slow', count => 1, delay => 5);
# The application's own commit is durable: it asks for it.
my $vid = $node->safe_psql('postgres', "SET synchronous_commit = on; SELECT plivo_otp.otp_send('$phone')");
ok(wait_until(5, sub { @{ $plivo->requests_to($phone) } == 1 }), 'the request is at Plivo');
$node->stop('immediate');
$node->start;
ok(wait_until(10, sub {
	my $row = message_row($node, $vid);
	$row && $row->{dispatch_state} !~ /^(pending|sending)$/ }), 'after the crash the message has an outcome');
is(message_row($node, $vid)->{dispatch_state}, 'unknown', 'unknown: its claim survived the crash');
is(scalar @{ $plivo->requests_to($phone) }, 1, 'and it was not sent a second time');
my $other = phone_n(2);
$node->safe_psql('postgres', "SELECT plivo_otp.otp_send('$other')");
ok(wait_until(5, sub { @{ $plivo->messages_to($other) } == 1 }), 'the dispatcher sends again');
$node->stop;

# ---------------------------------------------------------------------------
# The listener's acknowledgement.
my ($lnode, $port) = listener_node('acks', $plivo, conf => $async);
my $uuid = '5c1a3f4e-0000-4000-8000-000000000001';
my $res = signed_callback($port, uuid => $uuid, status => 'delivered');
is($res->{status}, 200, 'a callback is answered 200');
$lnode->stop('immediate');
$lnode->start;
is(callback_count($lnode, $uuid), '1', 'after a crash right after the 200 its event is stored');
is($lnode->safe_psql('postgres', 'SELECT count(*) FROM plivo_otp.callback_nonces WHERE nonce = '
	  . $lnode->safe_psql('postgres', "SELECT quote_literal('$res->{request}{nonce}')")),
	'1', 'and so is its nonce');
$lnode->stop;

done_testing();
