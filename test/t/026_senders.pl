# 026_senders.pl: plivo_otp.senders at the stand-in.  An SMS goes out from
# the sender its destination's row names (an alphanumeric ID for +44, a
# number for +1876, a Powerpack for +33: powerpack_uuid and no src), else
# from plivo_otp.sender; a call from its row's number, else the settings'
# caller ID; a queued row whose sender cannot place a call is refused, not
# sent; without plivo_otp.sender the table's destinations still get their
# SMS and any other is refused; the voice fallback calls from the destination's row.  pg_dump keeps the table's rows: a restore into a new database has
# them.  (Rows match by calling-code prefix: the numbers' regions depend
# on libphonenumber, see sql/senders.sql.)
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $plivo = start_standin();
my ($node, $port) = listener_node('senders', $plivo);
# The tests below look at requests only: no answer fetch racing them.
$plivo->call_timing(answer_delay => 60, hangup_delay => 0.2);

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $powerpack = '5ec4c8c9-cd74-42b5-9e41-0d7670d6bb46';
sql("INSERT INTO plivo_otp.senders (prefix, channel, sender, note) VALUES"
	  . " ('44', 'sms', 'MyBrand', 'UK sender ID'),"
	  . " ('44', 'voice', '+442071838750', 'UK number'),"
	  . " ('1876', 'sms', '+18762100000', 'Jamaica'),"
	  . " ('1', 'voice', '+16502530001', 'US calls'),"
	  . " ('33', 'sms', 'powerpack:$powerpack', 'France')");

# The one request (whatever its outcome) of kind 'sms' or 'voice' to phone.
sub request_to
{
	my ($kind, $phone) = @_;
	my $reqs;
	wait_until(10, sub {
		$reqs = $kind eq 'sms' ? $plivo->requests_to($phone) : $plivo->call_requests_to($phone);
		@$reqs > 0 });
	return $reqs->[0]{json} // {};
}

sql("SELECT plivo_otp.otp_send('+447400123456')");
my $req = request_to('sms', '+447400123456');
is($req->{src}, 'MyBrand', 'an SMS to +44 goes from the UK sender ID');
ok(!exists $req->{powerpack_uuid}, '... without a powerpack_uuid');

sql("SELECT plivo_otp.otp_send('+18762101234')");
$req = request_to('sms', '+18762101234');
is($req->{src}, '+18762100000', 'an SMS to +1876 goes from the longest prefix\'s number');

sql("SELECT plivo_otp.otp_send('+33612345678')");
$req = request_to('sms', '+33612345678');
is($req->{powerpack_uuid}, $powerpack, 'an SMS to +33 goes through the Powerpack');
ok(!exists $req->{src}, '... without a src');

my $us = phone_n(1);
sql("SELECT plivo_otp.otp_send('$us')");
$req = request_to('sms', $us);
is($req->{src}, '14155550000', 'an SMS no row serves goes from plivo_otp.sender');

sql("SELECT plivo_otp.otp_send('+447400123457', 'voice')");
$req = request_to('voice', '+447400123457');
is($req->{from}, '442071838750', 'a call to +44 comes from the UK number');

my $us_voice = phone_n(2);
sql("SELECT plivo_otp.otp_send('$us_voice', 'voice')");
$req = request_to('voice', $us_voice);
is($req->{from}, '16502530001', 'a call to +1 comes from the row for +1 and voice');

sql("SELECT plivo_otp.otp_send('+33612345679', 'voice')");
$req = request_to('voice', '+33612345679');
is($req->{from}, '14155550000', 'a call no voice row serves comes from the settings\' caller ID');

is(sql("SELECT string_agg(sender, ',' ORDER BY created_at) FROM plivo_otp.messages"
	  . " WHERE phone IN ('+447400123456', '+447400123457')"),
	'MyBrand,+442071838750', 'each message records its sender');

# A queued call whose recorded sender cannot place a call: refused, not placed.
my $bad = phone_n(3);
sql("BEGIN; CREATE TEMP TABLE v AS SELECT plivo_otp.otp_send('$bad', 'voice') AS id;"
	  . " UPDATE plivo_otp.messages SET sender = 'ACMEOTP' WHERE verification_id = (SELECT id FROM v);"
	  . " COMMIT;");
my $bad_vid = sql("SELECT id FROM plivo_otp.verifications WHERE phone = '$bad'");
ok(wait_until(10, sub { (message_row($node, $bad_vid)->{dispatch_state} // '') eq 'refused' }),
	'a call queued with a sender ID as its sender is refused');
like(message_row($node, $bad_vid)->{last_error}, qr/queued sender/, '... saying why');
is(scalar @{ $plivo->call_requests_to($bad) }, 0, '... and not placed');

# No plivo_otp.sender at all: the dispatcher still sends what the table
# serves, and refuses (never sends) an SMS no row serves, saying why.
my $offset = -s $node->logfile;
reload_dispatcher($node, "plivo_otp.sender = ''\n");
ok(wait_until(5, sub { substr(slurp_file($node->logfile), $offset) =~ /dispatcher has no default sender/ }),
	'the dispatcher runs, and its log says it has no default sender');
sql("SELECT plivo_otp.otp_send('+447400123458')");
$req = request_to('sms', '+447400123458');
is($req->{src}, 'MyBrand', 'without plivo_otp.sender an SMS the table serves still goes out');
my $unserved = phone_n(4);
my $unserved_vid = sql("SELECT plivo_otp.otp_send('$unserved')");
ok(wait_until(10, sub { (message_row($node, $unserved_vid)->{dispatch_state} // '') eq 'refused' }),
	'an SMS no row serves, with no plivo_otp.sender, is refused');
like(message_row($node, $unserved_vid)->{last_error}, qr/not sent: no sender/, '... saying why');
is(scalar @{ $plivo->requests_to($unserved) }, 0, '... and not sent');

# The voice fallback calls from the destination's voice row, even with only
# a sender ID in the settings; a destination without one gets a canceled
# fallback row saying why.
reload_dispatcher($node, "plivo_otp.voice_fallback_after = 600\nplivo_otp.sender = 'MYBRAND'\n");

# An SMS to phone, accepted, then reported undelivered: its verification id.
sub undelivered_sms
{
	my ($phone) = @_;
	my $vid = sql("SELECT plivo_otp.otp_send('$phone')");
	wait_until(10, sub { (message_row($node, $vid)->{dispatch_state} // '') eq 'accepted' })
	  or die "the SMS to $phone was not accepted";
	my $r = $plivo->callback(message_uuid => message_row($node, $vid)->{provider_uuid},
		status => 'undelivered', error_code => 30);
	die "the callback was answered $r->{status}" unless $r->{status} == 200;
	return $vid;
}

undelivered_sms('+447400123460');
$req = request_to('voice', '+447400123460');
is($req->{from}, '442071838750', 'a voice fallback to +44 comes from the UK number');
my $fr_vid = undelivered_sms('+33612345680');
ok(wait_until(10, sub {
	sql("SELECT count(*) FROM plivo_otp.messages WHERE verification_id = '$fr_vid'"
		  . " AND origin = 'fallback' AND dispatch_state = 'canceled'") eq '1' }),
	'a voice fallback to a number no voice row serves is canceled');
like(sql("SELECT last_error FROM plivo_otp.messages WHERE verification_id = '$fr_vid' AND origin = 'fallback'"),
	qr/not called: no number to call from/, '... saying why');
is(scalar @{ $plivo->call_requests_to('+33612345680') }, 0, '... and not placed');

# pg_dump keeps the administrator's senders.
my $dump = PostgreSQL::Test::Utils::tempdir() . '/dump.sql';
$node->command_ok([ 'pg_dump', '-d', $node->connstr('postgres'), '-f', $dump ], 'pg_dump');
sql('CREATE DATABASE restored');
$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('restored'), '-f', $dump ],
	'the dump restores into a new database');
my $rows = "SELECT string_agg(format('%s/%s/%s/%s', prefix, channel, sender, note), ' ' ORDER BY prefix, channel)"
  . " FROM plivo_otp.senders";
is($node->safe_psql('restored', $rows), sql($rows), 'the restored database has the same senders');
like($node->safe_psql('restored', $rows), qr{44/sms/MyBrand/UK sender ID}, '... the UK sender ID among them');
is($node->safe_psql('restored', 'SELECT count(*) FROM plivo_otp.messages'), '0', '... and no queued message');

$node->stop;
done_testing();
