# 002_not_preloaded.pl: without shared_preload_libraries every function
# refuses with SQLSTATE 55000 and a hint naming the setting.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('not_preloaded', preload => 0, create => 0);
$node->safe_psql('postgres', 'CREATE EXTENSION plivo_otp');

for my $call (
	"plivo_otp.otp_send('+15005559001')",
	"plivo_otp.otp_check('+15005559001', '1234')",
	"plivo_otp.otp_verify('+15005559001', '1234')",
	"plivo_otp.otp_status('00000000-0000-0000-0000-000000000000')",
	"plivo_otp.otp_cancel('00000000-0000-0000-0000-000000000000')")
{
	my ($ret, $stdout, $stderr) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT $call");
	like($stderr, qr/ERROR:  55000: plivo_otp must be loaded via shared_preload_libraries/,
		"$call fails with 55000");
	like($stderr, qr/HINT:  Add plivo_otp to shared_preload_libraries/, "$call hints at the setting");
}

$node->stop;
done_testing();
