# 024_voice_answer.pl: the listener serves a voice call's script at its
# answer URL, {public_url}/plivo/voice-answer/{token}, once, to a V3-signed
# fetch naming the call's RequestUUID while its code is pending; the digits
# it reads are the code otp_verify accepts; the sentence is wiped as it is
# served and the call shows 'in-progress'.  Every other fetch (second fetch,
# replay, forged, unsigned, V2-only, wrong token, bare path, wrong
# RequestUUID, expired, verified) gets one byte-identical no-code answer and
# changes nothing but its nonce.  A fetch that beats the dispatcher's
# recording of the call's UUID is held until it is recorded (or about 3 s);
# an 'unknown' outcome adopts the fetch's RequestUUID.  Hang-up callbacks at
# /plivo/voice-status become delivery events (V3 only): final statuses with
# their HangupCauseCode and its meaning in otp_status, monotonic and
# idempotent; also through ingest_callback().
#
# The dispatcher is left unconfigured (no auth_id): the tests mark each
# call's row as the dispatcher would once Plivo took it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time);

my $plivo = start_standin();
my ($node, $port) = listener_node('voice', $plivo, conf => "plivo_otp.auth_id = ''\n");
my $public = "http://127.0.0.1:$port";

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{CREATE SCHEMA test;
	CREATE FUNCTION test.answer_token(uuid) RETURNS text
	AS 'plivo_otp', 'plivo_otp_answer_token_sql' LANGUAGE C STRICT});

# A voice code whose call Plivo has taken (as the dispatcher records it:
# accepted, with the request UUID), or left in %o{state} ('sending',
# 'unknown': no UUID).  Returns a hash: vid, mid, token, phone, uuid.
my $n = 0;
sub voice_code
{
	my (%o) = @_;
	my $phone = phone_n(2400 + ++$n);
	my $uuid = sprintf('req-%04d-0000-4000-8000-000000000000', $n);
	my $vid = sql(($o{setup} // '') . "SELECT plivo_otp.otp_send('$phone', 'voice')");
	my $mid = sql("SELECT id FROM plivo_otp.messages WHERE verification_id = '$vid'");
	my $state = $o{state} // 'accepted';
	sql($state eq 'accepted'
		? "UPDATE plivo_otp.messages SET dispatch_state = 'accepted', provider_uuid = '$uuid',"
		  . " accepted_at = now() WHERE id = '$mid'"
		: "UPDATE plivo_otp.messages SET dispatch_state = '$state' WHERE id = '$mid'");
	return { vid => $vid, mid => $mid, phone => $phone, uuid => $uuid,
		token => sql("SELECT test.answer_token('$mid')") };
}

# What Plivo sends to an answer URL for call $uuid (its RequestUUID).
sub answer_fields
{
	my ($uuid, %extra) = @_;
	my %f = (CallUUID => "call-$uuid", RequestUUID => $uuid, ALegRequestUUID => $uuid,
		ALegUUID => "call-$uuid", CallStatus => 'in-progress', Direction => 'outbound',
		From => '14155550000', To => '14155552401', Event => 'StartApp', %extra);
	delete $f{$_} for grep { !defined $f{$_} } keys %f;
	return [ map { $_ => $f{$_} } sort keys %f ];
}

# A signed fetch of a call's answer URL: the request (signed_request's).
# %o: uuid (the RequestUUID sent), answer_token (default the call's), path, and
# signed_request's options (nonce, v3, v2, v3_token, method ...).
sub answer_request
{
	my ($call, %o) = @_;
	my $path = $o{path} // '/plivo/voice-answer/' . (delete($o{answer_token}) // $call->{token});
	return signed_request($port, path => $path,
		fields => answer_fields($o{uuid} // $call->{uuid}, %{ $o{extra} // {} }), %o);
}

sub fetch
{
	my ($call, %o) = @_;
	my $req = answer_request($call, %o);
	my $res = http_send($port, $req->{raw});
	$res->{request} = $req;
	return $res;
}

# An answer as compared byte for byte: status, headers but Date, body.
sub shape
{
	my ($r) = @_;
	return join("\n", $r->{status} // 'none',
		(map { "$_: $r->{headers}{$_}" } sort grep { $_ ne 'date' } keys %{ $r->{headers} // {} }),
		$r->{body} // '');
}

# Everything a fetch can change, but the nonces.
sub snapshot
{
	return sql(q{SELECT (SELECT count(*) FROM plivo_otp.delivery_events) || ' events; '
		|| (SELECT string_agg(concat_ws(':', id, dispatch_state, provider_uuid, body IS NULL,
				answered_at IS NULL, delivery_status), ', ' ORDER BY id) FROM plivo_otp.messages)
		|| (SELECT string_agg(concat_ws(':', id, state), ', ' ORDER BY id) FROM plivo_otp.verifications)});
}

sub nonces { return sql('SELECT count(*) FROM plivo_otp.callback_nonces'); }

my $no_code = '<Response><Hangup/></Response>';
my ($first_no_code, $first_no_code_res);

# A fetch that must get the no-code answer and change nothing (its nonce
# is recorded when it is validly V3-signed: $nonce_recorded).
sub no_code
{
	my ($what, $send, $nonce_recorded) = @_;
	my $before = snapshot();
	my $nonces = nonces();
	my $r = $send->();
	is($r->{status}, 200, "$what: answered 200");
	is($r->{body}, $no_code, "$what: the no-code answer") or diag explain $r;
	$first_no_code //= shape($r);
	$first_no_code_res //= $r;
	is(shape($r), $first_no_code, "$what: byte-identical to every other no-code answer");
	is(snapshot(), $before, "$what: nothing recorded, no row changed");
	is(nonces(), $nonces + ($nonce_recorded ? 1 : 0),
		"$what: " . ($nonce_recorded ? 'only its nonce recorded' : 'not even a nonce recorded'));
	return $r;
}

# The code the script reads (digits of the sentence in <Speak>).
sub spoken_code
{
	my ($xml) = @_;
	my ($said) = $xml =~ m{<Speak [^>]*>(.*?)</Speak>}s or return undef;
	my ($digits) = $said =~ /code is ([\d, ]+)/ or return undef;
	return $digits =~ s/\D//gr;
}

sub call_status
{
	my ($vid) = @_;
	return sql("SELECT concat_ws('|', dispatch_state, coalesce(delivery_status, ''),"
		  . " coalesce(provider_uuid, ''), coalesce(error_code, ''), coalesce(error_text, ''))"
		  . " FROM plivo_otp.otp_status('$vid')");
}

###########################################################################
# 1. The script, once.

my $ca = voice_code();
my $r = fetch($ca);
is($r->{status}, 200, 'a signed fetch of the answer URL is answered 200');
like($r->{headers}{'content-type'}, qr{^application/xml}, '... as application/xml');
like($r->{body},
	qr{^<Response><Wait length="1"/><Speak voice="WOMAN" language="en-US" loop="2">Your verification code is \d, \d, \d, \d\.</Speak><Hangup/></Response>$},
	'... with the Wait, Speak (voice, language, loop from the settings) and Hangup script');
my $code = spoken_code($r->{body});
is($code, learn_code($node, $ca->{vid}), 'the digits read are the code');
is(sql("SELECT body IS NULL AND answered_at IS NOT NULL FROM plivo_otp.messages WHERE id = '$ca->{mid}'"),
	't', 'the sentence is wiped and answered_at set as it is served');
is(call_status($ca->{vid}), "accepted|in-progress|$ca->{uuid}||",
	"otp_status shows the call 'in-progress' (answered)");
is(sql("SELECT params->>'CallUUID' FROM plivo_otp.delivery_events WHERE provider_uuid = '$ca->{uuid}'"),
	"call-$ca->{uuid}", "the in-progress event keeps the fetch's parameters");
is(sql("SELECT count(*) FROM plivo_otp.callback_nonces WHERE nonce = '$r->{request}{nonce}'"), 1,
	"the fetch's nonce is recorded");
my $served_raw = $r->{request}{raw};

my $script_answer = $r;
no_code('a second fetch (new nonce) of a served call', sub { fetch($ca) }, 1);
# The script and the no-code answer differ only in their body (and its length).
my $headers_of = sub {
	my ($res) = @_;
	my %h = %{ $res->{headers} };
	delete @h{qw(date content-length)};
	return join ', ', map { "$_: $h{$_}" } sort keys %h;
};
is($headers_of->($script_answer), $headers_of->($first_no_code_res),
	'the script is sent with the same headers as the no-code answer');
no_code('the served fetch replayed (same nonce)', sub { http_send($port, $served_raw) }, 0);
ok(sql("SELECT plivo_otp.otp_verify('$ca->{phone}', '$code')") eq 't',
	'otp_verify accepts the code the call read');
unlike(slurp_file($node->logfile), qr/<Speak|code is \d, \d/,
	'the script never reached the server log');

###########################################################################
# 2. Every other fetch: the same no-code answer, nothing changed.

my $cb = voice_code();
# A replayed nonce: first used by a fetch that was refused (wrong
# RequestUUID), then the genuine fetch with that nonce is a replay.
my $nonce = new_nonce();
no_code('a fetch naming another RequestUUID', sub { fetch($cb, uuid => 'req-other', nonce => $nonce) }, 1);
no_code("the call's genuine fetch with that used nonce", sub { fetch($cb, nonce => $nonce) }, 0);
no_code('a forged signature (another token)', sub { fetch($cb, v3_token => 'not-the-token') }, 0);
no_code('an unsigned fetch', sub { fetch($cb, v3 => 0) }, 0);
no_code('a V2-only fetch (voice needs V3)', sub { fetch($cb, v3 => 0, v2 => 1) }, 0);
no_code('a body altered after signing', sub {
	my $req = answer_request($cb, uuid => $cb->{uuid});
	http_send($port, $req->{raw} =~ s/CallStatus=in-progress/CallStatus=completed-x/r) }, 0);
no_code('a wrong token', sub {
	fetch($cb, answer_token => '0badc0de-0000-4000-8000-000000000000') }, 1);
no_code('another call\'s token', sub { fetch($cb, answer_token => $ca->{token}) }, 1);
no_code('the bare answer path', sub { fetch($cb, path => '/plivo/voice-answer') }, 0);
# Every path under the route gets the no-code answer, never a 404.
no_code('an upper-case token', sub { fetch($cb, answer_token => uc($cb->{token})) }, 0);
no_code('a token with a trailing slash', sub { fetch($cb, path => "/plivo/voice-answer/$cb->{token}/") }, 0);
no_code('a short token', sub { fetch($cb, answer_token => substr($cb->{token}, 0, 35)) }, 0);
no_code('a path that only begins like the route', sub { fetch($cb, path => '/plivo/voice-answerX') }, 0);
# An error in the fetch's transaction (a sentence that does not open): no
# 500 either, and nothing recorded (the nonce rolled back with it).
my $z = voice_code();
sql("UPDATE plivo_otp.messages SET body = '\\x00' WHERE id = '$z->{mid}'");
no_code('a fetch whose transaction fails', sub { fetch($z) }, 0);
no_code('a fetch with only ALegRequestUUID, another one', sub {
	fetch($cb, uuid => 'req-other', extra => { RequestUUID => undef }) }, 1);
is(sql("SELECT body IS NOT NULL FROM plivo_otp.messages WHERE id = '$cb->{mid}'"), 't',
	'after all that, the call still has its sentence');
$r = fetch($cb, extra => { RequestUUID => undef }, method => 'GET');
is(spoken_code($r->{body}), learn_code($node, $cb->{vid}),
	'and a genuine GET fetch (ALegRequestUUID only) gets the script');

# The dispatcher's one-second tick wipes the sentence of a call whose code
# ended; each fetch below comes after it, so its snapshot compares a settled
# row (the listener refuses such a code whether or not the wipe ran).
sub wiped_by_dispatcher
{
	my ($call, $why) = @_;
	ok(wait_until(10, sub { sql("SELECT body IS NULL FROM plivo_otp.messages WHERE id = '$call->{mid}'") eq 't' }),
		"the dispatcher wiped the sentence of a call whose code is $why");
}

my $c = voice_code();
sql("UPDATE plivo_otp.verifications SET expires_at = now() - interval '1 second' WHERE id = '$c->{vid}'");
wiped_by_dispatcher($c, 'expired');
no_code('a fetch after the code expired', sub { fetch($c) }, 1);

my $d = voice_code();
is(sql("SELECT plivo_otp.otp_verify('$d->{phone}', '" . learn_code($node, $d->{vid}) . "')"), 't',
	'a code verified before its call answered');
wiped_by_dispatcher($d, 'approved');
no_code('a fetch after otp_verify approved the code', sub { fetch($d) }, 1);

my $e = voice_code();
sql("SELECT plivo_otp.otp_cancel('$e->{vid}')");
wiped_by_dispatcher($e, 'canceled');
no_code('a fetch after otp_cancel', sub { fetch($e) }, 1);

# The sentence is XML-escaped.
my $x = voice_code(setup => q{SET plivo_otp.voice_template = 'Code <{code}> & "more"'; });
$r = fetch($x);
like($r->{body}, qr{<Speak [^>]*>Code &lt;\d, \d, \d, \d&gt; &amp; &quot;more&quot;</Speak>},
	"the sentence's XML characters are escaped");

###########################################################################
# 3. Races with the dispatcher.

# (a) The call was placed, its UUID not recorded yet: the answer is held
# until the dispatcher records it.
my $s = voice_code(state => 'sending');
my $req = answer_request($s);
my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
  or die "connect: $!";
my $t0 = time;
syswrite($sock, $req->{raw});
select(undef, undef, undef, 0.3);
# The held fetch holds nothing else up.
my $t1 = time;
is(fetch($cb)->{body}, $no_code, 'meanwhile another fetch is answered');
ok(time - $t1 < latency_bound(0.5), '... at once, while the first one is held');
select(undef, undef, undef, 1.0 - (time - $t0)) if time - $t0 < 1.0;
sql("UPDATE plivo_otp.messages SET dispatch_state = 'accepted', provider_uuid = '$s->{uuid}',"
	  . " accepted_at = now() WHERE id = '$s->{mid}'");
$r = read_response($sock, 10);
my $took = time - $t0;
close $sock;
is(spoken_code($r->{body}), learn_code($node, $s->{vid}),
	"a fetch while the row is 'sending' gets the script once the UUID is recorded");
ok($took >= 0.9 && $took < 3, "... held until then (answered after ${took}s)");

# A byte-identical replay that comes while the original is held: the first
# arrival owns the nonce; the replay gets the no-code answer at once.
my $s3 = voice_code(state => 'sending');
my $req_a = answer_request($s3);
my $sock_a = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
  or die "connect: $!";
syswrite($sock_a, $req_a->{raw});
select(undef, undef, undef, 0.3);
$t1 = time;
my $r_b = http_send($port, $req_a->{raw});
my $b_took = time - $t1;
is($r_b->{body}, $no_code, 'a replay of a held fetch gets the no-code answer');
ok($b_took < latency_bound(0.5), "... at once, not held itself (${b_took}s)");
sql("UPDATE plivo_otp.messages SET dispatch_state = 'accepted', provider_uuid = '$s3->{uuid}',"
	  . " accepted_at = now() WHERE id = '$s3->{mid}'");
$r = read_response($sock_a, 10);
close $sock_a;
is(spoken_code($r->{body}), learn_code($node, $s3->{vid}),
	'... and the held original still gets the script once the UUID is recorded');

# ... but not for ever: about 3 s, then the no-code answer.
my $s2 = voice_code(state => 'sending');
$t0 = time;
no_code("a fetch while the row stays 'sending'", sub { fetch($s2) }, 1);
$took = time - $t0;
ok($took >= 2.5 && $took < 6, "... answered after about 3 s (${took}s)");

# (b) The outcome was 'unknown': the fetch's RequestUUID is adopted.
my $u = voice_code(state => 'unknown');
$r = fetch($u);
is(spoken_code($r->{body}), learn_code($node, $u->{vid}),
	"a fetch for a call whose outcome was 'unknown' gets the script");
is(call_status($u->{vid}), "accepted|in-progress|$u->{uuid}||",
	'... and its RequestUUID is adopted as the UUID (accepted)');
# Not a UUID another message has.
my $u2 = voice_code(state => 'unknown');
no_code("an 'unknown' call's fetch naming another call's UUID", sub { fetch($u2, uuid => $ca->{uuid}) }, 1);

###########################################################################
# 4. Hang-up callbacks.

# A hang-up callback for call $uuid; %o: status, cause, path, and
# signed_request's options.
sub hangup
{
	my ($uuid, %o) = @_;
	my %f = (CallUUID => "call-$uuid", RequestUUID => $uuid, ALegRequestUUID => $uuid,
		CallStatus => $o{status} // 'completed', HangupCauseCode => $o{cause} // '4010',
		HangupCause => 'NORMAL_CLEARING', HangupCauseName => 'End Of XML Instructions',
		HangupSource => 'Answer XML', Duration => '12', BillDuration => '60',
		Direction => 'outbound', From => '14155550000', To => '14155552401', Event => 'Hangup');
	delete $f{HangupCauseCode} if $o{no_cause_code};
	my $req = signed_request($port, path => $o{path} // '/plivo/voice-status',
		fields => [ map { $_ => $f{$_} } sort keys %f ], %o);
	my $res = http_send($port, $req->{raw});
	$res->{request} = $req;
	return $res;
}

$r = hangup($ca->{uuid}, path => "/plivo/voice-status/$ca->{mid}");
is($r->{status}, 200, 'a signed hang-up callback (per-message URL) is answered 200');
is(call_status($ca->{vid}), "accepted|completed|$ca->{uuid}|4010|end of the call's XML instructions",
	'otp_status: completed, HangupCauseCode and its meaning');
is(sql("SELECT params->>'HangupSource' || '/' || (params->>'BillDuration') FROM plivo_otp.delivery_events"
	  . " WHERE provider_uuid = '$ca->{uuid}' AND status = 'completed'"),
	'Answer XML/60', "the event keeps the callback's parameters");
my $before = snapshot();
is(hangup($ca->{uuid}, status => 'in-progress', cause => '')->{status}, 200,
	'a late in-progress is answered 200');
is(call_status($ca->{vid}), "accepted|completed|$ca->{uuid}|4010|end of the call's XML instructions",
	'... and does not move completed back');
my $events = callback_count($node, $ca->{uuid});
is(hangup($ca->{uuid})->{status}, 200, 'the same completed again (new nonce) is answered 200');
is(callback_count($node, $ca->{uuid}), $events, '... and stores nothing new (a duplicate)');
is(hangup($ca->{uuid}, status => 'failed', cause => '2010')->{status}, 200,
	'another final status is answered 200');
is(call_status($ca->{vid}), "accepted|completed|$ca->{uuid}|4010|end of the call's XML instructions",
	'... and does not replace the first final status');

# Unanswered calls: busy and no-answer with their causes.
my $f = voice_code();
is(hangup($f->{uuid}, status => 'busy', cause => '3010')->{status}, 200, 'busy (cause 3010)');
is(call_status($f->{vid}), "accepted|busy|$f->{uuid}|3010|", 'otp_status: busy, 3010 (no known meaning)');
is(sql("SELECT body IS NULL FROM plivo_otp.messages WHERE id = '$f->{mid}'"), 't',
	"a final status wipes the unanswered call's sentence at once");
my $g = voice_code();
is(hangup($g->{uuid}, status => 'failed', cause => '2000')->{status}, 200, 'failed (cause 2000)');
is(call_status($g->{vid}), "accepted|failed|$g->{uuid}|2000|invalid destination number",
	'otp_status: failed, 2000 and its meaning');

# A final status without HangupCauseCode shows its HangupCause.
my $j = voice_code();
is(hangup($j->{uuid}, status => 'completed', no_cause_code => 1)->{status}, 200,
	'a hang-up callback without HangupCauseCode');
is(call_status($j->{vid}), "accepted|completed|$j->{uuid}||NORMAL_CLEARING",
	'... otp_status shows its HangupCause as error_text');

# A call whose outcome was 'unknown': its own hang-up URL adopts the UUID.
my $k = voice_code(state => 'unknown');
is(hangup($k->{uuid}, status => 'no-answer', cause => '3000', path => "/plivo/voice-status/$k->{mid}")
	->{status}, 200, "an 'unknown' call's hang-up callback on its own URL");
is(call_status($k->{vid}), "accepted|no-answer|$k->{uuid}|3000|",
	'... adopts its RequestUUID (accepted) and applies the status');
my $l = voice_code(state => 'unknown');
is(hangup($l->{uuid}, status => 'no-answer', path => '/plivo/voice-status')->{status}, 200,
	"an 'unknown' call's hang-up callback on the bare URL");
is(call_status($l->{vid}), 'unknown||||', '... names no message: nothing adopted (it waits)');
is(hangup($ca->{uuid}, status => 'busy', path => "/plivo/voice-status/$l->{mid}")->{status}, 200,
	"a hang-up callback naming another message's UUID on an 'unknown' call's URL");
is(call_status($l->{vid}), 'unknown||||', '... adopts nothing');

# V3 only; unsigned refused; a callback whose call UUID is not recorded yet waits.
$before = snapshot();
my $nonces = nonces();
$r = hangup($g->{uuid}, status => 'completed', v3 => 0, v2 => 1, path => "/plivo/voice-status/$g->{mid}");
is($r->{status}, 403, 'a V2-only hang-up callback is refused with 403');
$r = hangup($g->{uuid}, status => 'completed', v3 => 0);
is($r->{status}, 403, 'an unsigned hang-up callback is refused with 403');
is(snapshot() . nonces(), $before . $nonces, '... and they record nothing');

my $h = voice_code(state => 'sending');
is(hangup($h->{uuid}, status => 'no-answer', cause => '3000')->{status}, 200,
	"a hang-up callback before the call's UUID is recorded is answered 200");
is(sql("SELECT applied_at IS NULL FROM plivo_otp.delivery_events WHERE provider_uuid = '$h->{uuid}'"), 't',
	'... and waits');
sql("UPDATE plivo_otp.messages SET dispatch_state = 'accepted', provider_uuid = '$h->{uuid}' WHERE id = '$h->{mid}'");
ok(wait_until(5, sub { call_status($h->{vid}) eq "accepted|no-answer|$h->{uuid}|3000|" }),
	'... and applies once the UUID is recorded') or diag call_status($h->{vid});

# ingest_callback takes a hang-up callback too (V3 only).
my $i = voice_code();
my $url = "$public/plivo/voice-status";
my %params = (CallUUID => 'call-i', RequestUUID => $i->{uuid}, CallStatus => 'busy',
	HangupCauseCode => '3010', HangupCause => 'USER_BUSY');
my $nv = new_nonce();
my %headers = ('X-Plivo-Signature-V3' => sign_v3('POST', $url, [ map { [ $_, $params{$_} ] } keys %params ], $nv),
	'X-Plivo-Signature-V3-Nonce' => $nv);
my $json = JSON::PP->new->canonical;
my ($p_json, $h_json) = map { $json->encode($_) =~ s/'/''/gr } \%params, \%headers;
is(sql("SELECT plivo_otp.ingest_callback('POST', '$url', '$p_json', '$h_json')"), 'recorded',
	'ingest_callback records a V3-signed hang-up callback');
is(call_status($i->{vid}), "accepted|busy|$i->{uuid}|3010|", '... and otp_status shows it');
my ($ret, $out, $err) = $node->psql('postgres',
	"SELECT plivo_otp.ingest_callback('POST', '$url', '$p_json', '$h_json')");
like($err, qr/callback nonce was already used/, 'ingest_callback refuses its replay');
# ... and on the call's own hang-up URL adopts an 'unknown' call's UUID.
my $m = voice_code(state => 'unknown');
$url = "$public/plivo/voice-status/$m->{mid}";
%params = (CallUUID => 'call-m', RequestUUID => $m->{uuid}, CallStatus => 'busy',
	HangupCauseCode => '3010', HangupCause => 'USER_BUSY');
$nv = new_nonce();
%headers = ('X-Plivo-Signature-V3' => sign_v3('POST', $url, [ map { [ $_, $params{$_} ] } keys %params ], $nv),
	'X-Plivo-Signature-V3-Nonce' => $nv);
($p_json, $h_json) = map { $json->encode($_) =~ s/'/''/gr } \%params, \%headers;
is(sql("SELECT plivo_otp.ingest_callback('POST', '$url', '$p_json', '$h_json')"), 'recorded',
	"ingest_callback records a hang-up callback on an 'unknown' call's own URL");
is(call_status($m->{vid}), "accepted|busy|$m->{uuid}|3010|", '... which adopts its RequestUUID');

$node->stop;
done_testing();
