# 029_retention.pl: retention and redaction, with time moved by setting
# timestamps.  With plivo_otp.retention = 1 day and plivo_otp.redact_after =
# 10 min: a finished code older than the retention vanishes with its message,
# its delivery events and old nonces; a finished code 3 hours old stays with
# its number masked (verification, message, the callback's To) and its
# idempotency key gone, and otp_status and otp_check still answer sensibly;
# one 30 minutes old keeps its number (the per-number limits' window,
# plivo_otp.number_window = 1 h, is a floor under redact_after); a code still
# pending stays whole however old.  Then a minute of rows at 1,000 codes a
# second (verification, message, 3 events, 3 nonces each) is purged faster
# than it arrived.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $plivo = start_standin(args => [ '--auto-callbacks', 'queued,sent,delivered' ]);
my ($node, $port) = listener_node('retention', $plivo,
	conf => "plivo_otp.retention = '1d'\nplivo_otp.redact_after = '10min'\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Send a code, wait for its three callbacks; approve it unless told not to.
sub finished_code
{
	my ($phone, %opts) = @_;
	my $key = $opts{key} ? "'$opts{key}'" : 'NULL';
	my $vid = sql("SELECT plivo_otp.otp_send('$phone', 'sms', 'default', $key)");
	wait_until(10, sub {
		sql("SELECT delivery_status FROM plivo_otp.otp_status('$vid')") eq 'delivered'
		  && sql("SELECT count(*) FROM plivo_otp.delivery_events e JOIN plivo_otp.messages m"
			  . " ON m.provider_uuid = e.provider_uuid WHERE m.verification_id = '$vid'") == 3 })
	  or die "the code to $phone was not delivered";
	my $code = learn_code($node, $vid);
	is(sql("SELECT plivo_otp.otp_verify('$phone', '$code')"), 't', "code to $phone approved")
	  unless $opts{pending};
	return ($vid, $code);
}

# Move a code, its messages and their events $age into the past.
sub age
{
	my ($vid, $age, %opts) = @_;
	my $exp = $opts{keep_expiry} ? 'expires_at' : "expires_at - interval '$age'";
	sql(qq{UPDATE plivo_otp.delivery_events e SET received_at = received_at - interval '$age'
		FROM plivo_otp.messages m WHERE m.provider_uuid = e.provider_uuid AND m.verification_id = '$vid';
		UPDATE plivo_otp.messages SET created_at = created_at - interval '$age',
		  updated_at = updated_at - interval '$age', next_try_at = next_try_at - interval '$age',
		  expires_at = $exp WHERE verification_id = '$vid';
		UPDATE plivo_otp.verifications SET created_at = created_at - interval '$age',
		  updated_at = updated_at - interval '$age', expires_at = $exp WHERE id = '$vid';});
}

# phone of the verification | of its message | To of its events (distinct) | idempotency keys
sub numbers_of
{
	my ($vid) = @_;
	return sql(qq{SELECT concat_ws('|', v.phone, m.phone,
		  (SELECT string_agg(DISTINCT e.params ->> 'To', ',') FROM plivo_otp.delivery_events e
		   WHERE e.provider_uuid = m.provider_uuid),
		  coalesce(v.idempotency_key, '-') || ',' || coalesce(m.idempotency_key, '-'))
		FROM plivo_otp.verifications v JOIN plivo_otp.messages m ON m.verification_id = v.id
		WHERE v.id = '$vid'});
}

my ($old, $old_code) = finished_code(phone_n(1));
my ($mid, $mid_code) = finished_code(phone_n(2), key => 'order-' . phone_n(2));
my ($young) = finished_code(phone_n(3));
my ($pending) = finished_code(phone_n(4), pending => 1);
age($old, '3 days');
age($mid, '3 hours');
age($young, '30 minutes');
age($pending, '3 days', keep_expiry => 1);
sql(q{INSERT INTO plivo_otp.callback_nonces (nonce, seen_at) VALUES ('old-nonce', now() - interval '3 days'),
	('young-nonce', now() - interval '3 hours')});
my $digits2 = substr(phone_n(2), 1);
is(numbers_of($mid), phone_n(2) . '|' . phone_n(2) . "|$digits2|order-" . phone_n(2) . ',order-' . phone_n(2),
	'before: the 3-hour-old code holds its number everywhere, and its idempotency key');

# Send counters (locks and limits per number and key) idle for longer than
# every window count nothing: age all but one of them past that.
my $counters = sql('SELECT count(*) FROM plivo_otp.send_counters');
ok($counters >= 2, "the sends left counter rows ($counters)");
sql(q{UPDATE plivo_otp.send_counters SET touched_at = now() - interval '3 days'
	WHERE key <> (SELECT key FROM plivo_otp.send_counters ORDER BY touched_at DESC LIMIT 1)});

# The dispatcher purges and redacts when it starts (and every minute after).
my $pid = dispatcher_pid($node);
sql("SELECT pg_terminate_backend($pid)");
ok(wait_until(10, sub { my $p = dispatcher_pid($node); $p ne '' && $p ne $pid }), 'the dispatcher restarts');

ok(wait_until(20, sub { sql("SELECT count(*) FROM plivo_otp.verifications WHERE id = '$old'") == 0 }),
	'the code older than the retention is purged');
is(sql("SELECT count(*) FROM plivo_otp.messages WHERE verification_id = '$old'"), '0', 'with its message');
is(sql("SELECT count(*) FROM plivo_otp.delivery_events WHERE received_at < now() - interval '2 days'"), '0',
	'and its delivery events');
is(sql("SELECT string_agg(nonce, ',') FROM plivo_otp.callback_nonces WHERE nonce LIKE '%-nonce'"), 'young-nonce',
	'an old nonce is purged, a young one stays');
is(sql("SELECT count(*) FROM plivo_otp.otp_status('$old')"), '0', 'otp_status knows the purged code no more');
ok(wait_until(20, sub { sql(q{SELECT count(*) FROM plivo_otp.send_counters
	WHERE touched_at < now() - interval '2 days'}) == 0 }), 'idle send counters are purged');
ok(sql('SELECT count(*) FROM plivo_otp.send_counters') >= 1, 'the counter in use stays');

my $masked2 = sql("SELECT plivo_otp.phone_masked('" . phone_n(2) . "')");
like($masked2, qr/^\+1415\*+\d\d$/, "the masked form: $masked2");
my $masked_to = sql("SELECT plivo_otp.phone_masked('$digits2')");
ok(wait_until(20, sub { numbers_of($mid) eq "$masked2|$masked2|$masked_to|-,-" }),
	'the finished code 3 hours old: number masked in the verification, the message and the callbacks;'
	  . ' idempotency keys gone: ' . numbers_of($mid));
is(sql("SELECT concat_ws('|', state, phone_masked, delivery_status) FROM plivo_otp.otp_status('$mid')"),
	"approved|$masked2|delivered", 'otp_status of the redacted code still answers');
is(sql("SELECT plivo_otp.otp_check('" . phone_n(2) . "', '$mid_code')"), 'not_found',
	'otp_check of its number and code: not_found, as for any used code');
is(sql("SELECT count(*) FROM plivo_otp.delivery_events e JOIN plivo_otp.messages m"
	  . " ON m.provider_uuid = e.provider_uuid WHERE m.verification_id = '$mid'"), '3', 'its events stay');
is(sql("SELECT plivo_otp.phone_masked('$masked2')"), $masked2, 'masking twice changes nothing');

my $digits3 = substr(phone_n(3), 1);
is(numbers_of($young), phone_n(3) . '|' . phone_n(3) . "|$digits3|-,-",
	'the code 30 minutes old keeps its number (plivo_otp.number_window is a floor)');
is(numbers_of($pending), phone_n(4) . '|' . phone_n(4) . '|-,-',
	'the pending code 3 days old stays, with its number (its callbacks, 3 days old, went like any event past the retention)');
is(sql("SELECT state FROM plivo_otp.otp_status('$pending')"), 'pending', 'and is still pending');

# A sustained rate: a minute of rows at 1,000 codes a second, all past the
# retention (as after a minute of sending a week ago), arrive in ten
# batches over ten seconds, while the dispatcher purges.
my $per_sec = 6000;		# ten seconds of this = a minute at 1,000 codes/s
my $t0 = time;
for my $s (0 .. 9)
{
	my $from = $s * $per_sec + 1;
	my $to = ($s + 1) * $per_sec;
	sql(qq{INSERT INTO plivo_otp.verifications (id, phone, purpose, channel, code_digest, state,
		  max_attempts, created_at, expires_at, updated_at)
		SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, '+1415' || lpad(i::text, 7, '0'),
		  'default', 'sms', decode(repeat('00', 32), 'hex'), 'approved', 5,
		  now() - interval '8 days', now() - interval '8 days' + interval '10 minutes', now() - interval '8 days'
		FROM generate_series($from, $to) i;
		INSERT INTO plivo_otp.messages (id, verification_id, channel, phone, dispatch_state, provider_uuid,
		  next_try_at, expires_at, created_at, updated_at)
		SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'sms',
		  '+1415' || lpad(i::text, 7, '0'), 'accepted', 'bulk-' || i,
		  now() - interval '8 days', now() - interval '8 days', now() - interval '8 days', now() - interval '8 days'
		FROM generate_series($from, $to) i;
		INSERT INTO plivo_otp.delivery_events (provider_uuid, status, params, received_at, applied_at)
		SELECT 'bulk-' || i, s, jsonb_build_object('To', '1415' || lpad(i::text, 7, '0')),
		  now() - interval '8 days', now() - interval '8 days'
		FROM generate_series($from, $to) i, unnest(ARRAY['queued', 'sent', 'delivered']) s;
		INSERT INTO plivo_otp.callback_nonces (nonce, seen_at)
		SELECT 'bulk-' || i || '-' || s, now() - interval '3 days'
		FROM generate_series($from, $to) i, generate_series(1, 3) s;});
	my $next = $t0 + $s + 1;
	Time::HiRes::sleep($next - time) if $next > time;
}
my $loaded = time - $t0;
my $left_sql = q{SELECT (SELECT count(*) FROM plivo_otp.verifications WHERE created_at < now() - interval '7 days')
	+ (SELECT count(*) FROM plivo_otp.messages WHERE created_at < now() - interval '7 days')
	+ (SELECT count(*) FROM plivo_otp.delivery_events WHERE received_at < now() - interval '7 days')
	+ (SELECT count(*) FROM plivo_otp.callback_nonces WHERE seen_at < now() - interval '2 days')};
my $left_at_end = sql($left_sql);
# The purge runs every minute once caught up: restart the dispatcher so the
# backlog's purge starts now (as its minute comes round in production).
$pid = dispatcher_pid($node);
sql("SELECT pg_terminate_backend($pid)");
wait_until(10, sub { my $p = dispatcher_pid($node); $p ne '' && $p ne $pid });
my $t1 = time;
# (Polled once a second, with index probes only: counting the backlog over
# and over would slow the purge it measures.)
my $any_left = q{SELECT EXISTS (SELECT 1 FROM plivo_otp.verifications WHERE created_at < now() - interval '7 days')
	OR EXISTS (SELECT 1 FROM plivo_otp.messages WHERE created_at < now() - interval '7 days')
	OR EXISTS (SELECT 1 FROM plivo_otp.delivery_events WHERE received_at < now() - interval '7 days')
	OR EXISTS (SELECT 1 FROM plivo_otp.callback_nonces WHERE seen_at < now() - interval '2 days')};
while (sql($any_left) eq 't' && time - $t1 < latency_bound(120)) { Time::HiRes::sleep(1); }
ok(sql($any_left) eq 'f', 'the minute at 1,000 codes/s is purged: ' . sql($left_sql) . ' left');
my $took = time - $t1;
my $rows = 8 * 10 * $per_sec;
diag(sprintf('%d rows loaded in %.1f s (%d left when loading ended); purged in %.1f s after a dispatcher start: %.0f rows/s',
	$rows, $loaded, $left_at_end, $took, $left_at_end / ($took || 1)));
cmp_ok($took, '<', latency_bound(60), sprintf('in %.1f s, less than the minute it stands for', $took));
is(sql("SELECT count(*) FROM plivo_otp.verifications WHERE id IN ('$mid', '$young', '$pending')"), '3',
	'the younger codes stay');
unlike(slurp_file($node->logfile), qr/ERROR|terminated by signal/, 'no error, no crash');

# Redaction's look-ups (src/dispatcher/retention.c) can read the partial
# indexes that hold only finished rows not masked yet: their predicates
# still follow from the statements' conditions.
for my $look (
	[ 'verifications_unredacted', "SELECT id FROM plivo_otp.verifications WHERE strpos(phone, '*') = 0"
		  . " AND created_at < now() AND state <> 'pending' ORDER BY created_at LIMIT 100" ],
	[ 'messages_unredacted', "SELECT m.id FROM plivo_otp.messages m WHERE strpos(m.phone, '*') = 0"
		  . " AND m.created_at < now() AND m.dispatch_state NOT IN ('pending', 'sending')"
		  . " ORDER BY m.created_at LIMIT 100" ])
{
	my ($index, $query) = @$look;
	like(sql("SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_sort = off; EXPLAIN $query"),
		qr/Index Scan using \Q$index\E/, "redaction can read $index");
}

$node->stop;
done_testing();
