# 030_app_example.pl: examples/app_psycopg.py, the application-side login
# flow with psycopg 3, against the Plivo stand-in: it issues a code as a role
# with only the API grants, waits on LISTEN plivo_otp_events for the delivery
# event of its verification, asks for the code (this test plays the user: it
# reads the SMS the stand-in received and types the code in) and checks it.
# The right code is approved (exit 0); a wrong one is not (exit 1).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $plivo = start_standin(args => [ '--auto-callbacks', 'queued,sent,delivered' ]);
my ($node, $port) = listener_node('app_example', $plivo);

$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	GRANT USAGE ON SCHEMA plivo_otp TO app;
	GRANT EXECUTE ON FUNCTION plivo_otp.otp_send(text, text, text, text, text, text),
		plivo_otp.otp_check(text, text, text) TO app;});
my $example = "$FindBin::Bin/../../examples/app_psycopg.py";
my $conninfo = sprintf('host=%s port=%d dbname=postgres user=app', $node->host, $node->port);

# Run the example for $phone; once it asks, answer with what $answer returns
# (given the SMS text).  Returns (exit code, stdout, stderr).
sub run_example
{
	my ($phone, $answer) = @_;
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start([ '/usr/bin/python3', $example, $conninfo, $phone, '--timeout', '30' ],
		'<', \$in, '>', \$out, '2>', \$err, IPC::Run::timeout(60));
	$h->pump until $out =~ /enter the code:|not delivered|no delivery event/ || !$h->pumpable;
	if ($out =~ /enter the code:/)
	{
		my ($sms) = @{ $plivo->messages_to($phone) };
		$in .= $answer->($sms ? $sms->{text} : '') . "\n";
	}
	$h->finish;
	return ($h->result(0), $out, $err);
}

my $phone = phone_n(1);
my ($rc, $out, $err) = run_example($phone, sub { code_from_text($_[0]) });
like($out, qr/code sent: verification [0-9a-f-]{36}/, 'the example issued a code');
like($out, qr/event: message_accepted \(accepted\)\nevent: message_delivered \(delivered\)\nenter the code:/,
	'it waited on LISTEN: accepted, then delivered, then it asked for the code');
my ($vid) = $out =~ /verification ([0-9a-f-]{36})/;
like($out, qr/otp_check: approved/, 'the code the user received is approved');
is($rc, 0, 'exit 0') or diag($err);
is($node->safe_psql('postgres', "SELECT state FROM plivo_otp.otp_status('$vid')"), 'approved',
	'the verification is approved');

($rc, $out, $err) = run_example(phone_n(2), sub { my $c = code_from_text($_[0]); $c eq '0000' ? '1111' : '0000' });
like($out, qr/otp_check: incorrect/, 'a wrong code is not approved');
is($rc, 1, 'exit 1') or diag($err);

$node->stop;
done_testing();
