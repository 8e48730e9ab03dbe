# 016_upgrade.pl: the running workers survive ALTER EXTENSION plivo_otp
# UPDATE from 0.1.0: a message queued under 0.1.0 goes out through the new
# library, pending codes verify after the update, and messages queued after
# it go out too, without a restart.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $plivo = start_standin();
my $node = new_node('upgrade', create => 0, conf => dispatcher_conf($plivo));
$node->safe_psql('postgres',
	"CREATE EXTENSION plivo_otp VERSION '0.1.0'; CREATE EXTENSION pgcrypto;");
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'plivo_otp'"),
	'0.1.0', 'the first release is installed');

# Under the 0.1.0 schema, the current library sends and verifies.
my $before = $node->safe_psql('postgres', "SELECT plivo_otp.otp_send('+14155550161')");
ok(wait_until(10, sub { @{ $plivo->messages_to('+14155550161') } == 1 }),
	'a message queued under 0.1.0 reaches Plivo');
ok(wait_until(10, sub {
	$node->safe_psql('postgres', "SELECT dispatch_state FROM plivo_otp.otp_status('$before')") eq 'accepted' }),
	'and is recorded as accepted');
my $code_before = code_from_text($plivo->messages_to('+14155550161')->[0]{text});

# The dispatcher says what waits for the update, once.
my $log = sub { PostgreSQL::Test::Utils::slurp_file($node->logfile) };
ok(wait_until(5, sub { $log->() =~ /plivo_otp dispatcher works with the 0\.1\.0 schema: an upgrade is pending/ }),
	'the dispatcher logs that an upgrade is pending');
like($log->(), qr/HINT:  Run ALTER EXTENSION plivo_otp UPDATE in the database postgres\./,
	'and what to run');
my @pending = $log->() =~ /plivo_otp dispatcher works with the 0\.1\.0 schema/g;
is(scalar @pending, 1, 'once, not on every claim');

# A message queued while the dispatcher is not looking, then the update.
my $pid = dispatcher_pid($node);
my $queued = $node->safe_psql('postgres',
	"SELECT plivo_otp.otp_send('+14155550162'); ALTER EXTENSION plivo_otp UPDATE;");
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'plivo_otp'"),
	'0.2.0', 'ALTER EXTENSION UPDATE reaches 0.2.0');
ok(wait_until(10, sub { @{ $plivo->messages_to('+14155550162') } == 1 }),
	'a message queued in the updating transaction goes out');

is($node->safe_psql('postgres', "SELECT plivo_otp.otp_check('+14155550161', '$code_before')"),
	'approved', 'a code issued under 0.1.0 verifies after the update');

ok(wait_until(5, sub { $log->() =~ /plivo_otp dispatcher works with the 0\.2\.0 schema now/ }),
	'the dispatcher logs that it works with the 0.2.0 schema now');

# After the update: the same dispatcher, the new objects, a new send.
is(dispatcher_pid($node), $pid, 'the dispatcher kept running through the update');
my $after = $node->safe_psql('postgres', "SELECT plivo_otp.otp_send('+14155550163')");
ok(wait_until(10, sub { @{ $plivo->messages_to('+14155550163') } == 1 }),
	'a message queued after the update goes out');
my $code_after = code_from_text($plivo->messages_to('+14155550163')->[0]{text});
is($node->safe_psql('postgres', "SELECT plivo_otp.otp_verify('+14155550163', '$code_after')"),
	't', 'its code verifies');
is($node->safe_psql('postgres', 'SELECT sends >= 3 AND approved >= 2 FROM plivo_otp.api_stats'),
	't', 'api_stats, new in 0.2.0, counts them');
unlike(slurp_file($node->logfile), qr/ERROR|terminated by signal/, 'no error in the log');

done_testing();
