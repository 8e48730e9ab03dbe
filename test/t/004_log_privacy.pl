# 004_log_privacy.pl: the extension's errors never copy a phone number or a
# code into the server log: statements are hidden and numbers masked.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('log_privacy',
	conf => "log_statement = none\nlog_min_error_statement = error\nplivo_otp.resend_interval = 30\nplivo_otp.allowed_countries = '44'\n");

my @cases = (
	[ "SELECT plivo_otp.otp_send('+44 7400 900001x')", qr/invalid phone number/ ],
	[ "SELECT plivo_otp.otp_send('+15007770001')", qr/country is not allowed/ ],
	[ "SELECT plivo_otp.otp_send('+447400900002'); SELECT plivo_otp.otp_send('+447400900002')",
		qr/resend_interval reached/ ],
	[ "SELECT plivo_otp.otp_check('+447400900003', '987654', 'bad purpose!')", qr/invalid purpose/ ],
	[ "SELECT plivo_otp.otp_send('+447400900004', 'fax')", qr/invalid channel/ ],
	[ "SELECT plivo_otp.otp_send('+447400900005', 'sms', 'default', '')", qr/invalid idempotency key/ ],
);
for my $case (@cases)
{
	my ($sql, $expect) = @$case;
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $sql);
	like($stderr, $expect, "the client sees the error ($expect)");
}

# An error the extension does not raise itself (a lock timeout inside
# otp_check) hides the statement too.
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE plivo_otp.verifications IN ACCESS EXCLUSIVE MODE');
my ($r, $o, $e) = $node->psql('postgres',
	"SET lock_timeout = '200ms'; SELECT plivo_otp.otp_check('+447400900006', '987651')");
like($e, qr/lock timeout/, 'otp_check fails on a lock timeout');
$locker->query_safe('ROLLBACK');
$locker->quit;

my $log = slurp_file($node->logfile);
like($log, qr/ERROR:  canceling statement due to lock timeout/, 'the lock timeout is logged');
unlike($log, qr/987651|740090000?6/, 'without the statement that carried the number and the code');
like($log, qr/ERROR:  invalid phone number/, 'the errors are logged');
unlike($log, qr/STATEMENT:/, 'no statement accompanies them');
unlike($log, qr/7400 ?9000\d|74009000{2}\d|5007770001|987654/, 'no phone number or code reaches the log');
like($log, qr/\+1500\*+01/, 'numbers in messages are masked');

$node->stop;
done_testing();
