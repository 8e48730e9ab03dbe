# 029_dispatcher_drain.pl: a backlog committed at once drains with
# statements whose plans cannot flip on stale statistics, and with few of
# them.  The statistics are taken while the tables are empty, then 20,000
# finished rows go in (history the planner does not know of) and 1,000
# messages are committed in one transaction.  The claim reads each kind's
# partial index of pending rows in order, from where the previous
# claim stopped (no sequential or bitmap scan, no sort of all due rows); the
# outcomes are recorded with one statement per batch (not one per message);
# the earliest-due look-up runs only after a claim that did not fill up (not
# after every claim); the one-second expiry statements never scan the
# history.  Every message is sent exactly once.  With 20,000 messages
# queued, the one-second statements read bounded batches from their indexes.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $messages = 1000;
my $plivo = start_standin();
my $node = new_node('drain',
	# Calls configured too (a public URL; the sender is their caller ID):
	# while SMS drain, a claim must not look for calls every time.
	# max_inflight 10 (the default before 0.2.0): the Python stand-in answers
	# one by one, so at 256 most outcomes would come between claims.
	conf => dispatcher_conf($plivo, max_requests_per_second => 10000, resend_interval => 0,
		max_inflight => 10,
		number_max_sends => 0, caller_max_sends => 0, global_max_sends_per_hour => 0,
		public_url => 'http://127.0.0.1:9')
	  . "shared_preload_libraries = 'plivo_otp,pg_stat_statements,auto_explain'\n"
	  # The dispatcher's statements run at the top level of its process: each
	  # one's plan goes to the log (the SQL functions' own are nested: not).
	  . "auto_explain.log_min_duration = 0\n"
	  . "pg_stat_statements.track = all\n");

sub sql { my ($text) = @_; return $node->safe_psql('postgres', $text); }

# A few messages first, sent while the tables are a page: the dispatcher
# plans its claims and outcomes now, as after a start, and keeps the plans.
sql("SELECT count(plivo_otp.otp_send('+1415' || (4000000 + g)::text)) FROM generate_series(1, 5) g");
ok(wait_until(30, sub { sql("SELECT count(*) FROM plivo_otp.messages WHERE dispatch_state = 'accepted'") == 5 }),
	'five messages sent while the tables are small');
sql("DELETE FROM plivo_otp.verifications; DELETE FROM plivo_otp.send_counters");
$plivo->reset;

# History: 20,000 finished rows, inserted after an ANALYZE of the empty
# tables (as right after a bulk load): the planner believes them empty.
sql(q{
	CREATE EXTENSION pg_stat_statements;
	ALTER TABLE plivo_otp.messages SET (autovacuum_enabled = off);
	ALTER TABLE plivo_otp.verifications SET (autovacuum_enabled = off);
	ANALYZE plivo_otp.messages;
	ANALYZE plivo_otp.verifications;
	INSERT INTO plivo_otp.verifications (id, phone, purpose, channel, code_digest, state,
		max_attempts, created_at, expires_at, updated_at)
	SELECT gen_random_uuid(), '+1415' || (3000000 + g)::text, 'login', 'sms', sha256(g::text::bytea),
		'approved', 5, now() - interval '1 hour', now() - interval '50 minutes', now() - interval '1 hour'
	FROM generate_series(1, 20000) g;
	INSERT INTO plivo_otp.messages (id, verification_id, channel, phone, dispatch_state, tries,
		next_try_at, expires_at, created_at, updated_at, provider_uuid)
	SELECT gen_random_uuid(), v.id, 'sms', v.phone, 'accepted', 1, v.created_at, v.expires_at,
		v.created_at, v.created_at, 'hist-' || v.phone
	FROM plivo_otp.verifications v;
});
is(sql("SELECT count(*) FROM pg_stats WHERE schemaname = 'plivo_otp' AND tablename = 'messages'"
	  . " AND attname = 'dispatch_state' AND 'pending' = ANY (most_common_vals::text::text[])"),
	'0', 'the statistics saw no pending row');
sql('SELECT pg_stat_statements_reset()');
my $offset = -s $node->logfile;

# The backlog: committed at once.
sql("SELECT count(plivo_otp.otp_send('+1415' || (2000000 + g)::text)) FROM generate_series(1, $messages) g");
ok(wait_until(120, sub {
	sql("SELECT count(*) FROM plivo_otp.messages WHERE dispatch_state = 'accepted' AND created_at > now() - interval '10 minutes'")
	  == $messages }),
	"the $messages messages are accepted");
my @requests = grep { ($_->{path} // '') =~ m{/Message/$} } @{ $plivo->requests };
my %dst;
$dst{ $_->{json}{dst} }++ for @requests;
is(scalar @requests, $messages, 'one request per message');
is(scalar(grep { $dst{$_} == 1 } keys %dst), $messages, 'each number got exactly one');

# The plans the dispatcher ran (auto_explain): one block per statement.
my $log = substr(slurp_file($node->logfile), $offset);
my @plans = split /\n(?=\S[^\n]*LOG:  duration: [\d.]+ ms  plan:)/, $log;
sub plans_of { my ($re) = @_; return grep { /Query Text: $re/ } @plans; }

my @claims = plans_of(qr/WITH sms AS \(/);
ok(@claims > 0, 'the claims were explained (' . scalar(@claims) . ')');
is(scalar(grep { !/Index Scan using messages_due_sms on messages/ || !/Index Scan using messages_due_voice on messages/ } @claims),
	0, "every claim reads each kind's partial index");
is(scalar(grep { /Index Cond: .*ROW\((?:m\.)?next_try_at, (?:m\.)?id\) >= ROW/s } @claims), scalar @claims,
	'from a position (where the previous claim stopped)');
# (Only the few rows taken, of both kinds, are put in order: "Sort Key: sms.next_try_at".)
is(scalar(grep { /Seq Scan|Bitmap|Incremental Sort|Sort Key: m|Hash/ } @claims), 0,
	'and neither scans nor sorts what it reads nor hashes');
is(scalar(grep { /JIT:/ } @claims), 0, 'nor compiles itself');
# Their codes by primary key, one look-up per row taken (a full scan of
# verifications_one_pending per row costs as little on a one-page table).
is(scalar(grep { !/Index Scan using verifications_pkey on verifications v\b[^\n]*\n\s*Index Cond: \(id = m(?:_\d+)?\.verification_id\)/ } @claims),
	0, "and looks each one's code up by its key")
  or diag(substr((grep { !/Index Cond: \(id = m(?:_\d+)?\.verification_id\)/ } @claims)[0], 0, 2500));

my @outcomes = plans_of(qr/WITH o AS \(SELECT \* FROM unnest/);
ok(@outcomes > 0, 'the outcome statements were explained');
is(scalar(grep { /Seq Scan|Bitmap|Hash/ } @outcomes), 0, 'outcomes find their rows by primary key');

my @earliest = plans_of(qr/SELECT \(SELECT m\.next_try_at/);
is(scalar(grep { /Seq Scan|Bitmap|Sort|JIT:/ || !/Index Scan using messages_due_sms/ } @earliest), 0,
	"the earliest-due look-up is the first entry of each kind's index");

# Callbacks that beat an outcome's commit: looked up for the batch's UUIDs,
# by index (a pass over every waiting callback with an ordinary plan, after
# each batch, was a quarter of the worker's CPU in a drain).
my @waiting = plans_of(qr/WITH best AS \(/);
ok(@waiting > 0, 'the waiting-callback statements were explained');
is(scalar(grep { /Seq Scan|Bitmap|Hash|JIT:/ } @waiting), 0, 'waiting callbacks are found by index');

# Callbacks held for a message whose UUID was not recorded yet: the
# one-second settling finds each one's message by its id (a plan left to
# the statistics read every message with a UUID, the history, once a
# second: half the dispatcher's time beside 1,000,000 rows).
my @held = plans_of(qr/WITH held AS \(/);
ok(@held > 0, 'the held-callback statements were explained (' . scalar(@held) . ')');
is(scalar(grep { !/Index Scan using messages_pkey on messages m\b[^\n]*\n\s*Index Cond:/
	  || /messages_provider_uuid_key|Seq Scan|Bitmap|Hash/ } @held), 0,
	'held callbacks find their message by its key, never the history')
  or diag(substr($held[0], 0, 2500));

my @tick = (plans_of(qr/WITH gone AS/), plans_of(qr/WITH changed AS/));
ok(@tick > 0, 'the expiry statements were explained');
is(scalar(grep { /Seq Scan on (messages|verifications)/ } @tick), 0,
	'the one-second expiry statements never scan the history');

# Every statement the dispatcher ran during the drain (its claims, outcomes
# and the one-second work: expiry, wiping seals and call bodies, the voice
# fallback's candidates, purging) finds its rows by index: with statistics
# that saw only finished rows, a planner left to them scanned the history
# once a second (a drain of 1.6 messages/s beside 1,000,000 finished rows).
my $dpid = dispatcher_pid($node);
my @dispatcher_plans = grep { /\[$dpid\]/ } @plans;
ok(@dispatcher_plans > 20, 'the dispatcher\'s plans were explained (' . scalar(@dispatcher_plans) . ')');
my @scans = grep { /Seq Scan on (messages|verifications|delivery_events)\b/ } @dispatcher_plans;
is(scalar @scans, 0, 'none of them scans messages, verifications or delivery_events')
  or diag(join("\n", map { /Query Text: ([^\n]{0,200})/ ? $1 : '?' } @scans[0 .. ($#scans < 4 ? $#scans : 4)]));

# The sweep of codes that finished reads their messages code by code (a
# join read all of messages_verification, the history, every second).
my @orphan = grep { /Query Text: WITH changed AS/ } @dispatcher_plans;
ok(@orphan > 0, 'the orphan sweeps were explained (' . scalar(@orphan) . ')');
is(scalar(grep { !/Index Scan using messages_verification on messages m(?:_\d+)?\b[^\n]*\n\s*Index Cond: \(verification_id = c\.id\)/ } @orphan),
	0, 'each looks up the messages of each finished code by messages_verification')
  or diag(substr((grep { !/Index Cond: \(verification_id = c\.id\)/ } @orphan)[0], 0, 2000));

# How many statements: pg_stat_statements.
sub calls
{
	my ($like) = @_;
	return sql("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '$like'");
}
my $claim_calls = calls('WITH sms AS (%');
my $outcome_calls = calls('WITH o AS (SELECT * FROM unnest(%');
my $single_calls = calls('WITH target AS (%');
my $earliest_calls = calls('SELECT (SELECT m.next_try_at%');
note("claims $claim_calls, outcome statements $outcome_calls, one-by-one $single_calls, earliest-due $earliest_calls");
ok($outcome_calls > 0 && $outcome_calls <= $claim_calls + 20 && $outcome_calls * 3 < $messages,
	"outcomes recorded in batches: $outcome_calls statements for $messages messages");
is($single_calls, '0', 'none one by one');
my $batch_apply = sql("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
	  . " WHERE query LIKE 'WITH best AS (%' AND query LIKE '%= ANY (\$2)%'");
my $all_apply = sql("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
	  . " WHERE query LIKE 'WITH best AS (%' AND query NOT LIKE '%= ANY%'"
	  . " AND query NOT LIKE '%provider_uuid = \$2%'");
ok($batch_apply > 0, "callbacks waiting for the UUIDs just recorded: $batch_apply look-ups");
ok($all_apply * 4 < $outcome_calls,
	"the pass over every waiting callback is the one-second backstop's: $all_apply for $outcome_calls outcome statements");
ok($earliest_calls * 4 < $claim_calls,
	"the earliest-due look-up ran $earliest_calls times for $claim_calls claims");

# A queue of 20,000 pending messages, not due for an hour: the one-second
# statements read only the rows near expiry and the codes that finished,
# from their indexes, a bounded batch (their cost does not follow the queue).
sql(q{
	INSERT INTO plivo_otp.verifications (id, phone, purpose, channel, code_digest, state,
		max_attempts, created_at, expires_at, updated_at)
	SELECT gen_random_uuid(), '+1415' || (5000000 + g)::text, 'queue', 'sms', sha256(g::text::bytea),
		'pending', 5, now(), now() + interval '2 hours', now()
	FROM generate_series(1, 20002) g;
	INSERT INTO plivo_otp.messages (id, verification_id, channel, phone, dispatch_state, tries,
		next_try_at, expires_at, created_at, updated_at)
	SELECT gen_random_uuid(), v.id, 'sms', v.phone, 'pending', 0, now() + interval '1 hour',
		v.expires_at, v.created_at, v.created_at
	FROM plivo_otp.verifications v WHERE v.purpose = 'queue';
});
$offset = -s $node->logfile;
# one code approved (its message is never sent), one message about to expire
sql(q{UPDATE plivo_otp.verifications SET state = 'approved', updated_at = now()
	WHERE phone = '+14155000001' AND purpose = 'queue'});
sql(q{UPDATE plivo_otp.messages SET expires_at = now() + interval '3 seconds'
	WHERE phone = '+14155000002' AND dispatch_state = 'pending'});
ok(wait_until(10, sub {
	sql(q{SELECT dispatch_state || ' ' || last_error FROM plivo_otp.messages WHERE phone = '+14155000001'})
	  eq 'canceled not sent: the code is no longer pending (approved)' }),
	'a queued message of an approved code is canceled, saying why');
ok(wait_until(10, sub {
	sql(q{SELECT dispatch_state FROM plivo_otp.messages WHERE phone = '+14155000002'}) eq 'expired' }),
	'a queued message about to expire is expired');
sleep 2;
$log = substr(slurp_file($node->logfile), $offset);
@plans = split /\n(?=\S[^\n]*LOG:  duration: [\d.]+ ms  plan:)/, $log;
my @expire = plans_of(qr/WITH gone AS/);
my @orphan = plans_of(qr/WITH changed AS/);
ok(@expire >= 2 && @orphan >= 2, 'the one-second statements ran with 20,000 queued ('
	  . scalar(@expire) . ', ' . scalar(@orphan) . ')');
is(scalar(grep { !/Limit/ || !/Index Scan using messages_pending_expiry on messages/
	  || /Seq Scan|Bitmap|messages_due|Hash|JIT:/ } @expire), 0,
	'expire_unsendable: a bounded read of the expiry index');
is(scalar(grep { !/Limit/ || !/Index Scan using verifications_finished on verifications/
	  || !/Index Scan using messages_verification on messages/
	  || /Seq Scan|Bitmap|messages_due|Hash|JIT:/ } @orphan), 0,
	'cancel_orphaned: the codes that finished, then their messages');
is(sql("SELECT count(*) FROM plivo_otp.messages WHERE dispatch_state = 'pending' AND phone LIKE '+14155%'"),
	'20000', 'the rest of the queue is left alone');

done_testing();
