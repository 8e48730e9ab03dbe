# 033_api_plans.pl: the SQL functions' statements read rows by their keys
# whatever the statistics say.  A new deployment's tables are vacuumed
# while still empty (autovacuum visits them soon), and a session's plans
# are made after a few calls, while the tables are a page or two: a plan
# chosen on that size scans the table, and keeps scanning it as it grows
# (bench pgbench: otp_send at a third of its rate within 15 s).  One
# session issues, re-delivers, replaces, checks, reads, re-sends and cancels codes
# with auto_explain logging every nested plan: none of them, nor the
# foreign key's check that a message's code exists, scans the extension's
# tables.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('api_plans',
	conf => "shared_preload_libraries = 'plivo_otp,auto_explain'\n"
	  . "plivo_otp.resend_interval = 0\nplivo_otp.number_max_sends = 0\n");

sub sql { my ($text) = @_; return $node->safe_psql('postgres', $text); }

# Vacuumed empty, as autovacuum leaves a new deployment's tables: the
# planner then goes by their real, tiny size.
sql('VACUUM ANALYZE plivo_otp.verifications, plivo_otp.messages, plivo_otp.send_counters');
is(sql("SELECT string_agg(relname || ':' || reltuples, ',' ORDER BY relname) FROM pg_class"
	  . " WHERE relnamespace = 'plivo_otp'::regnamespace AND relname IN ('messages', 'verifications')"),
	'messages:0,verifications:0', 'the statistics say the tables are empty');

my $offset = -s $node->logfile;
# 30 rounds in one session (plans are generic from the sixth call on), the
# plans logged from the first.
sql(q{
	SET auto_explain.log_min_duration = 0;
	SET auto_explain.log_nested_statements = on;
	DO $$
	DECLARE
		id uuid;
		replaced uuid;
		phone text;
	BEGIN
		FOR i IN 1..30 LOOP
			phone := '+1415555' || lpad(i::text, 4, '0');
			id := plivo_otp.otp_send(phone);
			PERFORM plivo_otp.otp_send(phone);				-- the live code again
			PERFORM plivo_otp.otp_send(phone, idempotency_key => 'k' || i);
			PERFORM plivo_otp.otp_send(phone, idempotency_key => 'k' || i);	-- the same, by its key
			PERFORM plivo_otp.otp_verify(phone, 'x');
			PERFORM plivo_otp.otp_check(phone, 'x');
			PERFORM * FROM plivo_otp.otp_status(id);
			PERFORM * FROM plivo_otp.otp_messages(id);
			PERFORM plivo_otp.otp_resend(id);
			PERFORM plivo_otp.otp_cancel(id);
			PERFORM plivo_otp.otp_verify(phone, 'x');		-- no pending code: the latest
			replaced := plivo_otp.otp_send(phone);
			UPDATE plivo_otp.verifications SET expires_at = now() + interval '10 seconds'
			WHERE verifications.id = replaced;
			PERFORM plivo_otp.otp_send(phone);				-- replaces it: too close to its expiry
		END LOOP;
	END $$;
});
my $log = substr(slurp_file($node->logfile), $offset);
my @plans = split /\n(?=\S[^\n]*LOG:  duration: [\d.]+ ms  plan:)/, $log;
shift @plans unless $plans[0] =~ /plan:/;
# (the test's own shortening of a code's life is not the API's)
@plans = grep { !/Query Text: UPDATE plivo_otp\.verifications SET expires_at/ } @plans;
cmp_ok(scalar @plans, '>', 300, 'the nested plans were logged (' . scalar(@plans) . ')');

my @scans = grep { /(?:Seq|Bitmap Heap) Scan on (?:verifications|messages|send_counters)\b/ } @plans;
is(scalar @scans, 0, 'no plan scans verifications, messages or send_counters')
  or diag('first: ' . substr($scans[0], 0, 1500));

# Nor reads a whole index: each index scan has its condition (a scan of a
# partial index of pending rows with a filter reads every pending row).
my @full = grep { /Index (?:Only )?Scan(?: Backward)? using \w+ on (?:verifications|messages|send_counters)\b[^\n]*\n(?!\s*Index Cond)/ } @plans;
is(scalar @full, 0, 'no plan reads a whole index of verifications, messages or send_counters')
  or diag(join("\n", map { /Query Text: ([^\n]{0,150})/ ? $1 : '?' } @full[0 .. 5]));

# Not vacuous: the statements that would scan were among them, by index.
for my $case (
	[ qr/SELECT id, code_sealed, expires_at, attempts, max_attempts FROM plivo_otp\.verifications WHERE phone = \$1 AND purpose = \$2 AND state = 'pending' FOR UPDATE/, 'verifications_one_pending', "otp_send's look-up of the number's pending code" ],
	[ qr/SET state = 'canceled', updated_at = \$2, code_sealed = NULL WHERE id = \$1 AND state = 'pending'\n/, 'verifications_pkey', "otp_send's cancellation of the pending code it replaces" ],
	[ qr/idempotency_key = \$1/, 'idempotency', "otp_send's look-up by idempotency key" ],
	[ qr/FOR KEY SHARE OF x/, 'verifications_pkey', "the foreign key's check of a new message" ],
	[ qr/LEFT JOIN LATERAL/, 'messages_verification', "otp_status's look-up of the latest message" ],
	[ qr/ORDER BY created_at DESC LIMIT 1 FOR UPDATE/, 'verifications_phone_created', "otp_verify's look-up of the latest code" ])
{
	my ($re, $index, $what) = @$case;
	my @of = grep { /Query Text: .*$re/s } @plans;
	my @other = grep { !/Index Scan(?: Backward)? using \w*$index\w* on / } @of;
	ok(@of > 0 && !@other, "$what reads an index ($index) every time (" . scalar(@of) . ' plans)')
	  or diag(substr($other[0] // 'no such plan', 0, 1500));
}

done_testing();
