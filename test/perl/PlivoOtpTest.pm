# PlivoOtpTest.pm: helpers shared by the TAP tests in test/t/.
#
# new_node() starts a private cluster with plivo_otp preloaded and the
# extension created; learn_code() learns a 4-digit code as an operator with
# the key file could (see sql/setup.sql for the digest format).

package PlivoOtpTest;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Exporter 'import';

our @EXPORT = qw(new_node learn_code);

my $learn_code_sql = <<'SQL';
CREATE FUNCTION learn_code(vid uuid) RETURNS text LANGUAGE sql AS $$
	SELECT c FROM generate_series(0, 9999) n, lpad(n::text, 4, '0') c,
		(SELECT purpose, code_digest FROM plivo_otp.verifications WHERE id = vid) v,
		(SELECT hmac('plivo_otp code digest v1'::bytea,
					 pg_read_binary_file(current_setting('plivo_otp.key_file')), 'sha256') AS key) k
	WHERE hmac(int4send(16) || uuid_send(vid) || int4send(octet_length(v.purpose))
			   || convert_to(v.purpose, 'UTF8') || int4send(4) || convert_to(c, 'UTF8'),
			   k.key, 'sha256') = v.code_digest
	LIMIT 1 $$;
SQL

# A started node with the extension.  %opts: conf => extra postgresql.conf
# lines, preload => 0 to leave the library out, create => 0 to skip CREATE
# EXTENSION, start => 0 to leave it stopped.
sub new_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%{ $opts{init} // {} });
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'plivo_otp'\nplivo_otp.database = 'postgres'\nplivo_otp.code_length = 4\n")
	  unless defined $opts{preload} && !$opts{preload};
	$node->append_conf('postgresql.conf', $opts{conf}) if $opts{conf};
	return $node if defined $opts{start} && !$opts{start};
	$node->start;
	unless (defined $opts{create} && !$opts{create})
	{
		$node->safe_psql('postgres', 'CREATE EXTENSION plivo_otp; CREATE EXTENSION pgcrypto;');
		$node->safe_psql('postgres', $learn_code_sql);
	}
	return $node;
}

sub learn_code
{
	my ($node, $vid) = @_;
	return $node->safe_psql('postgres', "SELECT learn_code('$vid')");
}

1;
