# 023_voice_calls.pl: the dispatcher places calls for voice codes.  The Make
# Call request has the shape Plivo's Python SDK (Calls.create) gives the
# same call; its answer URL names the call only by its answer token; Plivo's
# request_uuid (a string or a list) is recorded with accepted_at; the call's
# sealed sentence is kept after acceptance (the listener speaks it) and
# wiped once the code expired or was canceled, also after an ambiguous
# outcome (500, a 2xx without a UUID, a stop in flight: unknown, never
# placed again); 503 is retried; calls honour max_calls_per_second, and
# neither kind's backlog slows the other; a call is not placed without a
# public URL, a caller ID, a body, or enough life left.  The stand-in acts
# as Plivo's voice platform: it fetches the answer URL and sends the
# hang-up callback, both signed with V3, ends calls as told (busy,
# no-answer, machine) and re-fetches on demand (this branch's listener may
# not serve the voice routes: their answers are not asserted).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use MIME::Base64;
use Time::HiRes qw(time);

my $plivo = start_standin();
my ($node, $port) = listener_node('voice', $plivo,
	conf => "plivo_otp.max_inflight = 20\nplivo_otp.max_requests_per_second = 100\n");
my $public = "http://127.0.0.1:$port";

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql("CREATE SCHEMA test; CREATE FUNCTION test.answer_token(uuid) RETURNS text"
	  . " AS 'plivo_otp', 'plivo_otp_answer_token_sql' LANGUAGE C STRICT");

# No fetch for now: the tests of the body below must not race the listener
# (which, where it serves the voice routes, wipes the body once it spoke it).
$plivo->call_timing(answer_delay => 60, hangup_delay => 0.2);

my $n = 200;

# Queue a voice code; wait until its call was accepted and recorded.
# Returns (verification id, message id, the Make Call request).
# The dispatch_state of a verification's latest message ('' before it has one).
sub state_of
{
	my ($vid) = @_;
	my $row = message_row($node, $vid);
	return $row ? $row->{dispatch_state} : '';
}

sub placed_call
{
	my $phone = phone_n(++$n);
	my $vid = sql("SELECT plivo_otp.otp_send('$phone', 'voice')");
	ok(wait_until(10, sub { state_of($vid) eq 'accepted' }),
		"the call to $phone is accepted");
	my $mid = sql("SELECT id FROM plivo_otp.messages WHERE verification_id = '$vid'");
	my ($req) = grep { ($_->{status} // 0) == 201 } @{ $plivo->call_requests_to($phone) };
	return ($vid, $mid, $req, $phone);
}

# JSON booleans as the words, for comparisons.
sub plain
{
	my ($h) = @_;
	return { map { my $v = $h->{$_}; ($_ => (ref $v ? ($v ? 'true' : 'false') : $v)) } keys %$h };
}

# ---- the request ----

my ($vid, $mid, $req, $phone) = placed_call();
is($req->{method}, 'POST', 'POST');
is($req->{path}, "/v1/Account/$AUTH_ID/Call/", 'to /v1/Account/{auth_id}/Call/');
my %h = map { lc($_) => $req->{headers}{$_} } keys %{ $req->{headers} };
is($h{authorization}, 'Basic ' . encode_base64("$AUTH_ID:$AUTH_TOKEN", ''), 'with Basic auth');
like($h{'content-type'}, qr{^application/json}, 'as JSON');
my $token = sql("SELECT test.answer_token('$mid')");
(my $e164 = $phone) =~ s/^\+//;
# What plivo-python's Calls.create(from_, to_, answer_url, hangup_url=...,
# ring_timeout=30, time_limit=60, machine_detection='hangup') sends: its
# arguments and its defaults (answer/ring/hangup/fallback/machine_detection
# methods POST, machine_detection_time 5000, error_if_parent_not_found
# False), None left out, "from_"/"to_" renamed.
my %sdk = (
	from => '14155550000', to => $e164,
	answer_url => "$public/plivo/voice-answer/$token", answer_method => 'POST',
	ring_method => 'POST',
	hangup_url => "$public/plivo/voice-status/$mid", hangup_method => 'POST',
	fallback_method => 'POST',
	time_limit => 60, ring_timeout => 30,
	machine_detection => 'hangup', machine_detection_time => 5000,
	machine_detection_method => 'POST',
	error_if_parent_not_found => 'false');
is_deeply(plain($req->{json}), \%sdk, 'the body is what the Python SDK sends for this call');
like($req->{body}, qr/"time_limit":60\b/, 'time_limit is a JSON number');
like($req->{body}, qr/"ring_timeout":30\b/, 'ring_timeout is a JSON number');
like($req->{body}, qr/"error_if_parent_not_found":false\b/, 'error_if_parent_not_found is a JSON boolean');
like($token, qr/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'the answer token is UUID-shaped');
unlike($req->{json}{answer_url}, qr/\Q$mid\E/, 'the answer URL does not contain the message id');
unlike($req->{json}{answer_url}, qr/\Q$vid\E/, 'the answer URL does not contain the verification id');
is(sql("SELECT answer_token_digest IS NOT NULL FROM plivo_otp.messages WHERE id = '$mid'"), 't',
	'the row keeps only the digest of the token');

my $call = $plivo->calls_to($phone)->[0];
my $row = message_row($node, $vid);
is($row->{provider_uuid}, $call->{request_uuid}, 'request_uuid is recorded as provider_uuid');
is($row->{http_status}, '201', 'http_status 201');
is($row->{wiped}, 'f', "the call's sealed sentence is kept after acceptance");
is(sql("SELECT accepted_at IS NOT NULL AND accepted_at <= now() FROM plivo_otp.messages WHERE id = '$mid'"),
	't', 'accepted_at is set');

# ---- the body's life ----

# The code expires: the tick wipes the sentence.
sql("UPDATE plivo_otp.verifications SET expires_at = now() - interval '1 second' WHERE id = '$vid'");
ok(wait_until(5, sub { message_row($node, $vid)->{wiped} eq 't' }),
	"the call's body is wiped once its code expired");
is(message_row($node, $vid)->{dispatch_state}, 'accepted', '... and the call stays accepted');

# The code is canceled: wiped too.
($vid, $mid) = placed_call();
is(message_row($node, $vid)->{wiped}, 'f', 'a second call keeps its body');
sql("SELECT plivo_otp.otp_cancel('$vid')");
ok(wait_until(5, sub { message_row($node, $vid)->{wiped} eq 't' }),
	"the call's body is wiped once its code was canceled");

# An SMS is accepted with accepted_at too, and its body wiped at once.
my $sms_phone = phone_n(++$n);
my $sms_vid = sql("SELECT plivo_otp.otp_send('$sms_phone', 'sms')");
ok(wait_until(10, sub { state_of($sms_vid) eq 'accepted' }), 'an SMS is accepted');
is(sql("SELECT accepted_at IS NOT NULL AND body IS NULL FROM plivo_otp.messages WHERE verification_id = '$sms_vid'"),
	't', 'an SMS gets accepted_at and its body is wiped');

# A rolled-back voice send places no call.
my $rb_phone = phone_n(++$n);
sql("BEGIN; SELECT plivo_otp.otp_send('$rb_phone', 'voice'); ROLLBACK;");
sleep 2;
is(scalar @{ $plivo->call_requests_to($rb_phone) }, 0, 'a rolled-back voice send places no call');

# ---- retries and ambiguity ----

$plivo->behave(mode => '503', count => 1);
my $retry_phone = phone_n(++$n);
my $retry_vid = sql("SELECT plivo_otp.otp_send('$retry_phone', 'voice')");
ok(wait_until(10, sub { state_of($retry_vid) eq 'accepted' }),
	'a call refused with 503 is retried and accepted');
is_deeply([ map { $_->{status} } @{ $plivo->call_requests_to($retry_phone) } ], [ 503, 201 ],
	'... after one 503, one 201');
is(message_row($node, $retry_vid)->{tries}, '2', '... in two tries');

$plivo->behave(mode => '500', count => 1);
my $amb_phone = phone_n(++$n);
my $amb_vid = sql("SELECT plivo_otp.otp_send('$amb_phone', 'voice')");
ok(wait_until(10, sub { state_of($amb_vid) eq 'unknown' }),
	'a call answered with 500 is unknown');
sleep 2;
is(scalar @{ $plivo->call_requests_to($amb_phone) }, 1, '... and is not placed again');
$row = message_row($node, $amb_vid);
like($row->{last_error}, qr/may have placed the call/, '... saying Plivo may have placed it');
is($row->{wiped}, 'f', '... and keeps its body (the call may exist and fetch its script)');
sql("UPDATE plivo_otp.verifications SET expires_at = now() - interval '1 second' WHERE id = '$amb_vid'");
ok(wait_until(5, sub { message_row($node, $amb_vid)->{wiped} eq 't' }),
	"an unknown call's body is wiped once its code expired");

# Plivo's answer read as Plivo may give it: request_uuid as a list (as for
# several numbers), or missing from a 2xx (ambiguous: unknown).
$plivo->behave(mode => 'custom', count => 1, status => 201,
	body => '{"api_id": "a", "message": "call fired", "request_uuid": ["11111111-2222-3333-4444-555555555555"]}');
my $list_vid = sql("SELECT plivo_otp.otp_send('" . phone_n(++$n) . "', 'voice')");
ok(wait_until(10, sub { state_of($list_vid) eq 'accepted' }), 'a request_uuid given as a list is accepted');
is(message_row($node, $list_vid)->{provider_uuid}, '11111111-2222-3333-4444-555555555555', '... and recorded');
$plivo->behave(mode => 'custom', count => 1, status => 201, body => '{"api_id": "a", "message": "call fired"}');
my $nouuid_vid = sql("SELECT plivo_otp.otp_send('" . phone_n(++$n) . "', 'voice')");
ok(wait_until(10, sub { state_of($nouuid_vid) eq 'unknown' }), 'a 201 without request_uuid is unknown');
like(message_row($node, $nouuid_vid)->{last_error}, qr/without a request UUID/, '... saying so');

# A dispatcher stopped while a Make Call request was in flight: unknown, the
# body kept (Plivo may have placed the call), and not placed again.
$plivo->behave(mode => 'hang', count => 1);
my $stop_phone = phone_n(++$n);
my $stop_vid = sql("SELECT plivo_otp.otp_send('$stop_phone', 'voice')");
ok(wait_until(10, sub { @{ $plivo->call_requests_to($stop_phone) } == 1 }), 'a call request hangs in flight');
my $old_pid = dispatcher_pid($node);
sql("SELECT pg_terminate_backend($old_pid)");
ok(wait_until(10, sub { state_of($stop_vid) eq 'unknown' }), 'stopping the dispatcher makes the call unknown');
is(message_row($node, $stop_vid)->{wiped}, 'f', '... keeping its body');
ok(wait_until(20, sub { my $p = dispatcher_pid($node); $p ne '' && $p ne $old_pid }), 'the dispatcher comes back');
sleep 2;
is(scalar @{ $plivo->call_requests_to($stop_phone) }, 1, '... and does not place the call again');

# ---- the rate of calls ----

# Queue $calls voice and $sms SMS codes in one transaction; the sorted times
# at which the stand-in accepted each kind.
sub queue_both
{
	my ($calls, $sms) = @_;
	my (@call_phones, @sms_phones);
	push @call_phones, phone_n(++$n) for 1 .. $calls;
	push @sms_phones, phone_n(++$n) for 1 .. $sms;
	sql('BEGIN; '
		  . join('', map { "SELECT plivo_otp.otp_send('$_', 'voice'); " } @call_phones)
		  . join('', map { "SELECT plivo_otp.otp_send('$_', 'sms'); " } @sms_phones)
		  . 'COMMIT;');
	my %is_call = map { (my $p = $_) =~ s/^\+//; ($p => 1) } @call_phones;
	my %is_sms = map { (my $p = $_) =~ s/^\+//; ($p => 1) } @sms_phones;
	my (@call_t, @sms_t);
	wait_until(15, sub {
		my @r = grep { $_->{json} && ($_->{status} // 0) >= 200 && $_->{status} < 300 } @{ $plivo->requests };
		@call_t = sort { $a <=> $b } map { $_->{time} } grep { $is_call{ $_->{json}{to} // '' } } @r;
		@sms_t = sort { $a <=> $b } map { $_->{time} } grep { $is_sms{ $_->{json}{dst} // '' } } @r;
		@call_t == $calls && @sms_t == $sms });
	is(scalar @call_t, $calls, "all $calls calls were placed");
	is(scalar @sms_t, $sms, "all $sms SMS were sent");
	return (\@call_t, \@sms_t);
}

$plivo->reset;
$plivo->call_timing(answer_delay => 60);
my ($call_t, $sms_t) = queue_both(8, 8);
my $call_spread = $call_t->[-1] - $call_t->[0];
ok($call_spread >= 3, sprintf('8 calls at max_calls_per_second = 2 are spread over >= 3 s (%.2f s)', $call_spread));
# Nothing else wakes the worker meanwhile: at the 1 s backstop alone they would take 7 s.
ok($call_spread < 5.5, '... and go as their tokens come');
my $busiest = 0;
for my $t (@$call_t)
{
	my $in = grep { $_ >= $t && $_ < $t + 1 } @$call_t;
	$busiest = $in if $in > $busiest;
}
ok($busiest <= 3, "no second holds more than rate + burst calls ($busiest)");
my $sms_spread = $sms_t->[-1] - $sms_t->[0];
ok($sms_spread < 1.5, sprintf('the SMS queued with them are not slowed (%.2f s)', $sms_spread));
ok($sms_t->[-1] < $call_t->[3], 'the SMS all went before the calls backlog drained');

# And the other way round: an SMS backlog does not hold up calls.
reload_dispatcher($node, "plivo_otp.max_requests_per_second = 2\n");
($call_t, $sms_t) = queue_both(2, 8);
ok($sms_t->[-1] - $sms_t->[0] >= 3, 'an SMS backlog at max_requests_per_second = 2 takes >= 3 s');
ok($call_t->[-1] < $sms_t->[3], 'the calls queued with it are not slowed');
reload_dispatcher($node, "plivo_otp.max_requests_per_second = 100\n");

# ---- machine detection off ----

reload_dispatcher($node, "plivo_otp.voice_machine_detection = off\n");
my ($v2, $m2, $req2) = placed_call();
ok(!exists $req2->{json}{machine_detection}, 'machine_detection is left out when the setting is off');
is($req2->{json}{machine_detection_time}, 5000, '... the SDK default machine_detection_time stays');

# ---- the stand-in's voice platform ----

$plivo->call_timing(answer_delay => 0.2, hangup_delay => 0.2);
my ($v3, $m3, $req3) = placed_call();
my $answered;
ok(wait_until(10, sub {
	$answered = $plivo->calls_to($req3->{json}{to})->[0];
	$answered->{answer} && $answered->{hangup} }), 'the stand-in fetched the answer URL and hung up');
my $ans = $answered->{answer};
is($ans->{url}, $req3->{json}{answer_url}, 'it fetched the answer URL');
is($ans->{status}, 200, '... and the listener answered it');
my @speak = @{ $ans->{speak} // [] };
is(scalar @speak, 1, '... with one <Speak>');
my $spoken = join '', ($speak[0]{text} // '') =~ /(\d)/g;
my ($phone3) = $req3->{json}{to};
is(sql("SELECT plivo_otp.otp_check('+$phone3', '$spoken')"), 'approved',
	'the digits the call read are the code otp_check approves (end to end)');
ok(wait_until(10, sub {
	sql("SELECT delivery_status || '|' || error_code || '|' || error_text FROM plivo_otp.otp_status('$v3')")
		eq 'completed|4000|normal hang-up' }),
	'the hang-up callback reached otp_status: completed, 4000 and its meaning');
is(sql("SELECT body IS NULL AND answered_at IS NOT NULL FROM plivo_otp.messages WHERE id = '$m3'"), 't',
	'the served sentence is wiped and answered_at set');
my %p = %{ $ans->{params} };
is($p{RequestUUID}, $answered->{request_uuid}, 'the fetch carries RequestUUID');
is($p{ALegRequestUUID}, $answered->{request_uuid}, '... and ALegRequestUUID');
is($p{CallStatus}, 'in-progress', '... CallStatus in-progress');
is($p{Direction}, 'outbound', '... Direction outbound');
is($p{Event}, 'StartApp', '... Event StartApp');
my @pairs = map { [ $_, $p{$_} ] } keys %p;
is($ans->{headers}{'X-Plivo-Signature-V3'}, sign_v3('POST', $ans->{url}, \@pairs, $ans->{nonce}),
	'... signed with V3 over the answer URL');
my %hp = %{ $answered->{hangup}{params} };
is($answered->{hangup}{url}, "$public/plivo/voice-status/$m3", 'the hang-up callback goes to the hangup_url');
is_deeply([ @hp{qw(CallStatus HangupCause HangupCauseCode HangupSource RequestUUID)} ],
	[ 'completed', 'NORMAL_CLEARING', '4000', 'Callee', $answered->{request_uuid} ],
	'... completed, NORMAL_CLEARING, 4000, by the callee, for the RequestUUID');
my @hpairs = map { [ $_, $hp{$_} ] } keys %hp;
is($answered->{hangup}{headers}{'X-Plivo-Signature-V3'},
	sign_v3('POST', $answered->{hangup}{url}, \@hpairs, $answered->{hangup}{headers}{'X-Plivo-Signature-V3-Nonce'}),
	'... signed with V3');

# A busy callee: no fetch, a hang-up with the busy cause.
$plivo->behave(call_outcome => 'busy', count => 1);
my ($v4, $m4, $req4) = placed_call();
my $busy;
ok(wait_until(10, sub { $busy = $plivo->calls_to($req4->{json}{to})->[0]; $busy->{hangup} }),
	'a busy call sends its hang-up callback');
ok(!$busy->{answer}, '... without fetching the answer URL');
is($busy->{hangup}{params}{CallStatus}, 'busy', '... CallStatus busy');
is($busy->{hangup}{params}{HangupCauseCode}, '3000', '... with a busy HangupCauseCode');

# An answering machine, with machine detection off (as here): the script is
# fetched.  No answer: no fetch, the no-answer cause.
$plivo->behave(call_outcome => 'machine', count => 1);
my ($v5, $m5, $req5) = placed_call();
my $machine;
ok(wait_until(10, sub { $machine = $plivo->calls_to($req5->{json}{to})->[0]; $machine->{hangup} }),
	'an answering machine hangs up');
ok($machine->{answer}, '... having fetched the script (machine detection is off)');
is($machine->{hangup}{params}{Machine}, 'true', '... and the hang-up says Machine');
$plivo->behave(call_outcome => 'no-answer', count => 1);
my ($v6, $m6, $req6) = placed_call();
my $noans;
ok(wait_until(10, sub { $noans = $plivo->calls_to($req6->{json}{to})->[0]; $noans->{hangup} }),
	'an unanswered call hangs up');
ok(!$noans->{answer}, '... without a fetch');
is_deeply([ @{ $noans->{hangup}{params} }{qw(CallStatus HangupCauseCode Duration)} ], [ 'no-answer', '3020', '0' ],
	'... no-answer, 3020, 0 s');

# With machine detection back on ("hangup"), a machine hears nothing.
reload_dispatcher($node, "plivo_otp.voice_machine_detection = on\n");
$plivo->behave(call_outcome => 'machine', count => 1);
my ($v7, $m7, $req7) = placed_call();
is($req7->{json}{machine_detection}, 'hangup', 'machine_detection is hangup again');
my $detected;
ok(wait_until(10, sub { $detected = $plivo->calls_to($req7->{json}{to})->[0]; $detected->{hangup} }),
	'a detected machine is hung up on');
ok(!$detected->{answer}, '... before any script is fetched');
is($detected->{hangup}{params}{HangupCause}, 'MACHINE_DETECTED', '... with HangupCause MACHINE_DETECTED');

# Re-fetches on demand: the same nonce again (a replay), unsigned, forged.
my $again = $plivo->call_fetch(request_uuid => $answered->{request_uuid}, nonce => $ans->{nonce});
is($again->{nonce}, $ans->{nonce}, 'call_fetch can replay the recorded nonce');
is($again->{headers}{'X-Plivo-Signature-V3'}, $ans->{headers}{'X-Plivo-Signature-V3'},
	'... with the very signature of the first fetch');
ok(defined $again->{status}, '... and returns the answer');
my $unsigned = $plivo->call_fetch(request_uuid => $answered->{request_uuid}, signature => 'none');
ok(!exists $unsigned->{headers}{'X-Plivo-Signature-V3'}, 'call_fetch can fetch unsigned');
my $bad = $plivo->call_fetch(request_uuid => $answered->{request_uuid}, signature => 'bad');
isnt($bad->{headers}{'X-Plivo-Signature-V3'},
	sign_v3('POST', $bad->{url}, [ map { [ $_, $bad->{params}{$_} ] } keys %{ $bad->{params} } ], $bad->{nonce}),
	'... or with a forged signature');

# ---- rows the dispatcher must not call ----

# Unconfigure the dispatcher (it claims nothing), so rows can be queued and
# spoilt as the table allows before it looks at them.
sub unconfigure
{
	my $offset = -s $node->logfile;
	$node->append_conf('postgresql.conf', "plivo_otp.auth_id = ''\n");
	$node->reload;
	$node->wait_for_log(qr/plivo_otp dispatcher is not configured/, $offset);
}

unconfigure();
my ($wiped_phone, $short_phone, $callerid_phone) = map { phone_n(++$n) } 1 .. 3;
my $wiped_vid = sql("SELECT plivo_otp.otp_send('$wiped_phone', 'voice')");
my $short_vid = sql("SELECT plivo_otp.otp_send('$short_phone', 'voice')");
sql("UPDATE plivo_otp.messages SET body = NULL WHERE verification_id = '$wiped_vid'");
sql("UPDATE plivo_otp.verifications SET expires_at = now() + interval '12 seconds' WHERE id = '$short_vid'");
reload_dispatcher($node, "plivo_otp.auth_id = '$AUTH_ID'\n");
ok(wait_until(10, sub { state_of($wiped_vid) eq 'refused' && state_of($short_vid) eq 'expired' }),
	'a call whose body was wiped is refused, one whose code has 12 s left expires');
like(message_row($node, $wiped_vid)->{last_error}, qr/no message body/, '... the first for want of a body');
is(scalar @{ $plivo->call_requests_to($wiped_phone) } + scalar @{ $plivo->call_requests_to($short_phone) }, 0,
	'... and neither is called');

# A row queued without a sender (as before senders were recorded) takes the
# settings' when sent; the only sender became a sender ID: no caller ID.
unconfigure();
my $callerid_vid = sql("SELECT plivo_otp.otp_send('$callerid_phone', 'voice')");
sql("UPDATE plivo_otp.messages SET sender = NULL WHERE verification_id = '$callerid_vid'");
reload_dispatcher($node, "plivo_otp.auth_id = '$AUTH_ID'\nplivo_otp.sender = 'ACMEOTP'\n");
ok(wait_until(10, sub { state_of($callerid_vid) eq 'refused' }),
	'a call without a caller ID is refused');
like(message_row($node, $callerid_vid)->{last_error}, qr/no caller ID/, '... saying so');
is(scalar @{ $plivo->call_requests_to($callerid_phone) }, 0, '... and not placed');
reload_dispatcher($node, "plivo_otp.sender = '14155550000'\n");

# ---- no public URL: calls are refused, saying why ----

reload_dispatcher($node, "plivo_otp.public_url = ''\n");
my $nopub_phone = phone_n(++$n);
my $nopub_vid = sql("SELECT plivo_otp.otp_send('$nopub_phone', 'voice')");
ok(wait_until(10, sub { state_of($nopub_vid) eq 'refused' }),
	'without plivo_otp.public_url a call is refused');
$row = message_row($node, $nopub_vid);
like($row->{last_error}, qr/public_url is not set/, '... saying public_url is not set');
is($row->{wiped}, 't', '... and its body is wiped');
is(scalar @{ $plivo->call_requests_to($nopub_phone) }, 0, '... and no call is placed');

# Nothing secret in the log.
my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$AUTH_TOKEN\E/, 'the auth token never reaches the log');
unlike($log, qr/\Q$token\E/, 'no answer token reaches the log');

$node->stop;
done_testing();
