# 028_dispatcher_review.pl: the dispatcher-side fixes of the voice review
# (issue 9).  M2: a code locked by rolled-back failures has its seal wiped
# by the dispatcher within seconds, and so has a code with too little life
# left to be delivered again.  S1: refused voice fallbacks (never sent)
# count in no limit, nor in the global count reloaded after a restart.  S3:
# a call needs ring_timeout + 15 s of life, at the claim, at a retry and for
# otp_resend by voice.  S7: a failing periodic step does not roll back the
# seal wipes.  S9: with max_inflight = 2 and the Message API slow, an SMS
# backlog does not hold up a call.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $plivo = start_standin();
my ($node, $port) = listener_node('review', $plivo,
	conf => "plivo_otp.max_inflight = 20\nplivo_otp.max_requests_per_second = 100\n"
	  . "plivo_otp.resend_interval = 0\nplivo_otp.global_max_sends_per_hour = 3\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

# The stand-in's calls never fetch their script here (bodies stay put).
$plivo->call_timing(answer_delay => 60, hangup_delay => 0.2);

my $n = 600;

# The dispatch_state of a verification's latest message ('' before it has one).
sub state_of
{
	my ($vid) = @_;
	my $row = message_row($node, $vid);
	return $row ? $row->{dispatch_state} : '';
}

sub sealed
{
	my ($vid) = @_;
	return sql("SELECT code_sealed IS NOT NULL FROM plivo_otp.verifications WHERE id = '$vid'");
}

# Rows of a refused voice fallback, as fallback.c leaves them (never sent).
sub refused_fallback
{
	my ($vid, $phone) = @_;
	sql("INSERT INTO plivo_otp.messages (id, verification_id, channel, phone, dispatch_state,"
		  . " next_try_at, expires_at, created_at, updated_at, origin, last_error)"
		  . " VALUES (gen_random_uuid(), '$vid', 'voice', '$phone', 'canceled', now(),"
		  . " now() + interval '10 minutes', now(), now(), 'fallback', 'not called: test')");
}

# ---- S1: the global count reloaded after a restart ----

# Three codes for one verification's refused fallbacks (the unique index
# allows one per code), made while the cap is off.
reload_dispatcher($node, "plivo_otp.global_max_sends_per_hour = 0\n");
my @fb;
for (1 .. 3)
{
	my $phone = phone_n(++$n);
	my $vid = sql("SELECT plivo_otp.otp_send('$phone')");
	push @fb, [ $vid, $phone ];
}
refused_fallback(@$_) for @fb;
# Only the refused fallbacks are left in the last hour.
sql("UPDATE plivo_otp.messages SET created_at = now() - interval '2 hours' WHERE origin <> 'fallback'");
$node->append_conf('postgresql.conf', "plivo_otp.global_max_sends_per_hour = 3\n");
$node->restart;
my $ok = eval { sql("SELECT plivo_otp.otp_send('" . phone_n(++$n) . "')"); 1 };
ok($ok, 'after a restart, refused fallbacks do not count in global_max_sends_per_hour')
  or diag($@);
reload_dispatcher($node, "plivo_otp.global_max_sends_per_hour = 1000\n");

# ---- S1: the per-number cap ----

reload_dispatcher($node, "plivo_otp.number_max_sends = 2\n");
{
	my $phone = phone_n(++$n);
	my $vid = sql("SELECT plivo_otp.otp_send('$phone')");
	refused_fallback($vid, $phone);
	my $second = eval { sql("SELECT plivo_otp.otp_resend('$vid', 'sms')"); 1 };
	ok($second, 'a refused fallback does not count in number_max_sends') or diag($@);
}
reload_dispatcher($node, "plivo_otp.number_max_sends = 5\n");

# ---- M2: locked by rolled-back failures ----

{
	my $phone = phone_n(++$n);
	my $vid = sql("SELECT plivo_otp.otp_send('$phone')");
	is(sealed($vid), 't', 'a new code is sealed');
	for (1 .. 5)
	{
		sql("BEGIN; SELECT plivo_otp.otp_check('$phone', 'wrong'); ROLLBACK;");
	}
	is(sql("SELECT state FROM plivo_otp.verifications WHERE id = '$vid'"), 'pending',
		'the rolled-back failures left the row pending');
	ok(wait_until(5, sub { sealed($vid) eq 'f' }),
		'the dispatcher wipes the seal of a code locked by rolled-back failures');

	# Too little life left to be delivered again (min(60, code_ttl / 2)).
	my $vid2 = sql("SELECT plivo_otp.otp_send('" . phone_n(++$n) . "')");
	sql("UPDATE plivo_otp.verifications SET expires_at = now() + interval '30 seconds' WHERE id = '$vid2'");
	ok(wait_until(5, sub { sealed($vid2) eq 'f' }),
		'the seal of a code that can no longer be re-delivered is wiped before it expires');
}

# ---- S7: a failing periodic step does not roll back the wipes ----

{
	my $orphan = sql("SELECT plivo_otp.otp_send('" . phone_n(++$n) . "')");
	ok(wait_until(10, sub { state_of($orphan) eq 'accepted' }),
		'a code is sent');
	sql("UPDATE plivo_otp.verifications SET state = 'approved' WHERE id = '$orphan'");
	sql(q{CREATE FUNCTION public.no_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.dispatch_state = 'pending' AND NEW.dispatch_state = 'canceled' THEN
				RAISE EXCEPTION 'test: cancel refused';
			END IF;
			RETURN NEW;
		END $$});
	sql("CREATE TRIGGER no_cancel BEFORE UPDATE ON plivo_otp.messages"
		  . " FOR EACH ROW EXECUTE FUNCTION public.no_cancel()");
	sql("UPDATE plivo_otp.messages SET dispatch_state = 'pending' WHERE verification_id = '$orphan'");
	my $offset = -s $node->logfile;
	ok($node->wait_for_log(qr/test: cancel refused/, $offset), 'cancel_orphaned fails every tick');
	my $vid = sql("SELECT plivo_otp.otp_send('" . phone_n(++$n) . "')");
	sql("UPDATE plivo_otp.verifications SET expires_at = now() - interval '1 second' WHERE id = '$vid'");
	ok(wait_until(3, sub { sealed($vid) eq 'f' }),
		'... yet the seal of an expired code is wiped');
	sql("DROP TRIGGER no_cancel ON plivo_otp.messages; DROP FUNCTION public.no_cancel()");
}

# ---- S3: a call needs ring_timeout + 15 s of life ----

reload_dispatcher($node, "plivo_otp.ring_timeout = '30s'\n");
{
	my $phone = phone_n(++$n);
	my $vid = sql("SET plivo_otp.code_ttl = '40s'; SELECT plivo_otp.otp_send('$phone', 'voice')");
	ok(wait_until(5, sub { state_of($vid) eq 'expired' }),
		'a call with less than ring_timeout + 15 s of life is not placed');
	is(scalar @{ $plivo->call_requests_to($phone) }, 0, '... no Make Call request');
}
reload_dispatcher($node, "plivo_otp.ring_timeout = '10s'\n");
{
	# 38 s of life, 503 with Retry-After 15: a retry would have < 23 s, not more than 10 + 15.
	my $phone = phone_n(++$n);
	$plivo->behave(mode => '503', count => 1, retry_after => 15);
	my $vid = sql("SET plivo_otp.code_ttl = '38s'; SELECT plivo_otp.otp_send('$phone', 'voice')");
	ok(wait_until(5, sub { state_of($vid) eq 'expired' }),
		'a call is not retried with less than ring_timeout + 15 s of life left');
	is(scalar @{ $plivo->call_requests_to($phone) }, 1, '... one Make Call request only');
}
reload_dispatcher($node, "plivo_otp.ring_timeout = '120s'\n");
{
	my $phone = phone_n(++$n);
	my $vid = sql("SELECT plivo_otp.otp_send('$phone')");
	sql("UPDATE plivo_otp.verifications SET expires_at = now() + interval '90 seconds' WHERE id = '$vid'");
	my ($rc, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT plivo_otp.otp_resend('$vid', 'voice')");
	like($err, qr/55000/, 'otp_resend by voice with 90 s left and ring_timeout 120 s: 55000');
	like($err, qr/135 seconds/, '... saying how much life a call needs');
	my $sms = eval { sql("SELECT plivo_otp.otp_resend('$vid', 'sms')"); 1 };
	ok($sms, '... while by SMS it is re-delivered') or diag($@);
}
reload_dispatcher($node, "plivo_otp.ring_timeout = '30s'\n");

# ---- S9: an SMS backlog behind a slow Message API does not hold up a call ----

reload_dispatcher($node, "plivo_otp.max_inflight = 2\n");
{
	$plivo->behave(mode => 'slow', count => 3, delay => 5);
	my @sms = map { sql("SELECT plivo_otp.otp_send('" . phone_n(++$n) . "')") } 1 .. 4;
	usleep(500_000);
	my $t0 = time;
	my $vid = sql("SELECT plivo_otp.otp_send('" . phone_n(++$n) . "', 'voice')");
	ok(wait_until(1.5, sub { !grep { state_of($vid) eq $_ } ('', 'pending') }),
		'with max_inflight = 2 and slow SMS, the call is claimed at once');
	note(sprintf('the call left the queue after %.2f s', time - $t0));
	ok(wait_until(20, sub { (grep { state_of($_) eq 'accepted' } @sms) == 4 }),
		'... and the SMS backlog drains');
}

$node->stop;
done_testing();
