# 025_voice_fallback.pl: with plivo_otp.voice_fallback_after set, the
# dispatcher gives a live code whose SMS was reported undelivered (or not
# delivered in time) exactly one call with the same code; no call for an SMS
# delivered in time, with the fallback off, or for a code verified, canceled,
# expired or about to expire; the number's cap, the global cap and a country
# taken out of allowed_countries refuse it with a 'canceled' fallback row
# saying why, and the global hourly count counts it.  An SMS still queued
# when its country is taken out is canceled, not sent.
#
# The fallback's call is placed like any call (023): the stand-in records the
# one Make Call request, fetches the script from the listener, and the digits
# it heard are the SMS's code.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $plivo = start_standin();
my ($node, $port) = listener_node('voice_fallback', $plivo,
	conf => "plivo_otp.voice_fallback_after = 600\n"
	  . "plivo_otp.number_max_sends = 2\n"
	  . "plivo_otp.resend_interval = 0\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub set_conf
{
	my ($line) = @_;
	$node->append_conf('postgresql.conf', "$line\n");
	$node->reload;
	sleep 1;			# the dispatcher reloads at its next turn
}

# Send a code by SMS and wait until the stand-in accepted it: (id, phone, Plivo's UUID).
my $phones = 0;
sub send_sms
{
	my $phone = phone_n(2500 + ++$phones);
	my $vid = sql("SELECT plivo_otp.otp_send('$phone')");
	wait_until(10, sub {
		sql("SELECT dispatch_state FROM plivo_otp.messages WHERE verification_id = '$vid'")
		  eq 'accepted' })
	  or die "the SMS to $phone was not accepted";
	my $uuid = sql("SELECT provider_uuid FROM plivo_otp.messages WHERE verification_id = '$vid'");
	return ($vid, $phone, $uuid);
}

sub report
{
	my ($uuid, $status) = @_;
	my $r = $plivo->callback(message_uuid => $uuid, status => $status,
		$status eq 'delivered' ? () : (error_code => 30));
	die "the '$status' callback was answered $r->{status}" unless $r->{status} == 200;
}

# channel|origin|dispatch_state|last_error of a code's calls, oldest first.
sub calls_of
{
	my ($vid) = @_;
	return sql("SELECT string_agg(concat_ws('|', channel, origin, dispatch_state,"
		  . " coalesce(last_error, '')), ',' ORDER BY created_at)"
		  . " FROM plivo_otp.messages WHERE verification_id = '$vid' AND channel = 'voice'");
}

sub sends_last_hour { return sql('SELECT sends_last_hour FROM plivo_otp.api_stats'); }

# An undelivered SMS: one call, with the same code.
my ($vid_a, $phone_a, $uuid_a) = send_sms();
my $code_a = learn_code($node, $vid_a);
my $digest_a = sql("SELECT encode(code_digest, 'hex') FROM plivo_otp.verifications WHERE id = '$vid_a'");
my $count_before = sends_last_hour();
report($uuid_a, 'undelivered');
ok(wait_until(10, sub { calls_of($vid_a) ne '' }), 'an undelivered SMS gets a voice fallback');
like(calls_of($vid_a), qr/^voice\|fallback\|(pending|sending|accepted)\|$/,
	'one call row, origin fallback, queued for sending');
is(sends_last_hour(), $count_before + 1, 'the global hourly count counts the call');
sleep 3;				# several dispatcher ticks
is(sql("SELECT count(*) FROM plivo_otp.messages WHERE verification_id = '$vid_a' AND origin = 'fallback'"),
	'1', 'still exactly one fallback after several ticks');
is(sql("SELECT count(*) FROM plivo_otp.messages WHERE verification_id = '$vid_a' AND channel = 'voice'"),
	'1', 'and no other call');
is(sql("SELECT count(*) || '|' || string_agg(encode(code_digest, 'hex'), '')"
	  . " FROM plivo_otp.verifications WHERE phone = '$phone_a'"),
	"1|$digest_a", 'the call carries the same code: no new code was issued');
my $heard;
ok(wait_until(15, sub {
	my $calls = $plivo->calls_to($phone_a);
	$heard = @$calls == 1 && $calls->[0]{answer} ? $calls->[0]{answer}{speak}[0]{text} : undef;
	defined $heard }), 'the stand-in got the one call and fetched its script');
is(join('', ($heard // '') =~ /(\d)/g), $code_a, 'the call read the code of the undelivered SMS');
is(scalar @{ $plivo->call_requests_to($phone_a) }, 1, 'one Make Call request in all');
my $log = slurp_file($node->logfile);
like($log, qr/queued a voice fallback to \+1415\S*\*/, 'the log says so, with the number masked');
unlike($log, qr/\Q$phone_a\E/, 'and never the full number');

# A send to the number still open (its send lock held): the fallback does
# not wait for it, goes on with other codes, and calls once it is over.
my ($vid_l, $phone_l, $uuid_l) = send_sms();
my ($vid_o, undef, $uuid_o) = send_sms();
my $app = $node->background_psql('postgres');
$app->query_safe("BEGIN; SELECT plivo_otp.otp_send('$phone_l', 'sms', 'other')");
report($uuid_l, 'undelivered');
report($uuid_o, 'undelivered');
ok(wait_until(10, sub { calls_of($vid_o) ne '' }), 'another code is called meanwhile');
sleep 2;
is(calls_of($vid_l), '', 'no call while a send to the number is open');
$app->query_safe('ROLLBACK');
$app->quit;
ok(wait_until(10, sub { calls_of($vid_l) ne '' }), 'the call comes once that send is over');
unlike(slurp_file($node->logfile), qr/ERROR: .*(still in progress|lock timeout)/,
	'the dispatcher never waited for that lock');

# No call: SMS delivered in time; fallback off; code verified, canceled,
# expired or about to expire.
my ($vid_b, undef, $uuid_b) = send_sms();
report($uuid_b, 'delivered');

my ($vid_v, $phone_v, $uuid_v) = send_sms();
is(sql("SELECT plivo_otp.otp_check('$phone_v', '" . learn_code($node, $vid_v) . "')"),
	'approved', 'a code verified before its SMS is reported failed');
report($uuid_v, 'failed');

my ($vid_c, undef, $uuid_c) = send_sms();
sql("SELECT plivo_otp.otp_cancel('$vid_c')");
report($uuid_c, 'undelivered');

my ($vid_e, undef, $uuid_e) = send_sms();
sql("UPDATE plivo_otp.verifications SET expires_at = now() - interval '1 second' WHERE id = '$vid_e'");
report($uuid_e, 'undelivered');

# ring_timeout (30 s) + the 15 s margin: 40 s is too little.
my ($vid_s, undef, $uuid_s) = send_sms();
sql("UPDATE plivo_otp.verifications SET expires_at = now() + interval '40 seconds' WHERE id = '$vid_s'");
report($uuid_s, 'rejected');

# By otp_resend the application already called: no second call.
my ($vid_r, undef, $uuid_r) = send_sms();
my $resent = sql("SELECT plivo_otp.otp_resend('$vid_r', 'voice')");
report($uuid_r, 'undelivered');

set_conf('plivo_otp.voice_fallback_after = 0');
my ($vid_off, undef, $uuid_off) = send_sms();
report($uuid_off, 'undelivered');
# Its SMS failed, then the user asked for another SMS: only the latest SMS
# counts, so no call while it awaits its delivery report.
my ($vid_f, undef, $uuid_f) = send_sms();
report($uuid_f, 'undelivered');
sql("SELECT plivo_otp.otp_resend('$vid_f', 'sms')");
sleep 3;
is(calls_of($vid_off), '', 'no call with the fallback off');
set_conf('plivo_otp.voice_fallback_after = 600');
sleep 2;
is(calls_of($vid_f), '', 'no call while a newer SMS of the code awaits its delivery report');
is(calls_of($vid_b), '', 'no call for an SMS delivered in time');
is(calls_of($vid_v), '', 'no call for a verified code');
is(calls_of($vid_c), '', 'no call for a canceled code');
is(calls_of($vid_e), '', 'no call for an expired code');
is(calls_of($vid_s), '', 'no call for a code with less than ring_timeout + 15 s of life');
is(sql("SELECT string_agg(origin, ',') FROM plivo_otp.messages WHERE verification_id = '$vid_r' AND channel = 'voice'"),
	'resend', 'no fallback for a code already called by otp_resend');

# Not delivered within voice_fallback_after: one call.
set_conf('plivo_otp.voice_fallback_after = 3');
my ($vid_t) = send_sms();
ok(wait_until(15, sub { calls_of($vid_t) ne '' }), 'an SMS not delivered within voice_fallback_after gets a call');
like(calls_of($vid_t), qr/^voice\|fallback\|/, 'one fallback row');
is(calls_of($vid_b), '', 'a delivered SMS still gets none');
ok(wait_until(10, sub { calls_of($vid_off) ne '' }),
	'the code whose SMS failed while the fallback was off gets its call once it is on');

# The number's cap: two messages already (the SMS and a resend) -> a
# canceled fallback row with the reason, never tried again.
set_conf('plivo_otp.voice_fallback_after = 600');
my ($vid_n, undef, $uuid_n) = send_sms();
my $resend_n = sql("SELECT plivo_otp.otp_resend('$vid_n')");
ok(wait_until(10, sub { sql("SELECT dispatch_state FROM plivo_otp.messages WHERE id = '$resend_n'") eq 'accepted' }),
	'the resent SMS is accepted');
$count_before = sends_last_hour();
# The latest SMS (the resend) is the one whose failure counts.
report(sql("SELECT provider_uuid FROM plivo_otp.messages WHERE id = '$resend_n'"), 'undelivered');
ok(wait_until(10, sub { calls_of($vid_n) ne '' }), 'a fallback refused by the number cap leaves a row');
like(calls_of($vid_n), qr/^voice\|fallback\|canceled\|not called: plivo_otp\.number_max_sends reached/,
	'canceled, saying which limit refused it');
is(sends_last_hour(), $count_before, 'a refused fallback takes no place in the global count');
sleep 2;
is(sql("SELECT count(*) FROM plivo_otp.messages WHERE verification_id = '$vid_n' AND channel = 'voice'"),
	'1', 'and it is not tried again');

# The global cap refuses it too.
my ($vid_g, undef, $uuid_g) = send_sms();
set_conf('plivo_otp.global_max_sends_per_hour = ' . sends_last_hour());
report($uuid_g, 'undelivered');
ok(wait_until(10, sub { calls_of($vid_g) ne '' }), 'a fallback refused by the global cap leaves a row');
like(calls_of($vid_g), qr/^voice\|fallback\|canceled\|not called: plivo_otp\.global_max_sends_per_hour reached/,
	'canceled, saying the global cap refused it');

# A country the operator took out of allowed_countries after the SMS went:
# no call (no Make Call request), a canceled fallback row saying why.
set_conf('plivo_otp.global_max_sends_per_hour = 0');
my ($vid_k, $phone_k, $uuid_k) = send_sms();
set_conf("plivo_otp.allowed_countries = 'GB'");
report($uuid_k, 'undelivered');
ok(wait_until(10, sub { calls_of($vid_k) ne '' }), 'a fallback to a country no longer allowed leaves a row');
like(calls_of($vid_k), qr/^voice\|fallback\|canceled\|not called: the number's country is no longer allowed/,
	'canceled, saying the country is no longer allowed');
is(scalar @{ $plivo->call_requests_to($phone_k) }, 0, 'and no call was requested');
set_conf("plivo_otp.allowed_countries = ''");

# An SMS still queued when the operator takes its country out (queued while
# the dispatcher was stopped): not sent, its message canceled saying why,
# and nothing reaches Plivo; a number of a country still allowed goes.
set_conf("plivo_otp.auth_id = ''");
my $phone_q = phone_n(2590);
my $vid_q = sql("SELECT plivo_otp.otp_send('$phone_q')");
my $vid_gb = sql("SELECT plivo_otp.otp_send('+447400123456')");
$node->append_conf('postgresql.conf', "plivo_otp.allowed_countries = 'GB'\nplivo_otp.auth_id = '$AUTH_ID'\n");
$node->reload;
ok(wait_until(10, sub {
	sql("SELECT dispatch_state FROM plivo_otp.messages WHERE verification_id = '$vid_gb'") eq 'accepted' }),
	'with the dispatcher back, the queued SMS to a country still allowed is sent');
is(sql("SELECT dispatch_state || '|' || last_error FROM plivo_otp.messages WHERE verification_id = '$vid_q'"),
	"canceled|not sent: the number's country is no longer allowed (plivo_otp.allowed_countries)",
	'the SMS queued to a country taken out is canceled, saying why');
like(sql("SELECT dispatch_state || '|' || error_text FROM plivo_otp.otp_status('$vid_q')"),
	qr/^canceled\|not sent: the number's country is no longer allowed/, 'otp_status says so');
is(scalar @{ $plivo->requests_to($phone_q) }, 0, 'and never reached Plivo');
set_conf("plivo_otp.allowed_countries = ''");

# No number to call from (the sender is a sender ID, no voice_sender): no
# call, and one log line saying why.
set_conf('plivo_otp.global_max_sends_per_hour = 0');
my ($vid_x, undef, $uuid_x) = send_sms();
set_conf("plivo_otp.sender = 'MYBRAND'");
report($uuid_x, 'undelivered');
sleep 3;
is(calls_of($vid_x), '', 'no call without a number to call from');
my @said = slurp_file($node->logfile) =~ /places no voice fallback: no number to call from/g;
is(scalar(@said), 1, 'logged once');

# The first code still verifies: the call carried it, it was not replaced.
is(sql("SELECT plivo_otp.otp_check('$phone_a', '$code_a')"), 'approved', 'the called code verifies');

done_testing();
