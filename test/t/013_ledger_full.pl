# 013_ledger_full.pl: when the failed-attempt ledger is full of live codes,
# verification fails closed for right and wrong codes alike, so the refusal
# is no oracle and no failure goes uncounted.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('ledger_full',
	conf => "plivo_otp.max_live_codes = 100\nplivo_otp.resend_interval = 0\n"
	  . "plivo_otp.number_max_sends = 0\nplivo_otp.global_max_sends_per_hour = 0\n");

# 100 live codes, each tried once (a failure, so each holds a ledger entry).
$node->safe_psql('postgres', q{
	DO $$ BEGIN FOR i IN 1..100 LOOP
		PERFORM plivo_otp.otp_send('+1500555' || lpad(i::text, 4, '0'));
		PERFORM plivo_otp.otp_check('+1500555' || lpad(i::text, 4, '0'), 'xxxx');
	END LOOP; END $$});

my $vid = $node->safe_psql('postgres', "SELECT plivo_otp.otp_send('+15005559999')");
my $code = learn_code($node, $vid);
my $wrong = sprintf('%04d', ($code + 1) % 10000);

my ($ret, $out, $err) = $node->psql('postgres', "SELECT plivo_otp.otp_check('+15005559999', '$code')");
like($err, qr/cannot verify codes now: too many live codes/, 'the right code is refused when the ledger is full');
($ret, $out, $err) = $node->psql('postgres', "SELECT plivo_otp.otp_check('+15005559999', '$wrong')");
like($err, qr/cannot verify codes now: too many live codes/, 'a wrong code gets the very same answer');
is($node->safe_psql('postgres', "SELECT state FROM plivo_otp.otp_status('$vid')"),
	'pending', 'the code was neither approved nor spent');
ok($node->log_contains('failed-attempt ledger is full of live codes'), 'the server log says so, once');

# Codes already in the ledger still verify.
my $vid1 = $node->safe_psql('postgres', "SELECT id FROM plivo_otp.verifications WHERE phone = '+15005550001'");
my $code1 = learn_code($node, $vid1);
is($node->safe_psql('postgres', "SELECT plivo_otp.otp_check('+15005550001', '$code1')"),
	'approved', 'a code that already has a ledger entry is still verified');

$node->stop;
done_testing();
