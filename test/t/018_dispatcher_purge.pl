# 018_dispatcher_purge.pl: purging keeps up with any rate.  20,000 old
# verifications with their messages, 20,000 old delivery events and 20,000
# old nonces (about an hour at 5 codes a second, which the old purge of 1000
# rows per table a minute would never catch up with) are gone within seconds
# of the dispatcher's start, in batches that leave sending going on; recent
# rows stay.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $plivo = start_standin();
my $node = new_node('purge', conf => dispatcher_conf($plivo));

sub sql { my ($text) = @_; return $node->safe_psql('postgres', $text); }

sub old_rows
{
	return sql(q{SELECT (SELECT count(*) FROM plivo_otp.verifications WHERE created_at < now() - interval '8 days')
		|| ',' || (SELECT count(*) FROM plivo_otp.messages WHERE created_at < now() - interval '8 days')
		|| ',' || (SELECT count(*) FROM plivo_otp.delivery_events WHERE received_at < now() - interval '8 days')
		|| ',' || (SELECT count(*) FROM plivo_otp.callback_nonces WHERE seen_at < now() - interval '2 days')});
}

# A recent code, sent and accepted: it must survive.
my $recent = sql("SELECT plivo_otp.otp_send('" . phone_n(1) . "')");
ok(wait_until(5, sub { @{ $plivo->messages_to(phone_n(1)) } == 1 }), 'a recent code is sent');

my $n = 20000;
sql(qq{INSERT INTO plivo_otp.verifications (id, phone, purpose, channel, code_digest, state,
	  max_attempts, created_at, expires_at, updated_at)
	SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, '+1415556' || lpad(i::text, 4, '0'),
	  'default', 'sms', decode(repeat('00', 32), 'hex'), 'expired', 5,
	  now() - interval '9 days', now() - interval '9 days' + interval '10 minutes', now() - interval '9 days'
	FROM generate_series(1, $n) i;
	INSERT INTO plivo_otp.messages (id, verification_id, channel, phone, dispatch_state, provider_uuid,
	  next_try_at, expires_at, created_at, updated_at)
	SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'sms',
	  '+1415556' || lpad(i::text, 4, '0'), 'accepted', 'old-' || i,
	  now() - interval '9 days', now() - interval '9 days', now() - interval '9 days', now() - interval '9 days'
	FROM generate_series(1, $n) i;
	INSERT INTO plivo_otp.delivery_events (provider_uuid, status, params, received_at, applied_at)
	SELECT 'old-' || i, 'delivered', '{}', now() - interval '9 days', now() - interval '9 days'
	FROM generate_series(1, $n) i;
	INSERT INTO plivo_otp.callback_nonces (nonce, seen_at)
	SELECT 'old-nonce-' || i, now() - interval '3 days' FROM generate_series(1, $n) i;});
is(old_rows(), "$n,$n,$n,$n", "$n old rows in each table");

# The dispatcher purges when it starts (and every minute after).
my $pid = dispatcher_pid($node);
sql("SELECT pg_terminate_backend($pid)");
ok(wait_until(10, sub { my $p = dispatcher_pid($node); $p ne '' && $p ne $pid }), 'the dispatcher restarts');
my $t0 = time;
my $during = sql("SELECT plivo_otp.otp_send('" . phone_n(2) . "')");
my $committed = time;
my $left = old_rows();
wait_until(5, sub { @{ $plivo->requests_to(phone_n(2)) } == 1 });
my $lat = ($plivo->requests_to(phone_n(2))->[0] // { time => 99 })->{time} - $committed;
ok(wait_until(20, sub { old_rows() eq '0,0,0,0' }), 'every old row is purged: ' . old_rows());
my $took = time - $t0;
cmp_ok($took, '<', 15, sprintf('within %.1f s of the start', $took));
cmp_ok($lat, '<', latency_bound(0.3), sprintf('a code committed while old rows remained (%s) reached Plivo %.0f ms after',
	$left, $lat * 1000));
is(sql("SELECT count(*) FROM plivo_otp.verifications WHERE id IN ('$recent', '$during')"), '2',
	'recent verifications stay');
is(sql("SELECT count(*) FROM plivo_otp.messages WHERE verification_id IN ('$recent', '$during')"), '2',
	'and their messages');
unlike(slurp_file($node->logfile), qr/ERROR|terminated by signal/, 'no error, no crash');

$node->stop;
done_testing();
