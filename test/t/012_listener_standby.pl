# 012_listener_standby.pl: the webhook listener runs on a primary only.  A
# streaming standby configured to listen accepts no callbacks (its port
# refuses connections, no listener in pg_stat_activity) while the primary's
# are recorded and replicated to it; once promoted it listens, applies
# callbacks to the replicated messages and refuses replays of callbacks the
# old primary accepted.  Both sit behind one public URL, as with a proxy
# that follows the primary.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;

my $plivo = start_standin();
my ($primary, $port) = listener_node('primary', $plivo, init => { allows_streaming => 1 },
	public_url => 'https://otp.example.com');

# A message Plivo accepted, known to the primary.
my $vid = $primary->safe_psql('postgres', "SELECT plivo_otp.otp_send('+14155550301')");
ok(wait_until(10, sub {
	$primary->safe_psql('postgres', "SELECT dispatch_state FROM plivo_otp.otp_status('$vid')")
	  eq 'accepted' }),
	'the primary sent a code');
my $uuid = $plivo->messages_to('+14155550301')->[0]{message_uuid};

# A standby with the same settings, listening on a port of its own.
$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
my $sport = PostgreSQL::Test::Cluster::get_free_port();
$standby->append_conf('postgresql.conf', "plivo_otp.listen_port = $sport\n");
$standby->start;
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');

sub refused_connection
{
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $sport, Proto => 'tcp',
		Timeout => 2);
	return 0 if $s;
	return $!{ECONNREFUSED} ? 1 : 0;
}
# (Give a wrongly started listener time to show up.)
ok(!wait_until(3, sub { !refused_connection() }), "the standby's listen port refuses connections");
is($standby->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'plivo_otp listener'"),
	'0', 'the standby runs no listener');

# Callbacks go to the primary and reach the standby through WAL.
my $first = $plivo->callback(message_uuid => $uuid, status => 'sent',
	send_to => "http://127.0.0.1:$port");
is($first->{status}, 200, "the primary's listener accepts a callback");
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres',
	"SELECT delivery_status FROM plivo_otp.messages WHERE provider_uuid = '$uuid'"),
	'sent', 'the standby has the recorded state through replication');

# Failover: the primary goes, the standby is promoted and starts listening.
$primary->stop;
$standby->promote;
ok(listener_up($sport, 15), 'the promoted standby listens');
like($standby->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'plivo_otp listener'"),
	qr/^\d+$/, 'pg_stat_activity shows its listener');
my $r = $plivo->callback(message_uuid => $uuid, status => 'delivered',
	send_to => "http://127.0.0.1:$sport");
is($r->{status}, 200, 'it accepts a signed callback for a message sent by the old primary');
is($standby->safe_psql('postgres', "SELECT delivery_status FROM plivo_otp.otp_status('$vid')"),
	'delivered', '... and applies it');
$r = $plivo->replay({ %$first, send_to => "http://127.0.0.1:$sport" });
is($r->{status}, 403, 'a replay of a callback the old primary accepted is refused');
$r = $plivo->callback(message_uuid => $uuid, status => 'undelivered', signature => 'bad',
	send_to => "http://127.0.0.1:$sport");
is($r->{status}, 403, '... and so is a forged callback');
is($standby->safe_psql('postgres', "SELECT delivery_status FROM plivo_otp.otp_status('$vid')"),
	'delivered', 'the state stays delivered');

$standby->stop;
done_testing();
