# PlivoOtpTest.pm: helpers shared by the TAP tests in test/t/.
#
# new_node() starts a private cluster with plivo_otp preloaded and the
# extension created; learn_code() learns a 4-digit code as an operator with
# the key file could (see sql/setup.sql for the digest format).
# start_standin() runs test/plivo_standin.py (the local Plivo) and returns a
# handle whose methods drive its control API; dispatcher_conf() gives the
# postgresql.conf lines that point a node at it.

package PlivoOtpTest;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Exporter 'import';
use File::Basename qw(dirname);
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(usleep);

our @EXPORT = qw(new_node learn_code start_standin dispatcher_conf code_from_text
  wait_until $AUTH_ID $AUTH_TOKEN);

our $AUTH_ID = 'MATESTTESTTESTTEST01';
our $AUTH_TOKEN = 'test-auth-token-0123456789';
my $standin_script = dirname(__FILE__) . '/../plivo_standin.py';
my @standins;

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
		"shared_preload_libraries = 'plivo_otp'\nplivo_otp.database = 'postgres'\nplivo_otp.code_length = 4\n"
		  # The tests look for codes and numbers in the log: keep the
		  # framework's log_statement = all from putting them there.
		  . "log_statement = none\n")
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

# Start the local Plivo; %opts: args => [extra command-line arguments].
sub start_standin
{
	my (%opts) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $token_file = "$dir/token";
	open my $fh, '>', $token_file or die "$token_file: $!";
	print $fh $AUTH_TOKEN;
	close $fh;
	chmod 0600, $token_file;
	my $port_file = "$dir/port";
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open STDOUT, '>', "$dir/standin.log";
		open STDERR, '>&', \*STDOUT;
		exec('python3', $standin_script, '--port', '0', '--port-file', $port_file,
			'--auth-id', $AUTH_ID, '--auth-token-file', $token_file,
			@{ $opts{args} // [] })
		  or die "exec: $!";
	}
	for (1 .. 200)
	{
		last if -s $port_file;
		usleep(50_000);
	}
	die "the Plivo stand-in did not start" unless -s $port_file;
	my $port = PostgreSQL::Test::Utils::slurp_file($port_file);
	chomp $port;
	my $self = bless {
		pid => $pid, port => $port, dir => $dir, token_file => $token_file,
		http => HTTP::Tiny->new(timeout => 30),
		url => "http://127.0.0.1:$port",
	}, 'PlivoOtpTest::Standin';
	push @standins, $self;
	return $self;
}

END
{
	for my $s (@standins)
	{
		kill 'TERM', $s->{pid} if $s->{pid};
	}
}

# postgresql.conf lines pointing a node's dispatcher at the stand-in.
sub dispatcher_conf
{
	my ($standin, %extra) = @_;
	my $conf = "plivo_otp.auth_id = '$AUTH_ID'\n"
	  . "plivo_otp.auth_token_file = '$standin->{token_file}'\n"
	  . "plivo_otp.sender = '14155550000'\n"
	  . "plivo_otp.api_url = '$standin->{url}'\n";
	$conf .= "plivo_otp.$_ = '$extra{$_}'\n" for sort keys %extra;
	return $conf;
}

# The code in an SMS text rendered from the default template.
sub code_from_text
{
	my ($text) = @_;
	return $text =~ /code is (\d+)/ ? $1 : undef;
}

# Poll a sub until it returns true, for at most $secs seconds.
sub wait_until
{
	my ($secs, $check) = @_;
	my $deadline = time + $secs;
	while (time < $deadline)
	{
		return 1 if $check->();
		usleep(50_000);
	}
	return $check->();
}

sub learn_code
{
	my ($node, $vid) = @_;
	return $node->safe_psql('postgres', "SELECT learn_code('$vid')");
}

# Helpers added for the dispatcher tests (006-008).

push @EXPORT, qw(dispatcher_pid dispatcher_stats message_row phone_n);

# The pid of the running dispatcher, or '' when there is none.
sub dispatcher_pid
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'plivo_otp dispatcher'");
}

# plivo_otp.dispatcher_stats as a hash (NULLs read as '').
sub dispatcher_stats
{
	my ($node) = @_;
	my @cols = qw(queue_depth in_flight accepted retried refused expired unknown
	  last_error dispatcher_pid);
	my $out = $node->safe_psql('postgres',
		'SELECT ' . join(', ', map { "coalesce(${_}::text, '')" } @cols)
		  . ' FROM plivo_otp.dispatcher_stats',
		extra_params => [ '-F', "" ]);
	my %h;
	@h{@cols} = split //, $out, -1;
	return \%h;
}

# The latest message of a verification: dispatch_state, tries, http_status,
# last_error, body IS NULL, extract(epoch FROM expires_at), as a hash.
sub message_row
{
	my ($node, $vid) = @_;
	my @cols = qw(dispatch_state tries http_status last_error wiped expires_epoch provider_uuid);
	my $out = $node->safe_psql('postgres',
		"SELECT dispatch_state, tries, coalesce(http_status::text, ''), coalesce(last_error, ''),"
		  . " body IS NULL, extract(epoch FROM expires_at), coalesce(provider_uuid, '')"
		  . " FROM plivo_otp.messages WHERE verification_id = '$vid'"
		  . " ORDER BY created_at DESC LIMIT 1",
		extra_params => [ '-F', "" ]);
	return undef if $out eq '';
	my %h;
	@h{@cols} = split //, $out, -1;
	return \%h;
}

# A distinct test number, +1415555nnnn (caps are per number).
sub phone_n
{
	my ($n) = @_;
	return sprintf('+1415555%04d', $n);
}

package PlivoOtpTest::Standin;

use JSON::PP;

sub _call
{
	my ($self, $method, $path, $body) = @_;
	my $res = $self->{http}->request($method, "$self->{url}/_control/$path",
		$body ? { content => encode_json($body),
			headers => { 'Content-Type' => 'application/json' } } : {});
	die "stand-in $path: $res->{status} $res->{content}" unless $res->{success};
	return decode_json($res->{content});
}

sub behave { my ($self, %rule) = @_; return $self->_call('POST', 'behave', \%rule); }
sub reset { my ($self) = @_; return $self->_call('POST', 'reset', {}); }
sub requests { my ($self, $since) = @_; return $self->_call('GET', 'requests?since=' . ($since // 0)); }
sub messages { my ($self) = @_; return $self->_call('GET', 'messages'); }
sub calls { my ($self) = @_; return $self->_call('GET', 'calls'); }
sub stats { my ($self) = @_; return $self->_call('GET', 'stats'); }
sub callback { my ($self, %req) = @_; return $self->_call('POST', 'callback', \%req); }
sub replay { my ($self, $req) = @_; return $self->_call('POST', 'replay', $req); }

# The accepted messages sent to one number (E.164 with or without '+').
sub messages_to
{
	my ($self, $phone) = @_;
	$phone =~ s/^\+//;
	return [ grep { $_->{dst} eq $phone } @{ $self->messages } ];
}

# Every API request (whatever its outcome) whose JSON body was for one number.
sub requests_to
{
	my ($self, $phone) = @_;
	$phone =~ s/^\+//;
	return [ grep { $_->{json} && ($_->{json}{dst} // '') eq $phone } @{ $self->requests } ];
}

1;
