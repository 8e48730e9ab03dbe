# 029_bench_target.pl: the benchmark's fast Plivo target (test/bench/fast_plivo.c)
# answers the way the Python stand-in does (statuses, JSON fields, one UUID per
# destination, unique UUIDs), the dispatcher's parser takes its answers, it
# records each request's arrival time and destination, and --delay-ms holds an
# answer back without holding up the others.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use MIME::Base64;
use IO::Socket::INET;
use Time::HiRes qw(time usleep);

my $dir = PostgreSQL::Test::Utils::tempdir();
my $bin = "$dir/fast_plivo";
my $src = "$FindBin::Bin/../bench/fast_plivo.c";
system('gcc', '-O2', '-Wall', '-Wextra', '-Wno-unused-parameter', '-Werror', '-o', $bin, $src,
	'-lmicrohttpd', '-lpthread') == 0
  or BAIL_OUT("fast_plivo.c does not build without warnings");
pass('fast_plivo.c builds without warnings');

my $standin = start_standin();
my @pids;

# Start fast_plivo with the stand-in's credentials; returns its port.
sub start_fast
{
	my (@args) = @_;
	my $port_file = "$dir/port." . scalar(@pids);
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open STDOUT, '>', "$port_file.log";
		open STDERR, '>&', \*STDOUT;
		exec($bin, '--port', '0', '--port-file', $port_file, '--auth-id', $AUTH_ID,
			'--auth-token-file', $standin->{token_file}, @args)
		  or die "exec: $!";
	}
	push @pids, $pid;
	wait_until(10, sub { -s $port_file }) or die "fast_plivo did not start";
	my $port = PostgreSQL::Test::Utils::slurp_file($port_file);
	chomp $port;
	return $port;
}
END { kill 'TERM', @pids if @pids; }

my $fast = start_fast();
my $auth = 'Basic ' . encode_base64("$AUTH_ID:$PlivoOtpTest::AUTH_TOKEN", '');
my $json = 'application/json';
my @cases = (
	[ 'one message', "/v1/Account/$AUTH_ID/Message/", $auth, $json,
		'{"src": "14155550000", "dst": "14155550101", "text": "Your code is 1234.", "type": "sms"}' ],
	[ 'a message to two numbers', "/v1/Account/$AUTH_ID/Message/", $auth, $json,
		'{"src": "14155550000", "dst": "14155550102<14155550103", "text": "hi"}' ],
	[ 'a call', "/v1/Account/$AUTH_ID/Call/", $auth, $json,
		'{"from": "14155550000", "to": "14155550104", "answer_url": "http://127.0.0.1:1/a"}' ],
	[ 'a wrong token', "/v1/Account/$AUTH_ID/Message/", 'Basic ' . encode_base64("$AUTH_ID:nope", ''), $json,
		'{"src": "14155550000", "dst": "14155550105", "text": "hi"}' ],
	[ 'a form body', "/v1/Account/$AUTH_ID/Message/", $auth, 'application/x-www-form-urlencoded',
		'src=14155550000&dst=14155550106&text=hi' ],
	[ 'another account', "/v1/Account/MAOTHER/Message/", $auth, $json,
		'{"src": "14155550000", "dst": "14155550107", "text": "hi"}' ],
	[ 'an unknown path', "/v1/Account/$AUTH_ID/Number/", $auth, $json, '{}' ],
);

# Status, sorted top-level keys and the number of UUIDs of one answer.
sub shape
{
	my ($port, $case) = @_;
	my (undef, $path, $authz, $ctype, $body) = @$case;
	my $res = PlivoOtpTest::http_request($port, 'POST', $path,
		headers => { Authorization => $authz, 'Content-Type' => $ctype }, body => $body);
	my $doc = eval { decode_json($res->{body}) } // {};
	my $uuids = ref $doc->{message_uuid} eq 'ARRAY' ? $doc->{message_uuid} : [ $doc->{request_uuid} // () ];
	return ($res->{status} // 'none', join(',', sort keys %$doc), $uuids, $doc);
}

my %seen;
for my $case (@cases)
{
	my ($s_status, $s_keys, $s_uuids, $s_doc) = shape($standin->{port}, $case);
	my ($f_status, $f_keys, $f_uuids, $f_doc) = shape($fast, $case);
	is("$f_status $f_keys", "$s_status $s_keys", "$case->[0]: the same status and fields as the stand-in");
	is(scalar @$f_uuids, scalar @$s_uuids, "$case->[0]: as many UUIDs");
	is($f_doc->{message}, $s_doc->{message}, "$case->[0]: the same message text");
	$seen{$_}++ for @$f_uuids, $f_doc->{api_id} // ();
}
ok(keys %seen >= 6 && !grep({ $_ > 1 } values %seen), 'every UUID and api_id given is unique');

my $stats = decode_json(HTTP::Tiny->new->get("http://127.0.0.1:$fast/_stats")->{content});
is("$stats->{messages} $stats->{calls}", '3 1', '/_stats counts three messages and one call');
my $records = HTTP::Tiny->new->get("http://127.0.0.1:$fast/_records")->{content};
my @rec = map { [split] } split /\n/, $records;
is(join(' ', map { "$_->[1]:$_->[2]" } @rec), 'm:14155550101 m:14155550102 m:14155550103 c:14155550104',
	'/_records: the destination and kind of each accepted request');
ok(abs($rec[0][0] / 1e6 - time) < 60, 'arrival times are CLOCK_REALTIME microseconds');

# The dispatcher takes its answers: a code is sent and its UUID recorded.
my $node = new_node('bench_target',
	conf => dispatcher_conf({ token_file => $standin->{token_file}, url => "http://127.0.0.1:$fast" },
		max_requests_per_second => 100));
$node->safe_psql('postgres', "SELECT plivo_otp.otp_send('+15005550190')");
ok(wait_until(latency_bound(10), sub {
	$node->safe_psql('postgres', "SELECT dispatch_state || ' ' || (provider_uuid ~ '^[0-9a-f-]{36}\$')
		FROM plivo_otp.messages WHERE phone = '+15005550190'") eq 'accepted true' }),
	'the dispatcher records the message as accepted with fast_plivo\'s UUID');
$records = HTTP::Tiny->new->get("http://127.0.0.1:$fast/_records")->{content};
like($records, qr/^\d+ m 15005550190$/m, 'the dispatcher\'s request is recorded with its dst');
$node->stop;

# --delay-ms 300: each answer waits, two at once are not serialized.
my $slow = start_fast('--delay-ms', '300');
my @socks;
my $t0 = time;
for my $n (1 .. 2)
{
	my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $slow, Proto => 'tcp')
	  or die "connect: $!";
	my $body = qq({"src": "1", "dst": "1415555020$n", "text": "x"});
	syswrite($sock, "POST /v1/Account/$AUTH_ID/Message/ HTTP/1.1\r\nHost: x\r\nAuthorization: $auth\r\n"
		  . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body");
	push @socks, $sock;
}
my @statuses = map { PlivoOtpTest::read_response($_, 5)->{status} // 'none' } @socks;
my $took = time - $t0;
is("@statuses", '202 202', 'both delayed requests are answered 202');
ok($took >= 0.29 && $took < 0.29 + latency_bound(0.25), sprintf('answered after the delay, together (%.3f s)', $took));

done_testing();
