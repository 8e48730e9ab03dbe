# 032_table_cache.pl: a long-lived connection remembers that plivo_otp.templates
# and plivo_otp.senders have no rows for a channel (common/table_cache.c), and
# forgets it exactly when a change commits: a template or sender inserted by
# another session counts for the next send once committed, not before, and
# not at all if rolled back; the connection's own uncommitted change counts
# for its own sends and is forgotten at its ROLLBACK; DELETE, TRUNCATE and a
# write made as a logical replica's apply worker makes them (replica role)
# are seen too.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $plivo = start_standin();
my $node = new_node('table_cache',
	conf => dispatcher_conf($plivo) . "plivo_otp.sms_template = 'Settings {code}'\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $app = $node->background_psql('postgres');	# the long-lived connection
my $admin = $node->background_psql('postgres');
my $n = 3200;

# The text the stand-in received for a code sent now on $app.
sub sent_text
{
	my $phone = phone_n(++$n);
	$app->query_safe("SELECT plivo_otp.otp_send('$phone')");
	return wait_until(10, sub { @{ $plivo->messages_to($phone) } == 1 })
	  ? $plivo->messages_to($phone)->[0]{text}
	  : 'nothing sent';
}

like(sent_text(), qr/^Settings \d+$/, 'no template: the settings\' text');
like(sent_text(), qr/^Settings \d+$/, 'again, on the same connection');

$admin->query_safe("BEGIN; INSERT INTO plivo_otp.templates (channel, body) VALUES ('sms', 'Table {code}')");
like(sent_text(), qr/^Settings \d+$/, 'a template not yet committed does not count');
$admin->query_safe('ROLLBACK');
like(sent_text(), qr/^Settings \d+$/, 'nor one rolled back');

$admin->query_safe("INSERT INTO plivo_otp.templates (channel, body) VALUES ('sms', 'Table {code}')");
like(sent_text(), qr/^Table \d+$/, 'a template committed by another session counts for the next send');

$app->query_safe('BEGIN');
$app->query_safe('DELETE FROM plivo_otp.templates');
my $phone = phone_n(++$n);
$app->query_safe("SELECT plivo_otp.otp_send('$phone')");
$app->query_safe('COMMIT');
ok(wait_until(10, sub { @{ $plivo->messages_to($phone) } == 1 }), 'a send after its own DELETE went out');
like($plivo->messages_to($phone)->[0]{text}, qr/^Settings \d+$/, '... with the settings\' text');

$app->query_safe("BEGIN; INSERT INTO plivo_otp.templates (channel, body) VALUES ('sms', 'Own {code}')");
$phone = phone_n(++$n);
$app->query_safe("SELECT plivo_otp.otp_send('$phone'); COMMIT");
ok(wait_until(10, sub { @{ $plivo->messages_to($phone) } == 1 }), 'a send after its own INSERT went out');
like($plivo->messages_to($phone)->[0]{text}, qr/^Own \d+$/, '... with the template inserted in its transaction');

$app->query_safe("BEGIN; TRUNCATE plivo_otp.templates; INSERT INTO plivo_otp.templates (channel, body) VALUES ('voice', 'Voice {code}')");
$app->query_safe('ROLLBACK');
like(sent_text(), qr/^Own \d+$/, 'its own TRUNCATE, rolled back, is forgotten');

$admin->query_safe('TRUNCATE plivo_otp.templates');
like(sent_text(), qr/^Settings \d+$/, 'a TRUNCATE by another session is seen');

$admin->query_safe("SET session_replication_role = replica; INSERT INTO plivo_otp.templates (channel, body) VALUES ('sms', 'Replica {code}'); RESET session_replication_role");
like(sent_text(), qr/^Replica \d+$/, 'a template written with the replica role (logical replication) is seen');

# ---- senders: the row counts once committed ----
sub sent_sender
{
	my $p = phone_n(++$n);
	my $vid = $app->query_safe("SELECT plivo_otp.otp_send('$p')");
	chomp $vid;
	return sql("SELECT sender FROM plivo_otp.messages WHERE verification_id = '$vid'");
}
is(sent_sender(), '14155550000', 'no senders row: plivo_otp.sender');
$admin->query_safe("BEGIN; INSERT INTO plivo_otp.senders (prefix, channel, sender) VALUES ('1', 'sms', '14155550999')");
is(sent_sender(), '14155550000', 'a senders row not yet committed does not count');
$admin->query_safe('COMMIT');
is(sent_sender(), '14155550999', 'a senders row committed by another session counts for the next send');
$admin->query_safe('DELETE FROM plivo_otp.senders');
is(sent_sender(), '14155550000', 'its DELETE is seen');

$app->quit;
$admin->quit;
$node->stop;
done_testing();
