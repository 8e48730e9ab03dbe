# 015_ledger_restart.pl: failed attempts that rolled back survive a clean
# restart (the ledger is saved at shutdown and read back at start); only a
# crash loses them, as the README says.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('ledger_restart', conf => "restart_after_crash = on\n");

sub wrong_and_roll_back
{
	my ($phone, $times) = @_;
	$node->safe_psql('postgres', "BEGIN; SELECT plivo_otp.otp_verify('$phone', 'xxxx'); ROLLBACK;")
	  for 1 .. $times;
}

# Three rolled-back failures, a clean restart, two more: the cap (5) is reached.
my $vid = $node->safe_psql('postgres', "SELECT plivo_otp.otp_send('+15005559201')");
wrong_and_roll_back('+15005559201', 3);
is($node->safe_psql('postgres', "SELECT attempts_left FROM plivo_otp.otp_status('$vid')"), '2',
	'three rolled-back failures are counted');
$node->restart;
ok($node->log_contains('plivo_otp: restored the failed attempts of 1 live code'), 'the ledger was restored at start');
is($node->safe_psql('postgres', "SELECT attempts_left FROM plivo_otp.otp_status('$vid')"), '2',
	'... and are still counted after a clean restart');
wrong_and_roll_back('+15005559201', 2);
is($node->safe_psql('postgres', "SELECT plivo_otp.otp_check('+15005559201', 'xxxx')"), 'max_attempts',
	'two more reach the cap');

# A crash (kill -9 of the postmaster's child forces reinitialisation) loses
# the rolled-back failures of live codes: the documented limit.
my $vid2 = $node->safe_psql('postgres', "SELECT plivo_otp.otp_send('+15005559202')");
wrong_and_roll_back('+15005559202', 3);
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'");
kill 'KILL', $pid;
ok(wait_until(30, sub {
	my ($ret) = $node->psql('postgres', 'SELECT 1');
	$ret == 0 && $node->log_contains('all server processes terminated; reinitializing') }),
	'the server reinitialised after a crash');
ok(wait_until(30, sub { my ($ret) = $node->psql('postgres', 'SELECT 1'); $ret == 0 }), 'and accepts connections');
is($node->safe_psql('postgres', "SELECT attempts_left FROM plivo_otp.otp_status('$vid2')"), '5',
	'a crash loses rolled-back failures (at most one code lifetime\'s worth)');

$node->stop;
done_testing();
