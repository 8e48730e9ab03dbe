# 021_query_privacy.pl: what the server's own logging and monitoring see of
# the numbers and codes an application passes.  Statements sent as text
# (the simple query protocol) carry them into log_min_duration_statement's
# lines and pg_stat_activity.query; the way out the README gives (bind
# parameters, as drivers send them, with log_parameter_max_length = 0, and
# plan_cache_mode = force_generic_plan where auto_explain runs) keeps them
# out of the log, auto_explain's plans and pg_stat_activity.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('query_privacy',
	conf => "plivo_otp.resend_interval = 0\n"
	  . "log_min_duration_statement = 0\n"
	  . "log_parameter_max_length = 0\n"
	  . "session_preload_libraries = 'auto_explain'\n"
	  . "auto_explain.log_min_duration = 0\n"
	  . "auto_explain.log_nested_statements = off\n"
	  # A custom plan folds bound values into its conditions, which
	  # auto_explain prints; a generic plan keeps $1.
	  . "plan_cache_mode = force_generic_plan\n");
# PostgreSQL 16 taught auto_explain to print a plan's bound values too
# ("Query Parameters: $1 = ..."): the README's advice turns that off as well.
if ($node->safe_psql('postgres', 'SHOW server_version_num') >= 160000)
{
	$node->append_conf('postgresql.conf', "auto_explain.log_parameter_max_length = 0\n");
	$node->reload;
}
$node->safe_psql('postgres', 'CREATE TABLE seen (query text)');

# The hazard: a statement sent as text is logged as text.
my $offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT plivo_otp.otp_send('+15005550801')");
my $log = slurp_file($node->logfile, $offset);
like($log, qr/duration: .*15005550801/,
	'log_min_duration_statement logs a number passed as text (the README warns of it)');

# The way out: bind parameters (pgbench -M extended sends them as drivers do).
sub run_bound
{
	my ($sql, %vars) = @_;
	my $script = PostgreSQL::Test::Utils::tempdir() . '/script.sql';
	open my $fh, '>', $script or die $!;
	print $fh "$sql\n";
	close $fh;
	my @defs = map { ('-D', "$_=$vars{$_}") } sort keys %vars;
	my ($stdout, $stderr);
	my $ok = IPC::Run::run(
		[ 'pgbench', '-n', '-M', 'extended', '-t', '1', '-f', $script, @defs,
		  '-h', $node->host, '-p', $node->port, 'postgres' ],
		'>', \$stdout, '2>', \$stderr);
	return ($ok, $stderr);
}

$offset = -s $node->logfile;
my ($ok, $err) = run_bound(
	# One row, so otp_send runs once whatever order a plan evaluates quals in
	# (17's generic plan called it for every row of pg_stat_activity).
	'INSERT INTO seen SELECT (SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid())'
	  . ' WHERE plivo_otp.otp_send(:phone) IS NOT NULL;',
	phone => '+15005550802');
ok($ok, "a send with the number bound as a parameter runs ($err)");
my $vid = $node->safe_psql('postgres',
	'SELECT id FROM plivo_otp.verifications ORDER BY created_at DESC LIMIT 1');
my $code = learn_code($node, $vid);
($ok, $err) = run_bound('SELECT plivo_otp.otp_verify(:phone, :code);',
	phone => '+15005550802', code => $code);
ok($ok, "a verification with number and code bound runs ($err)");
is($node->safe_psql('postgres', "SELECT state FROM plivo_otp.otp_status('$vid')"),
	'approved', 'and approves the code');

$log = slurp_file($node->logfile, $offset);
like($log, qr/duration: .*execute .*plivo_otp\.otp_send\(\$1\)/,
	'the statement is still logged, with $1 in place of the number');
like($log, qr/Query Text: .*otp_verify\(\$1, \$2\)/, 'auto_explain logs it with placeholders too');
like($log, qr/Filter: .*otp_send\(\$1/, 'and its plans keep them (a generic plan)');
unlike($log, qr/15005550802/, 'no number in the log');
unlike($log, qr/\b$code\b/, 'no code in the log');
unlike($log, qr/DETAIL:  parameters:/, 'no parameter values (log_parameter_max_length = 0)');

my $seen = $node->safe_psql('postgres', 'SELECT query FROM seen');
like($seen, qr/otp_send\(\$1\)/, 'pg_stat_activity.query shows the placeholder');
unlike($seen, qr/15005550802/, 'not the number');

done_testing();
