# 005_dispatch.pl: a committed otp_send reaches Plivo (the local stand-in)
# within moments, with the request shape Plivo expects; a rolled-back one
# never does; the code in the SMS verifies.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use MIME::Base64;

my $plivo = start_standin();
my $node = new_node('dispatch',
	conf => dispatcher_conf($plivo, public_url => 'https://otp.example.com/', code_length => 6)
	  . "max_prepared_transactions = 2\n");

# Commit: the request arrives, shaped as Plivo's API wants it.
my $vid = $node->safe_psql('postgres', "SELECT plivo_otp.otp_send('+1 415 555 0101', 'sms', 'login')");
ok(wait_until(5, sub { @{ $plivo->messages_to('+14155550101') } == 1 }), 'the committed message reached Plivo');
my ($req) = grep { $_->{status} && $_->{status} == 202 } @{ $plivo->requests };
is($req->{method}, 'POST', 'POST');
is($req->{path}, "/v1/Account/$AUTH_ID/Message/", 'to /v1/Account/{auth_id}/Message/');
my %h = map { lc($_) => $req->{headers}{$_} } keys %{ $req->{headers} };
is($h{authorization}, 'Basic ' . encode_base64("$AUTH_ID:$AUTH_TOKEN", ''), 'with Basic auth');
like($h{'content-type'}, qr{^application/json}, 'as JSON');
like($h{'user-agent'}, qr{^plivo_otp/\d+\.\d+\.\d+}, 'with a User-Agent naming the extension and its version');
my $body = $req->{json};
is($body->{src}, '14155550000', 'src is plivo_otp.sender');
is($body->{dst}, '14155550101', 'dst is the number without +');
is($body->{type}, 'sms', 'type sms');
my $mid = $node->safe_psql('postgres', "SELECT id FROM plivo_otp.messages WHERE verification_id = '$vid'");
is($body->{url}, "https://otp.example.com/plivo/sms-status/$mid",
	"url is the message's own callback URL under the listener's public URL");
is($body->{method}, 'POST', 'callbacks by POST');
is($body->{log}, 'false', 'Plivo keeps no content by default');
ok($body->{message_expiry} >= 590 && $body->{message_expiry} <= 600,
	"message_expiry is the code's remaining life ($body->{message_expiry} s)");
my $code = code_from_text($body->{text});
like($code, qr/^\d{6}$/, 'the SMS carries a 6-digit code');

ok(wait_until(5, sub {
	$node->safe_psql('postgres', "SELECT dispatch_state FROM plivo_otp.otp_status('$vid')") eq 'accepted' }),
	'the message is accepted');
my $row = $node->safe_psql('postgres',
	"SELECT provider_uuid, body IS NULL, http_status FROM plivo_otp.messages WHERE verification_id = '$vid'");
my $uuid = $plivo->messages_to('+14155550101')->[0]{message_uuid};
is($row, "$uuid|t|202", "Plivo's message UUID is stored and the body wiped");

is($node->safe_psql('postgres', "SELECT plivo_otp.otp_check('+14155550101', '$code', 'login')"),
	'approved', 'the code from the SMS verifies');

# Rollback: nothing is ever sent.
$node->safe_psql('postgres', "BEGIN; SELECT plivo_otp.otp_send('+14155550102'); ROLLBACK;");
sleep 2;
is(scalar @{ $plivo->messages_to('+14155550102') }, 0, 'a rolled-back send never reaches Plivo');

# A prepared transaction committed later wakes nobody: the backstop timer
# (1 s) finds its message; a prepared one rolled back never sends.
$node->safe_psql('postgres',
	"BEGIN; SELECT plivo_otp.otp_send('+14155550104'); PREPARE TRANSACTION 'otp_later';");
$node->safe_psql('postgres',
	"BEGIN; SELECT plivo_otp.otp_send('+14155550105'); PREPARE TRANSACTION 'otp_never';");
sleep 1;
is(scalar @{ $plivo->messages_to('+14155550104') }, 0, 'a prepared send is not sent before COMMIT PREPARED');
$node->safe_psql('postgres', "COMMIT PREPARED 'otp_later'");
$node->safe_psql('postgres', "ROLLBACK PREPARED 'otp_never'");
ok(wait_until(3, sub { @{ $plivo->messages_to('+14155550104') } == 1 }),
	'after COMMIT PREPARED the backstop sends it');
is(scalar @{ $plivo->messages_to('+14155550105') }, 0, 'ROLLBACK PREPARED sends nothing');

# Codes are sent only from plivo_otp.database: elsewhere otp_send refuses
# rather than queue a code that no dispatcher would ever send.
$node->safe_psql('postgres', 'CREATE DATABASE elsewhere');
$node->safe_psql('elsewhere', 'CREATE EXTENSION plivo_otp');
my ($ret, $stdout, $stderr) = $node->psql('elsewhere', "SELECT plivo_otp.otp_send('+14155550103')");
like($stderr, qr/plivo_otp sends codes only from database "postgres"/,
	'otp_send in another database is refused, not queued forever');

# The worker is visible under a recognisable name.
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'plivo_otp dispatcher'"),
	'1', 'pg_stat_activity shows the dispatcher');

# Nothing secret in the log.
my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$AUTH_TOKEN\E/, 'the auth token never reaches the log');
unlike($log, qr/\b$code\b/, 'the code never reaches the log');

$node->stop;
done_testing();
