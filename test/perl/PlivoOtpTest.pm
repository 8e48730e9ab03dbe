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

# A latency bound of $secs for a plain build, scaled for an instrumented one
# (test/run.sh's sanitize suite sets PLIVO_OTP_TEST_SLOWDOWN).
push @EXPORT, qw(latency_bound);
sub latency_bound
{
	my ($secs) = @_;
	return $secs * ($ENV{PLIVO_OTP_TEST_SLOWDOWN} || 1);
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

push @EXPORT, qw(dispatcher_pid dispatcher_stats message_row phone_n reload_dispatcher);

# Append settings to a node's postgresql.conf, reload, and wait until the
# dispatcher has read them.
sub reload_dispatcher
{
	my ($node, $conf) = @_;
	my $offset = -s $node->logfile;
	$node->append_conf('postgresql.conf', $conf);
	$node->reload;
	$node->wait_for_log(qr/plivo_otp dispatcher sends to/, $offset);
}

# The pid of the running dispatcher, or '' when there is none.
sub dispatcher_pid
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'plivo_otp dispatcher'");
}

# plivo_otp.dispatcher_stats as a hash (NULLs read as ''; oldest_due_age in
# seconds).
sub dispatcher_stats
{
	my ($node) = @_;
	my @cols = qw(queue_depth in_flight accepted retried refused expired unknown
	  last_error dispatcher_pid);
	my $out = $node->safe_psql('postgres',
		'SELECT ' . join(', ', map { "coalesce(${_}::text, '')" } @cols)
		  . ", coalesce(extract(epoch FROM oldest_due_age)::text, '')"
		  . ' FROM plivo_otp.dispatcher_stats',
		extra_params => [ '-F', "\x1f" ]);
	my %h;
	@h{ @cols, 'oldest_due_age' } = split /\x1f/, $out, -1;
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
		extra_params => [ '-F', "\x1f" ]);
	return undef if $out eq '';
	my %h;
	@h{@cols} = split /\x1f/, $out, -1;
	return \%h;
}

# A distinct test number, +1415555nnnn (caps are per number).
sub phone_n
{
	my ($n) = @_;
	return sprintf('+1415555%04d', $n);
}

# Helpers added for the listener tests (010-012): a node with the webhook
# listener on a free port, raw HTTP to it, and Plivo's signatures computed
# here (so tests can craft headers the stand-in never sends).

use Digest::SHA qw(hmac_sha256_base64);
use IO::Select;
use IO::Socket::INET;

push @EXPORT, qw(listener_node listener_pid listener_up read_response http_send
  http_request sign_v2 sign_v3 form_encode new_nonce signed_request signed_callback
  callback_count);

# A started node with the extension whose listener is on a free port; its
# callbacks are checked against public_url (default: the listener's own
# address).  Returns ($node, $port).  %opts: public_url, conf (extra
# lines), init (options for init, e.g. allows_streaming => 1).
sub listener_node
{
	my ($name, $standin, %opts) = @_;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $public = $opts{public_url} // "http://127.0.0.1:$port";
	my $node = new_node($name, init => $opts{init} // {},
		conf => dispatcher_conf($standin, public_url => $public)
		  . "plivo_otp.listen_port = $port\n"
		  . ($opts{conf} // ''));
	die "the listener of $name does not accept connections on port $port"
	  unless listener_up($port, 10);
	return ($node, $port);
}

# The pid of the running listener, or '' when there is none.
sub listener_pid
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'plivo_otp listener'");
}

# True once 127.0.0.1:$port accepts TCP connections (waits at most $secs).
sub listener_up
{
	my ($port, $secs) = @_;
	return wait_until($secs // 0, sub {
		my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
			Proto => 'tcp', Timeout => 1);
		return 0 unless $s;
		close $s;
		return 1;
	});
}

# Read one HTTP response from $sock within $timeout seconds: a hash with
# status (undef if the server closed or said nothing), headers (lower-case
# names), body, and error when there was no complete response.  Bytes read
# past the response (pipelined answers) are kept for the next call.
sub read_response
{
	my ($sock, $timeout) = @_;
	my $deadline = Time::HiRes::time() + ($timeout // 10);
	my $sel = IO::Select->new($sock);
	my $buf = delete ${*$sock}{plivo_otp_unread} // '';
	my ($status, %headers, $need);
	while (1)
	{
		if (!defined $status && $buf =~ /\r\n\r\n/)
		{
			my ($head) = split /\r\n\r\n/, $buf, 2;
			my @lines = split /\r\n/, $head;
			(shift @lines) =~ m{^HTTP/\d\.\d (\d{3})} or return { error => "bad status line: $buf" };
			$status = $1;
			for (@lines)
			{
				$headers{ lc $1 } = $2 if /^([^:]+):\s*(.*?)\s*$/;
			}
			$buf = substr($buf, length($head) + 4);
			$need = $headers{'content-length'};
		}
		if (defined $status && defined $need && length($buf) >= $need)
		{
			${*$sock}{plivo_otp_unread} = substr($buf, $need);
			return { status => $status, headers => \%headers, body => substr($buf, 0, $need) };
		}
		my $left = $deadline - Time::HiRes::time();
		return { status => $status, headers => \%headers, body => $buf,
			error => defined $status ? 'timeout reading the body' : 'timeout' }
		  if $left <= 0 || !$sel->can_read($left);
		my $n = sysread($sock, $buf, 65536, length $buf);
		if (!$n)
		{
			my $why = defined $n ? 'closed' : "read: $!";
			return { status => $status, headers => \%headers, body => $buf }
			  if defined $status && !defined $need;
			return { status => $status, headers => \%headers, body => $buf, error => $why };
		}
	}
}

# Send raw bytes to 127.0.0.1:$port on a new connection and read the answer.
sub http_send
{
	my ($port, $raw, $timeout) = @_;
	my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
		Proto => 'tcp', Timeout => 5)
	  or return { error => "connect: $!" };
	$sock->autoflush(1);
	local $SIG{PIPE} = 'IGNORE';
	syswrite($sock, $raw) // return { error => "write: $!" };
	my $res = read_response($sock, $timeout);
	close $sock;
	return $res;
}

# One HTTP/1.1 request on its own connection.  %o: headers => {...},
# body => bytes (a Content-Length is added), timeout.
sub http_request
{
	my ($port, $method, $target, %o) = @_;
	my $raw = "$method $target HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nConnection: close\r\n";
	my %h = %{ $o{headers} // {} };
	$h{'Content-Length'} = length $o{body} if defined $o{body} && !exists $h{'Content-Length'};
	$raw .= "$_: $h{$_}\r\n" for sort keys %h;
	$raw .= "\r\n" . ($o{body} // '');
	return http_send($port, $raw, $o{timeout});
}

sub _pct
{
	my ($s) = @_;
	utf8::encode($s) if utf8::is_utf8($s);
	$s =~ s/([^A-Za-z0-9_.~-])/sprintf('%%%02X', ord $1)/ge;
	return $s;
}

# application/x-www-form-urlencoded from a list of (key, value) pairs.
sub form_encode
{
	my @kv = @_;
	my @out;
	push @out, _pct(shift @kv) . '=' . _pct(shift @kv) while @kv;
	return join '&', @out;
}

sub _b64_padded
{
	my $s = shift;
	return $s . '=' x ((4 - length($s) % 4) % 4);
}

# X-Plivo-Signature-V2: base64 HMAC-SHA256 of the URL (no query) and nonce.
sub sign_v2
{
	my ($url, $nonce, $token) = @_;
	$url =~ s/[?#].*//s;
	return _b64_padded(hmac_sha256_base64($url . $nonce, $token // $AUTH_TOKEN));
}

# X-Plivo-Signature-V3 of a request to $url (no query) with the decoded
# parameters @$pairs ([key, value] each), as plivo-api.md section 3.3.
sub sign_v3
{
	my ($method, $url, $pairs, $nonce, $token) = @_;
	my @p = sort { $a->[0] cmp $b->[0] || $a->[1] cmp $b->[1] } @$pairs;
	my $msg = $url;
	if (@p)
	{
		$msg .= uc($method) eq 'GET'
		  ? '?' . join('&', map { "$_->[0]=$_->[1]" } @p)
		  : '?' . join('', map { $_->[0] . $_->[1] } @p);
	}
	return _b64_padded(hmac_sha256_base64("$msg.$nonce", $token // $AUTH_TOKEN));
}

# A fresh 20-digit nonce, as Plivo's.
sub new_nonce
{
	return join '', map { int rand 10 } 1 .. 20;
}

# The raw bytes of a message-status callback signed here, and what went in
# it.  %o: uuid, status, sequence, error_code, params => [extra k, v],
# method (POST), url (the signed URL; default the listener's own address),
# path (/plivo/sms-status), v3 => 0 to leave V3 out, v3_header (another
# name for it, e.g. X-Plivo-Signature-Ma-V3), v3_token (sign V3 with another
# token), v2 => 1 to add V2 (v2_nonce), token, nonce, headers => {extra},
# keep_alive => 1, fields => [k, v, ...] (all the parameters, instead of
# a message-status callback's: a call's answer fetch or hang-up callback).
sub signed_request
{
	my ($port, %o) = @_;
	my $method = $o{method} // 'POST';
	my $path = $o{path} // '/plivo/sms-status';
	my $url = $o{url} // "http://127.0.0.1:$port$path";
	my @kv = $o{fields} ? @{ $o{fields} } : (MessageUUID => $o{uuid},
		Status => $o{status} // 'delivered',
		Sequence => $o{sequence} // 1, ErrorCode => $o{error_code} // '000',
		To => '14155550199', From => '14155550000', Units => '1',
		MessageTime => '2024-01-01 12:00:00.000000', @{ $o{params} // [] });
	my @pairs;
	push @pairs, [ splice(@kv, 0, 2) ] while @kv;
	my $nonce = $o{nonce} // new_nonce();
	my %h = %{ $o{headers} // {} };
	unless (defined $o{v3} && !$o{v3})
	{
		$h{ $o{v3_header} // 'X-Plivo-Signature-V3' } //=
		  sign_v3($method, $url, \@pairs, $nonce, $o{v3_token} // $o{token});
		$h{'X-Plivo-Signature-V3-Nonce'} //= $nonce;
	}
	if ($o{v2})
	{
		my $n2 = $o{v2_nonce} // new_nonce();
		$h{'X-Plivo-Signature-V2'} //= sign_v2($url, $n2, $o{token});
		$h{'X-Plivo-Signature-V2-Nonce'} //= $n2;
	}
	my $form = form_encode(map { @$_ } @pairs);
	my $target = $method eq 'GET' ? "$path?$form" : $path;
	my $raw = "$method $target HTTP/1.1\r\nHost: 127.0.0.1:$port\r\n"
	  . ($o{keep_alive} ? '' : "Connection: close\r\n");
	if ($method ne 'GET')
	{
		$raw .= "Content-Type: application/x-www-form-urlencoded\r\n"
		  . 'Content-Length: ' . length($form) . "\r\n";
	}
	$raw .= "$_: $h{$_}\r\n" for sort keys %h;
	$raw .= "\r\n" . ($method ne 'GET' ? $form : '');
	return { raw => $raw, nonce => $nonce, pairs => \@pairs, headers => \%h };
}

# Send a callback built by signed_request; the response, with the request
# under {request}.
sub signed_callback
{
	my ($port, %o) = @_;
	my $req = signed_request($port, %o);
	my $res = http_send($port, $req->{raw}, $o{timeout});
	$res->{request} = $req;
	return $res;
}

# How many rows plivo_otp.delivery_events (or another table) holds,
# optionally for one provider UUID.
sub callback_count
{
	my ($node, $uuid, $table) = @_;
	$table //= 'delivery_events';
	return $node->safe_psql('postgres', "SELECT count(*) FROM plivo_otp.$table"
		  . (defined $uuid ? " WHERE provider_uuid = '$uuid'" : ''));
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
sub call_fetch { my ($self, %req) = @_; return $self->_call('POST', 'call_fetch', \%req); }
sub call_timing { my ($self, %t) = @_; return $self->_call('POST', 'call_timing', \%t); }

# The accepted calls placed to one number (E.164 with or without '+').
sub calls_to
{
	my ($self, $phone) = @_;
	$phone =~ s/^\+//;
	return [ grep { ($_->{to} // '') eq $phone } @{ $self->calls } ];
}

# Every Make Call request (whatever its outcome) for one number.
sub call_requests_to
{
	my ($self, $phone) = @_;
	$phone =~ s/^\+//;
	return [ grep { $_->{path} =~ m{/Call/$} && $_->{json} && ($_->{json}{to} // '') eq $phone }
		  @{ $self->requests } ];
}

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
