# 019_send_locks.pl: the locks otp_send takes cannot be taken, waited on or
# read from SQL by anyone else: a login cannot block sends to a number (or all
# sends) with pg_advisory_lock, pg_locks does not tell which number is being
# sent to, and a send that waits for another to the same number gives up after
# plivo_otp.send_lock_timeout with a clear error.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = new_node('send_locks', conf => "plivo_otp.resend_interval = 0\n");
$node->safe_psql('postgres', 'CREATE ROLE mallory LOGIN');

# The tags of the first version were buildable from SQL: class "PLVO" and a
# plain hash of the number (or of the global cap's key).
my $mallory = $node->background_psql('postgres', on_error_stop => 0);
$mallory->query_safe("SET ROLE mallory");
$mallory->query_safe(
	"SELECT pg_advisory_lock(1347180111, hashtext('+15005550701')),"
	  . " pg_advisory_lock(1347180111, hashtext('plivo_otp global cap'))");
my $t0 = time;
my ($ret, $out, $err) = $node->psql('postgres',
	"SET lock_timeout = '2s'; SELECT plivo_otp.otp_send('+15005550701') IS NOT NULL");
is($out, 't', "an advisory lock taken from SQL does not block a send to the number ($err)");
ok(time - $t0 < 1.5, 'nor delay it');
# (Near the cap the first version serialised all sends on the cap's key.)
($ret, $out, $err) = $node->psql('postgres',
	"SET lock_timeout = '2s'; SET plivo_otp.global_max_sends_per_hour = 50;"
	  . " SELECT plivo_otp.otp_send('+15005550709') IS NOT NULL");
is($out, 't', "nor does one on the global cap's old key block other numbers ($err)");

# While a send's transaction is open, pg_locks shows no tag derived from the number.
$mallory->query_safe('SELECT pg_advisory_unlock_all()');
my $sender = $node->background_psql('postgres');
$sender->query_safe("BEGIN; SELECT plivo_otp.otp_send('+15005550702')");
my $locks = $node->safe_psql('postgres',
	"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
	  . " AND (objid = hashtext('+15005550702')::oid OR classid = 1347180111)");
is($locks, '0', 'no advisory lock carries the hash of the number being sent to');
my $ours = $node->safe_psql('postgres',
	"SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
	  . " WHERE l.locktype = 'advisory' AND a.query LIKE '%+15005550702%'");
is($ours, '0', 'the send holds no advisory lock: its lock is its number\'s row of send_counters');
# That row is out of every login's reach, so no one can lock it to block sends.
($ret, $out, $err) = $mallory->query("SELECT * FROM plivo_otp.send_counters FOR UPDATE");
like($mallory->{stderr}, qr/permission denied/, 'a login cannot take the send locks (send_counters)');

# A second send to the same number waits for the first, but not for ever.
$t0 = time;
($ret, $out, $err) = $node->psql('postgres',
	"SET plivo_otp.send_lock_timeout = '300ms'; SELECT plivo_otp.otp_send('+15005550702')");
my $waited = time - $t0;
isnt($ret, 0, 'a send to a number whose send is still open fails after the timeout');
like($err, qr/ERROR:  code not sent: another send to this number is still in progress/, 'with a clear message');
like($err, qr/DETAIL:  Its transaction did not end within 300 ms\./, 'that says how long it waited');
ok($waited >= 0.3 && $waited < 3, sprintf('it waited about the timeout (%.2f s)', $waited));
($ret, $out, $err) = $node->psql('postgres',
	"DO \$\$ BEGIN SET LOCAL plivo_otp.send_lock_timeout = '100ms'; PERFORM plivo_otp.otp_send('+15005550702');"
	  . " EXCEPTION WHEN lock_not_available THEN RAISE NOTICE 'sqlstate 55P03'; END \$\$");
like($err, qr/NOTICE:  sqlstate 55P03/, 'SQLSTATE 55P03 (lock_not_available)');
$sender->query_safe('COMMIT');
is($node->safe_psql('postgres',
	"SET plivo_otp.send_lock_timeout = '300ms'; SELECT plivo_otp.otp_send('+15005550702') IS NOT NULL"),
	't', 'once the first commits, the next send goes through');

# A caller's own shorter lock_timeout still applies.
$sender->query_safe("BEGIN; SELECT plivo_otp.otp_send('+15005550703')");
$t0 = time;
($ret, $out, $err) = $node->psql('postgres',
	"SET lock_timeout = '100ms'; SELECT plivo_otp.otp_send('+15005550703')");
ok(time - $t0 < 2, 'the caller\'s shorter lock_timeout is kept');
like($err, qr/another send to this number is still in progress/, 'with the same error');
$sender->query_safe('ROLLBACK');
$sender->quit;
$mallory->quit;

# The global cap's count survives a restart: it is loaded from the queue.
my $counted = $node->safe_psql('postgres', 'SELECT sends_last_hour FROM plivo_otp.api_stats');
cmp_ok($counted, '>=', 4, "the sends of this test are counted ($counted)");
$node->restart;
is($node->safe_psql('postgres', 'SELECT sends_last_hour FROM plivo_otp.api_stats'),
	$counted, 'after a restart the hour\'s sends still count');
($ret, $out, $err) = $node->psql('postgres',
	"SET plivo_otp.global_max_sends_per_hour = $counted; SELECT plivo_otp.otp_send('+15005550704')");
like($err, qr/global_max_sends_per_hour reached/, 'and the cap refuses the next send');

my $log = slurp_file($node->logfile);
unlike($log, qr/15005550702|15005550703|15005550704/, 'no number reaches the log');

done_testing();
