# 031_events.pl: NOTIFY plivo_otp_events, seen by a separate session that
# LISTENs (test/listen_events.py, psycopg): events arrive for a message
# accepted, delivered and failed, and for a code approved, locked, expired
# (the dispatcher marks a code past its expiry 'expired') and canceled; none
# for a send or a verify that rolled back, nor with plivo_otp.events off;
# every payload holds ids and state words only, never a number or a code.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;

my $plivo = start_standin(args => [ '--auto-callbacks', 'queued,sent,delivered' ]);
my ($node, $port) = listener_node('events', $plivo);

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $dir = PostgreSQL::Test::Utils::tempdir();
my $events_file = "$dir/events";
my $conninfo = sprintf('host=%s port=%d dbname=postgres', $node->host, $node->port);
my $listener = fork();
die "fork: $!" unless defined $listener;
if ($listener == 0)
{
	exec('/usr/bin/python3', "$FindBin::Bin/../listen_events.py", $conninfo, $events_file)
	  or die "exec: $!";
}
END { kill 'TERM', $listener if $listener; }
ok(wait_until(10, sub { -s $events_file }), 'a session LISTENs on plivo_otp_events');

# Every payload received so far, decoded.
sub events
{
	# Only whole lines: the listener may be writing the last one as it is read.
	my $text = slurp_file($events_file);
	$text =~ s/[^\n]*\z//;
	my @lines = grep { $_ ne 'listening' } split /\n/, $text;
	return [ map { decode_json($_) } @lines ];
}

# The event names for verification $vid, in the order received.
sub events_of
{
	my ($vid) = @_;
	return join ',', map { $_->{event} } grep { $_->{verification_id} eq $vid } @{ events() };
}

sub wait_events
{
	my ($vid, $want) = @_;
	wait_until(10, sub { events_of($vid) eq $want });
	return events_of($vid);
}

# A code sent, accepted and delivered, then approved.
my $p1 = phone_n(1);
my $v1 = sql("SELECT plivo_otp.otp_send('$p1')");
is(wait_events($v1, 'message_accepted,message_delivered'), 'message_accepted,message_delivered',
	'a delivered SMS: message_accepted, then message_delivered');
my $code1 = learn_code($node, $v1);
my ($accepted) = grep { $_->{verification_id} eq $v1 } @{ events() };
is_deeply([ sort keys %$accepted ], [qw(channel event message_id state verification_id)],
	'a message event has verification_id, message_id, event, state, channel');
is($accepted->{message_id}, sql("SELECT id FROM plivo_otp.messages WHERE verification_id = '$v1'"),
	'message_id is the message\'s');
is("$accepted->{state}|$accepted->{channel}", 'accepted|sms', 'state and channel');

# A verify that rolls back sends nothing; the committed one sends code_approved.
is(sql("BEGIN; SELECT plivo_otp.otp_verify('$p1', '$code1'); ROLLBACK;"), 't',
	'a right code, in a transaction that rolls back');
is(sql("SELECT plivo_otp.otp_verify('$p1', '$code1')"), 't', 'the right code, committed');
is(wait_events($v1, 'message_accepted,message_delivered,code_approved'),
	'message_accepted,message_delivered,code_approved', 'code_approved, once: none for the rolled-back verify');
my ($approved) = grep { $_->{event} eq 'code_approved' } @{ events() };
is_deeply([ sort keys %$approved ], [qw(channel event state verification_id)],
	'a code event has no message_id');
is($approved->{state}, 'approved', 'its state');

# A send that rolls back: no event ever names it.
my $p2 = phone_n(2);
my $v2 = sql("BEGIN; SELECT plivo_otp.otp_send('$p2'); ROLLBACK;");
like($v2, qr/^[0-9a-f-]{36}$/, 'a send in a transaction that rolls back');

# A code for the lock-out below.
my $p3 = phone_n(3);
my $v3 = sql("SELECT plivo_otp.otp_send('$p3')");
wait_events($v3, 'message_accepted,message_delivered');

# Locked: wrong codes up to max_attempts.
my $code3 = learn_code($node, $v3);
my $wrong = $code3 eq '0000' ? '1111' : '0000';
sql("SELECT plivo_otp.otp_check('$p3', '$wrong')") for 1 .. 5;
is(wait_events($v3, 'message_accepted,message_delivered,code_locked'),
	'message_accepted,message_delivered,code_locked', 'five wrong codes: code_locked');
my ($locked) = grep { $_->{event} eq 'code_locked' } @{ events() };
is($locked->{state}, 'max_attempts', 'its state is max_attempts');

# Expired: the dispatcher marks a code past its expiry.
my $p4 = phone_n(4);
my $v4 = sql("SELECT plivo_otp.otp_send('$p4')");
wait_events($v4, 'message_accepted,message_delivered');
sql("UPDATE plivo_otp.verifications SET expires_at = now() - interval '1 second' WHERE id = '$v4'");
is(wait_events($v4, 'message_accepted,message_delivered,code_expired'),
	'message_accepted,message_delivered,code_expired', 'a code past its expiry: code_expired');
is(sql("SELECT state FROM plivo_otp.verifications WHERE id = '$v4'"), 'expired',
	'the dispatcher marked it expired in the table');
is(sql("SELECT state FROM plivo_otp.otp_status('$v4')"), 'expired', 'otp_status reads it as expired');
is(sql("SELECT plivo_otp.otp_check('$p4', '0000')"), 'expired', 'otp_check answers expired');
my ($ok, $out, $err) = $node->psql('postgres', "SELECT plivo_otp.otp_resend('$v4')");
like($err, qr/code not re-delivered: the code expired/, 'otp_resend refuses it as expired');
my $v4b = sql("SET plivo_otp.resend_interval = 0; SELECT plivo_otp.otp_send('$p4')");
isnt($v4b, $v4, 'a new send to the number issues a new code');
is(sql("SELECT state FROM plivo_otp.verifications WHERE id = '$v4'"), 'expired', 'the old one stays expired');

# A delivery failure reported by Plivo (a later final status, with a higher
# Sequence, replaces delivered): message_failed with Plivo's word.
my $p5 = phone_n(5);
my $v5 = sql("SELECT plivo_otp.otp_send('$p5')");
wait_events($v5, 'message_accepted,message_delivered');
my $uuid5 = sql("SELECT provider_uuid FROM plivo_otp.messages WHERE verification_id = '$v5'");
$plivo->callback(message_uuid => $uuid5, status => 'undelivered', error_code => '80');
is(wait_events($v5, 'message_accepted,message_delivered,message_failed'),
	'message_accepted,message_delivered,message_failed', 'an undelivered SMS: message_failed');
my ($failed) = grep { $_->{event} eq 'message_failed' } @{ events() };
is($failed->{state}, 'undelivered', 'its state is Plivo\'s word');

# Plivo refuses a message (400), or answers ambiguously (500): message_refused,
# message_unknown.
$plivo->behave(mode => '400', count => 1);
my $v9 = sql("SELECT plivo_otp.otp_send('" . phone_n(9) . "')");
is(wait_events($v9, 'message_refused'), 'message_refused', 'a 400 from Plivo: message_refused');
$plivo->behave(mode => '500', count => 1);
my $v10 = sql("SELECT plivo_otp.otp_send('" . phone_n(10) . "')");
is(wait_events($v10, 'message_unknown'), 'message_unknown', 'a 500 from Plivo: message_unknown');

# A message that could not go before its code expired (Plivo down): message_expired.
$plivo->behave(mode => '503');
my $v11 = sql("SELECT plivo_otp.otp_send('" . phone_n(11) . "')");
sql("UPDATE plivo_otp.verifications SET expires_at = now() + interval '2 seconds' WHERE id = '$v11'");
is(wait_events($v11, 'message_expired,code_expired'), 'message_expired,code_expired',
	'a message still queued when its code expires: message_expired, then code_expired');
$plivo->reset;

# Canceled, with plivo_otp.events off for one session (nothing), then on.
my $v7 = sql("SELECT plivo_otp.otp_send('" . phone_n(7) . "')");
wait_events($v7, 'message_accepted,message_delivered');
my $v8 = sql("SELECT plivo_otp.otp_send('" . phone_n(8) . "')");
wait_events($v8, 'message_accepted,message_delivered');
is(sql("SET plivo_otp.events = off; SELECT plivo_otp.otp_cancel('$v7')"), 't', 'a cancel with plivo_otp.events off');
is(sql("SELECT plivo_otp.otp_cancel('$v8')"), 't', 'a cancel with it on');
is(wait_events($v8, 'message_accepted,message_delivered,code_canceled'),
	'message_accepted,message_delivered,code_canceled', 'code_canceled');
is(events_of($v7), 'message_accepted,message_delivered', 'none with plivo_otp.events off');
is(events_of($v2), '', 'no event for the send that rolled back');

# No payload holds anything but ids and state words.
my @all = @{ events() };
my @bad = grep {
	my $e = $_;
	grep({ !/^(verification_id|message_id|event|state|channel)$/ } keys %$e)
	  || $e->{verification_id} !~ /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
	  || (exists $e->{message_id} && $e->{message_id} !~ /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
	  || grep({ ($e->{$_} // '') !~ /^[a-z_-]+$/ } qw(event state channel))
} @all;
cmp_ok(scalar @all, '>=', 20, scalar(@all) . ' events received');
is(scalar @bad, 0, 'every payload holds only ids and state words (no number, no code)');
my $raw = slurp_file($events_file);
unlike($raw, qr/415555/, 'no phone number digits in any payload');
my @errors = grep { /ERROR|terminated by signal/ && !/code not re-delivered: the code expired/ }
  split /\n/, slurp_file($node->logfile);
is(join("\n", @errors), '', 'no other error, no crash');

kill 'TERM', $listener;
waitpid($listener, 0);
$listener = 0;
$node->stop;
done_testing();
