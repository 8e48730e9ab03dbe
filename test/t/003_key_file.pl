# 003_key_file.pl: the secret key file is created once, private, kept across
# restarts, carried to standbys by base backups, never created by a server
# in recovery, and refused when other users can read it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $primary = new_node('primary', init => { allows_streaming => 1 });
my $keyfile = $primary->data_dir . '/plivo_otp.key';

ok(-f $keyfile, 'the key file is created at first start');
is(-s $keyfile, 32, 'it holds 32 bytes');
is((stat $keyfile)[2] & 07777, 0600, 'it is readable only by the server user');
my $key = slurp_file($keyfile);

# A code issued before a restart verifies after it: same key.
my $vid = $primary->safe_psql('postgres', "SELECT plivo_otp.otp_send('+15005559101')");
my $code = learn_code($primary, $vid);
$primary->restart;
is(slurp_file($keyfile), $key, 'a restart keeps the key');
is($primary->safe_psql('postgres', "SELECT plivo_otp.otp_check('+15005559101', '$code')"),
	'approved', 'a code issued before the restart is approved after it');

# A standby from a base backup carries the same key file.
$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
is(slurp_file($standby->data_dir . '/plivo_otp.key'), $key, 'the standby has the primary\'s key');
$standby->stop;

# A standby without the key never makes one of its own.
my $bare = PostgreSQL::Test::Cluster->new('bare_standby');
$bare->init_from_backup($primary, 'base', has_streaming => 1);
unlink $bare->data_dir . '/plivo_otp.key';
$bare->start;
ok(!-e $bare->data_dir . '/plivo_otp.key', 'a server in recovery does not create a key');
ok($bare->log_contains('key file "plivo_otp.key" is missing and is not created on a server in recovery'),
	'and says so in its log');
$bare->stop;

# A key file that other users can read is refused, with a hint.
chmod 0644, $keyfile;
$primary->restart;
my ($ret, $stdout, $stderr) = $primary->psql('postgres', "SELECT plivo_otp.otp_send('+15005559102')");
like($stderr, qr/key file "plivo_otp.key" is accessible to other users/, 'a world-readable key is refused');
like($stderr, qr/chmod 0600/, 'with a hint saying how to fix it');
# Group access is refused too: only the server's OS user may read the key.
chmod 0640, $keyfile;
$primary->restart;
($ret, $stdout, $stderr) = $primary->psql('postgres', "SELECT plivo_otp.otp_send('+15005559103')");
like($stderr, qr/key file "plivo_otp.key" is accessible to other users/, 'a group-readable key is refused');
chmod 0600, $keyfile;

$primary->stop;
done_testing();
