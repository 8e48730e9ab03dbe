# 001_rollback_attack.pl: failed attempts count even when the caller's
# transaction rolls back, across separate connections, so a login procedure
# that raises an error on a wrong code gives an attacker no extra tries.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('rollback_attack');

my $vid = $node->safe_psql('postgres', "SELECT plivo_otp.otp_send('+15005558001')");
my $code = learn_code($node, $vid);
like($code, qr/^\d{4}$/, 'the code is learnt from its digest');
my $wrong = sprintf('%04d', ($code + 1) % 10000);

# Twenty attackers, each in its own connection, each rolling back.
for my $i (1 .. 20)
{
	my $out = $node->safe_psql('postgres',
		"BEGIN; SELECT plivo_otp.otp_verify('+15005558001', '$wrong'); ROLLBACK;");
	is($out, 'f', "rolled-back wrong attempt $i is refused") if $i <= 5 || $i == 20;
}

is($node->safe_psql('postgres', "SELECT attempts FROM plivo_otp.verifications WHERE id = '$vid'"),
	'0', 'the row itself counted nothing (every attempt rolled back)');
is($node->safe_psql('postgres', "SELECT plivo_otp.otp_check('+15005558001', '$wrong')"),
	'max_attempts', 'otp_check says max_attempts after twenty rolled-back failures');
is($node->safe_psql('postgres', "SELECT plivo_otp.otp_check('+15005558001', '$code')"),
	'max_attempts', 'even the right code is refused now');
is($node->safe_psql('postgres', "SELECT attempts_left FROM plivo_otp.otp_status('$vid')"),
	'0', 'otp_status shows no attempts left');

# A login procedure that raises on a wrong code: the same protection.
$node->safe_psql('postgres', q{
	CREATE FUNCTION app_login(phone text, code text) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		IF NOT plivo_otp.otp_verify(phone, code) THEN
			RAISE EXCEPTION 'login failed';
		END IF;
	END $$});
my $vid2 = $node->safe_psql('postgres', "SELECT plivo_otp.otp_send('+15005558002')");
my $code2 = learn_code($node, $vid2);
my $wrong2 = sprintf('%04d', ($code2 + 1) % 10000);
for my $i (1 .. 5)
{
	my ($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT app_login('+15005558002', '$wrong2')");
	like($stderr, qr/login failed/, "raising login procedure, wrong attempt $i fails");
}
my ($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT app_login('+15005558002', '$code2')");
like($stderr, qr/login failed/, 'after the cap the right code fails the login too');

$node->stop;
done_testing();
