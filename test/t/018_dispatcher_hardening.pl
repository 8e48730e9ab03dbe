# 018_dispatcher_hardening.pl: the dispatcher survives bad rows.  Queued
# rows holding anything the table's constraints allow (no body, garbage or
# huge bodies, a malformed number, past or infinite expiries, extreme tries,
# a code no longer pending) are marked with a reason or sent as they should
# be, and never crash or stall the queue.  A row whose outcome cannot be
# recorded (a trigger that raises) is marked or logged and the other
# outcomes are recorded; recovery at start skips such a row too.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $plivo = start_standin();
# restart_after_crash: should a process crash, the server comes back and the
# checks below fail instead of the whole file dying.
my $node = new_node('hardening',
	conf => dispatcher_conf($plivo, request_timeout => '5s') . "restart_after_crash = on\n");

sub sql { my ($text) = @_; return $node->safe_psql('postgres', $text); }

sub send_code { my ($phone) = @_; return sql("SELECT plivo_otp.otp_send('$phone')"); }

sub state_of
{
	my ($vid) = @_;
	my $row = message_row($node, $vid);
	return $row ? $row->{dispatch_state} : '';
}

sub reconfigure
{
	my ($auth_id) = @_;
	my $offset = -s $node->logfile;
	$node->append_conf('postgresql.conf', "plivo_otp.auth_id = '$auth_id'\n");
	$node->reload;
	$node->wait_for_log(qr/plivo_otp dispatcher (sends to|is not configured)/, $offset);
}

# ---------------------------------------------------------------------------
# Bad rows.  The dispatcher is unconfigured while they are made (messages
# wait), then configured.
reconfigure('');
my %bad = (
	null_body => "body = NULL, dispatch_state = 'pending'",    # an 'unknown' row re-queued by hand
	short_body => "body = '\\xdeadbeef'",
	garbage_body => "body = decode(repeat('ab', 200), 'hex')",
	huge_body => "body = decode(repeat('cd', 100000), 'hex')",
	past => "expires_at = now() - interval '1 minute'",
	minus_infinity => "expires_at = '-infinity'",
	not_e164 => "phone = '+1 (415) 555-0000'",
	garbage_phone => "phone = 'not a number'",
	approved => undef,
);
my %good = (
	max_tries => "tries = 2147483647",
	negative_tries => "tries = -100",
	infinity => "expires_at = 'infinity'",
	due_forever => "next_try_at = '-infinity'",
	plain => '',
);
my (%vid, %phone);
my $n = 700;
for my $case (sort(keys %bad), sort(keys %good))
{
	$phone{$case} = phone_n($n++);
	$vid{$case} = send_code($phone{$case});
	my $set = exists $bad{$case} ? $bad{$case} : $good{$case};
	sql("UPDATE plivo_otp.messages SET $set WHERE verification_id = '$vid{$case}'") if $set;
}
# (As otp_verify does, with updated_at: the dispatcher's orphan sweep reads
# the codes finished since its last turn by updated_at; a hand edit that
# leaves it old is caught by the once-a-minute full sweep instead.)
sql("UPDATE plivo_otp.verifications SET state = 'approved', updated_at = now() WHERE id = '$vid{approved}'");
my $pid = dispatcher_pid($node);
reconfigure($AUTH_ID);

ok(wait_until(15, sub { 5 == grep { state_of($vid{$_}) eq 'accepted' } keys %good }),
	'the rows that can be sent are accepted: ' . join(', ', map { "$_ " . state_of($vid{$_}) } sort keys %good));
ok(wait_until(10, sub { 0 == grep { state_of($vid{$_}) =~ /^(pending|sending)$/ } keys %bad }),
	'every bad row is marked, none left queued');
my %want = (
	null_body => qr/^refused\|.*no message body/,
	short_body => qr/^refused\|.*does not authenticate/,
	garbage_body => qr/^refused\|.*does not authenticate/,
	huge_body => qr/^refused\|.*larger than any message/,
	past => qr/^expired\|.*expired before it could be sent/,
	minus_infinity => qr/^expired\|.*expired before it could be sent/,
	not_e164 => qr/^refused\|.*not in E\.164 form/,
	garbage_phone => qr/^refused\|.*not in E\.164 form/,
	approved => qr/^canceled\|.*no longer pending \(approved\)/,
);
for my $case (sort keys %bad)
{
	my $row = message_row($node, $vid{$case});
	like("$row->{dispatch_state}|$row->{last_error}|wiped=$row->{wiped}", $want{$case},
		"$case: marked with a reason");
	is($row->{wiped}, 't', "$case: no body left");
}
is(scalar(grep { @{ $plivo->requests_to($phone{$_}) } } keys %bad), 0, 'no bad row reached Plivo');
is(join(',', map { scalar @{ $plivo->requests_to($phone{$_}) } } sort keys %good), '1,1,1,1,1',
	'each good row reached Plivo once');
is(message_row($node, $vid{max_tries})->{tries}, '2147483647', 'tries at its maximum stays there');
my ($inf) = @{ $plivo->requests_to($phone{infinity}) };
cmp_ok($inf->{json}{message_expiry} // 99999, '<=', 600,
	"an infinite message expiry is capped by the code's own (message_expiry $inf->{json}{message_expiry})");
my $late = send_code(phone_n(799));
ok(wait_until(5, sub { state_of($late) eq 'accepted' }), 'a message sent afterwards goes out');
is(dispatcher_pid($node), $pid, 'the same dispatcher process throughout');

# ---------------------------------------------------------------------------
# Outcomes that cannot be recorded.  One row's trigger refuses 'accepted'
# (the fallback 'unknown' goes through); another's refuses every update.
sql(q{CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$;
	CREATE TRIGGER refuse_accepted BEFORE UPDATE ON plivo_otp.messages FOR EACH ROW
	  WHEN (NEW.phone = '+14155550810' AND NEW.dispatch_state = 'accepted') EXECUTE FUNCTION refuse();
	CREATE TRIGGER refuse_all BEFORE UPDATE ON plivo_otp.messages FOR EACH ROW
	  WHEN (NEW.phone = '+14155550811' AND OLD.dispatch_state = 'sending') EXECUTE FUNCTION refuse();});
$plivo->behave(mode => 'slow', count => 5, delay => 0.5);
my @op = map { phone_n(810 + $_) } 0 .. 4;
my @ov = split /\n/, sql('SELECT plivo_otp.otp_send(p) FROM unnest(ARRAY['
	  . join(',', map { "'$_'" } @op) . ']) WITH ORDINALITY t(p, n) ORDER BY n');
ok(wait_until(10, sub { 3 == grep { state_of($_) eq 'accepted' } @ov[ 2 .. 4 ] }),
	'the other outcomes of the batch are recorded: ' . join(', ', map { state_of($_) } @ov));
ok(wait_until(5, sub { state_of($ov[0]) eq 'unknown' }), 'the row that refused accepted is unknown');
like(message_row($node, $ov[0])->{last_error}, qr/outcome accepted could not be recorded \(refused by a test trigger\); not re-sent/,
	'and says why');
is(state_of($ov[1]), 'sending', 'the row that refuses every update is left as it is');
my $log = slurp_file($node->logfile);
like($log, qr/could not record outcome "accepted" of message/, 'the log names the outcome that failed');
like($log, qr/left message \S+ as it is/, 'and the row left as it is');
is(join(',', map { scalar @{ $plivo->requests_to($_) } } @op), '1,1,1,1,1', 'each was sent once');

# Recovery at start skips that row and marks the others: an accepted row put
# back to 'sending' stands for one a stopped dispatcher left in flight.
sql("UPDATE plivo_otp.messages SET dispatch_state = 'sending' WHERE verification_id = '$ov[2]'");
my $offset = -s $node->logfile;
sql("SELECT pg_terminate_backend($pid)");
ok(wait_until(10, sub { my $p = dispatcher_pid($node); $p ne '' && $p ne $pid }), 'a new dispatcher starts');
my $restarted_at = -s $node->logfile;
ok(wait_until(5, sub { state_of($ov[2]) eq 'unknown' }), 'it marks the stale row unknown');
ok(wait_until(5, sub { substr(slurp_file($node->logfile), $offset) =~ /could not mark message \S+ as unknown/ }),
	'and logs the one it cannot mark');
sql('DROP TRIGGER refuse_accepted ON plivo_otp.messages; DROP TRIGGER refuse_all ON plivo_otp.messages');
$late = send_code(phone_n(819));
ok(wait_until(5, sub { state_of($late) eq 'accepted' }), 'and sends new messages');
$pid = dispatcher_pid($node);

is(sql("SELECT count(*) FROM plivo_otp.messages WHERE dispatch_state IN ('pending', 'sending')"
	  . " AND phone <> '+14155550811'"), '0', 'nothing is left queued or in flight');
my $whole = slurp_file($node->logfile);
unlike($whole, qr/terminated by signal/, 'no server process crashed');
unlike(substr($whole, $restarted_at), qr/exited with exit code/, 'no worker exited after the restart the test asked for');

$node->stop;
done_testing();
