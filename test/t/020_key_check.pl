# 020_key_check.pl: the key file is never left half written, and a key
# that is not the one a database's codes were made with is refused, loudly,
# instead of failing every code: a standby that lacked the primary's key,
# promoted and restarted, makes a key of its own, and must not use it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# An empty key file, as a crash between creating and filling it left one
# before the key was written to a temporary file and renamed into place.
my $node = new_node('empty_key', start => 0);
my $keyfile = $node->data_dir . '/plivo_otp.key';
open my $fh, '>', $keyfile or die $!;
close $fh;
chmod 0600, $keyfile;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION plivo_otp');
is(-s $keyfile, 32, 'an empty key file is replaced by a full key at start');
ok(!-e "$keyfile.tmp", 'no temporary file is left');
ok($node->log_contains('key file "plivo_otp.key" is empty and is replaced'), 'the log says so');
is($node->safe_psql('postgres', "SELECT plivo_otp.otp_send('+15005550901') IS NOT NULL"),
	't', 'and codes can be issued');
$node->stop;

# A primary whose dispatcher records the key's fingerprint.
my $primary = new_node('primary', init => { allows_streaming => 1 });
my $vid = $primary->safe_psql('postgres', "SELECT plivo_otp.otp_send('+15005550902')");
my $code = learn_code($primary, $vid);
ok(wait_until(10, sub {
	$primary->safe_psql('postgres', 'SELECT count(*) FROM plivo_otp.key_check') eq '1' }),
	'the dispatcher records the fingerprint of the key');

# A standby made without the key file, promoted, then restarted: its
# postmaster cannot tell it was a standby and makes a new key.
$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('keyless_standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
unlink $standby->data_dir . '/plivo_otp.key';
$standby->start;
$primary->wait_for_catchup($standby);
$standby->promote;
$standby->restart;
ok(-s $standby->data_dir . '/plivo_otp.key' == 32, 'after promotion and a restart it made a key of its own');

my ($ret, $out, $err) = $standby->psql('postgres', "SELECT plivo_otp.otp_check('+15005550902', '$code')");
isnt($ret, 0, 'a replicated code is not checked under the wrong key');
like($err, qr/ERROR:  plivo_otp key file "plivo_otp.key" is not the key this database's codes were made with/,
	'the error says which key is wrong');
like($err, qr/HINT:  Put the original key file back/, 'and how to fix it');
is($standby->safe_psql('postgres',
	"SELECT attempts_left FROM plivo_otp.otp_status('$vid')"), '5', 'no attempt was burnt');
($ret, $out, $err) = $standby->psql('postgres', "SELECT plivo_otp.otp_send('+15005550903')");
like($err, qr/is not the key this database's codes were made with/, 'no new code is issued under it either');
ok($standby->log_contains('is not the key this database'),
	'the server log says so');

# The primary's key file back: the replicated code verifies.
$standby->stop;
PostgreSQL::Test::Utils::system_or_bail('cp', $primary->data_dir . '/plivo_otp.key',
	$standby->data_dir . '/plivo_otp.key');
chmod 0600, $standby->data_dir . '/plivo_otp.key';
$standby->start;
is($standby->safe_psql('postgres', "SELECT plivo_otp.otp_check('+15005550902', '$code')"),
	'approved', 'with the original key back, the replicated code is approved');

$standby->stop;
$primary->stop;
done_testing();
