# 007_dispatch_crash_standby.pl: the dispatcher across process and server
# events.  A hot standby sends nothing, and after promotion the replicated
# queue drains, each message once.  A dispatcher killed with -9 while
# requests are in flight comes back; every committed message still ends
# accepted, refused, expired or unknown, and the ones in flight are 'unknown'
# and never re-sent (the at-most-once rule).  A dispatcher stopped with
# SIGTERM (pg_terminate_backend) mid-request stops promptly, marks the
# request 'unknown' and is started again by the postmaster.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

sub send_codes
{
	my ($node, @phones) = @_;
	my $out = $node->safe_psql('postgres',
		'SELECT ' . join(', ', map { "plivo_otp.otp_send('$_')" } @phones),
		extra_params => [ '-F', ' ' ]);
	return split / /, $out;
}

sub state_of
{
	my ($node, $vid) = @_;
	my $row = message_row($node, $vid);
	return $row ? $row->{dispatch_state} : '';
}

# A query that may meet a server in crash recovery: '' instead of dying.
sub try_query
{
	my ($node, $sql) = @_;
	my ($out, $err) = ('', '');
	my $rc = $node->psql('postgres', $sql, stdout => \$out, stderr => \$err);
	return $rc == 0 ? $out : '';
}

my $plivo = start_standin();

# ---------------------------------------------------------------------------
# Standby: a primary whose dispatcher is not configured (no auth_id) queues
# messages; the standby, configured for the stand-in, replicates them and
# sends nothing until it is promoted.
my $primary = new_node('primary', init => { allows_streaming => 1 });
like(slurp_file($primary->logfile), qr/dispatcher is not configured and sends nothing\n[^\n]*DETAIL:  plivo_otp\.auth_id is not set\./,
	'the primary without auth_id says it sends nothing');
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
# pg_basebackup keeps the key file's mode 0600, but the framework's copy of
# the backup into place does not (it leaves 0644, which the key check
# rightly refuses): put back what a real base backup has.
chmod 0600, $standby->data_dir . '/plivo_otp.key' or die "chmod: $!";
$standby->append_conf('postgresql.conf', dispatcher_conf($plivo));
$standby->start;

my @sp = map { phone_n(300 + $_) } 1 .. 3;
my @sv = send_codes($primary, @sp);
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', "SELECT count(*) FROM plivo_otp.messages WHERE dispatch_state = 'pending'"),
	'3', 'the standby has the three queued messages');
is($standby->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'plivo_otp dispatcher'"),
	'0', 'no dispatcher runs on the standby');
# A running dispatcher sends within milliseconds; give it ample time.
sleep 2;
is($plivo->stats->{requests}, 0, 'nothing reaches Plivo from the standby');

$primary->stop;
$standby->promote;
ok(wait_until(20, sub { my $n = 0; $n += state_of($standby, $_) eq 'accepted' for @sv; $n == 3 }),
	'after promotion the queue drains: all three accepted');
ok(wait_until(5, sub { dispatcher_pid($standby) ne '' }), 'the promoted server runs a dispatcher');
my $accepted_at = time;
wait_until(2, sub { time > $accepted_at + 1.5 });
is(join(',', map { scalar @{ $plivo->requests_to($_) } } @sp), '1,1,1', 'Plivo received each message exactly once');
is(join(',', map { scalar @{ $plivo->messages_to($_) } } @sp), '1,1,1', 'and accepted each once');
my ($m) = @{ $plivo->messages_to($sp[0]) };
like($m->{text}, qr/code is \d+/, 'the promoted server decrypted the replicated body (same key file)');
$standby->stop;
$plivo->reset;

# ---------------------------------------------------------------------------
# kill -9 while requests are in flight.
my $node = new_node('crash',
	conf => dispatcher_conf($plivo, max_inflight => 3, request_timeout => '20s')
	  . "restart_after_crash = on\n");
my $pid1 = dispatcher_pid($node);
like($pid1, qr/^\d+$/, 'the dispatcher runs');

$plivo->behave(mode => 'slow', count => 3, delay => 4);
my @cp = map { phone_n(310 + $_) } 1 .. 6;
my @cv = send_codes($node, @cp);
ok(wait_until(10, sub { $plivo->stats->{requests} == 3 && $node->safe_psql('postgres',
	"SELECT count(*) FILTER (WHERE dispatch_state = 'sending') || '/' || count(*) FILTER (WHERE dispatch_state = 'pending')"
	  . ' FROM plivo_otp.messages') eq '3/3' }),
	'three requests are in flight (max_inflight = 3), three messages wait');
my %in_flight = map { $_->{json}{dst} => 1 } @{ $plivo->requests };
kill 'KILL', $pid1;
ok(wait_until(30, sub { my $p = try_query($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'plivo_otp dispatcher'"); $p ne '' && $p ne $pid1 }),
	'after kill -9 the server restarts and the dispatcher comes back');
ok(wait_until(20, sub { try_query($node,
	"SELECT count(*) FROM plivo_otp.messages WHERE dispatch_state NOT IN ('accepted', 'refused', 'expired', 'unknown')") eq '0' }),
	'no message is left pending or sending');
is($node->safe_psql('postgres', 'SELECT count(*) FROM plivo_otp.messages'), '6', 'none of the six committed messages is lost');
my (@want, @got);
for my $i (0 .. 5)
{
	(my $dst = $cp[$i]) =~ s/^\+//;
	push @want, $cp[$i] . '=' . ($in_flight{$dst} ? 'unknown' : 'accepted');
	push @got, $cp[$i] . '=' . state_of($node, $cv[$i]);
}
is(join(' ', @got), join(' ', @want), 'the three in flight are unknown, the three that waited are accepted');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM plivo_otp.messages WHERE dispatch_state = 'unknown' AND body IS NULL"
	  . " AND last_error LIKE '%in flight%not re-sent%'"), '3',
	'the unknown ones are wiped and say why');
my $settled = time;
wait_until(3, sub { time > $settled + 2.5 });
is(join(',', map { scalar @{ $plivo->requests_to($_) } } @cp), '1,1,1,1,1,1',
	'each message reached Plivo exactly once: nothing in flight was re-sent');
like(slurp_file($node->logfile), qr/marked 3 messages left in flight as unknown/, 'the log says what was marked');
my $s = dispatcher_stats($node);
is("$s->{unknown}|$s->{accepted}", '3|3', 'dispatcher_stats after the restart: 3 unknown, 3 accepted');

# ---------------------------------------------------------------------------
# SIGTERM (pg_terminate_backend) while a request hangs.
$plivo->reset;
$plivo->behave(mode => 'hang', count => 1);
my $tp = phone_n(321);
my ($tv) = send_codes($node, $tp);
ok(wait_until(10, sub { @{ $plivo->requests_to($tp) } == 1 && dispatcher_stats($node)->{in_flight} == 1 }),
	'a request hangs at Plivo');
my $pid2 = dispatcher_pid($node);
my $t0 = time;
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($pid2)"), 't', 'pg_terminate_backend(dispatcher)');
ok(wait_until(5, sub { $node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid2") eq '0' }),
	sprintf('the dispatcher stopped promptly (%.1f s)', time - $t0));
is(state_of($node, $tv), 'unknown', 'the request it had sent is unknown');
like(message_row($node, $tv)->{last_error}, qr/stopped after the request was sent/, 'and says why');
ok(wait_until(8, sub { my $p = dispatcher_pid($node); $p ne '' && $p ne $pid2 }),
	'a new dispatcher is started within seconds (bgw_restart_time = 1 s)');
my ($after) = send_codes($node, phone_n(322));
ok(wait_until(8, sub { state_of($node, $after) eq 'accepted' }), 'a message sent after the SIGTERM is delivered');
is(scalar @{ $plivo->requests_to($tp) }, 1, 'the message in flight at SIGTERM was not re-sent');

$node->stop;
done_testing();
