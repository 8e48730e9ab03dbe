# 027_templates.pl: the administrator's templates reach Plivo.  An SMS sent
# with locale fr-FR carries the French template's text at the stand-in (and
# one for another locale falls back to the default template); a call speaks
# its template's sentence with the template's <Speak> language and voice;
# everything interpolated into the call's XML is escaped (a template with
# <, & and ", an app name that looks like a placeholder, not expanded
# again); pg_dump keeps the templates and a restore brings them back.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $plivo = start_standin();
my ($node, $port) = listener_node('templates', $plivo,
	conf => "plivo_otp.code_length = 6\nplivo_otp.app_name = 'Acme {code} & \"Co\"'\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{INSERT INTO plivo_otp.templates (purpose, locale, channel, body) VALUES
	('login', 'fr-FR', 'sms', 'Votre code {app} : {code}. Il expire dans {minutes} minutes.'),
	('default', 'default', 'sms', 'Default {code}')});
sql(q{INSERT INTO plivo_otp.templates (locale, channel, body, voice_language, voice_name) VALUES
	('fr', 'voice', 'Votre code <{app}> & "{code}".', 'fr-FR', 'Polly.Celine')});

# ---- SMS: the French template at the stand-in ----
my $fr = phone_n(2701);
my $vid = sql("SELECT plivo_otp.otp_send('$fr', 'sms', 'login', locale => 'fr-FR')");
ok(wait_until(10, sub { @{ $plivo->messages_to($fr) } == 1 }), 'the French SMS reached Plivo');
my $text = $plivo->messages_to($fr)->[0]{text};
like($text, qr/^Votre code Acme \{code\} & "Co" : (\d{6})\. Il expire dans 10 minutes\.$/,
	"the text is the fr-FR login template, {app} rendered once ($text)");
my ($code) = $text =~ /: (\d{6})\./;
is(sql("SELECT plivo_otp.otp_check('$fr', '$code', 'login')"), 'approved', 'its code verifies');
is(sql("SELECT encoding || ':' || segments FROM plivo_otp.otp_messages('$vid')"), 'gsm7:1',
	'otp_messages shows its encoding and segments');

my $de = phone_n(2702);
sql("SELECT plivo_otp.otp_send('$de', 'sms', 'login', locale => 'de-DE')");
ok(wait_until(10, sub { @{ $plivo->messages_to($de) } == 1 }), 'the German SMS reached Plivo');
like($plivo->messages_to($de)->[0]{text}, qr/^Default \d{6}$/, 'with no German template, the default one');

# ---- voice: the template's sentence, language and voice, escaped ----
my $call_phone = phone_n(2703);
$vid = sql("SELECT plivo_otp.otp_send('$call_phone', 'voice', locale => 'fr-FR')");
my $call;
ok(wait_until(15, sub { $call = $plivo->calls_to($call_phone)->[0]; $call && $call->{answer} }),
	'the call was placed and its script fetched');
my $answer = $call->{answer};
is($answer->{status}, 200, 'the script was served');
my ($speak) = @{ $answer->{speak} };
is($speak->{language}, 'fr-FR', "<Speak> has the template's language");
is($speak->{voice}, 'Polly.Celine', "<Speak> has the template's voice");
like($answer->{body},
	qr{<Speak voice="Polly\.Celine" language="fr-FR" loop="2">Votre code &lt;Acme \{code\} &amp; &quot;Co&quot;&gt; &amp; &quot;\d, \d, \d, \d, \d, \d&quot;\.</Speak>},
	'every character XML gives a meaning to is escaped, the app name is not expanded');
my ($digits) = $speak->{text} =~ /"([\d, ]+)"/;
$digits =~ s/\D//g;
is(sql("SELECT plivo_otp.otp_verify('$call_phone', '$digits')"), 't', 'the code the call read verifies');

# A call without a template speaks with the settings.
sql("DELETE FROM plivo_otp.templates WHERE channel = 'voice'");
my $plain = phone_n(2704);
sql("SELECT plivo_otp.otp_send('$plain', 'voice', locale => 'fr-FR')");
ok(wait_until(15, sub { $call = $plivo->calls_to($plain)->[0]; $call && $call->{answer} }),
	'a second call was placed and its script fetched');
($speak) = @{ $call->{answer}{speak} };
is("$speak->{voice} $speak->{language}", 'WOMAN en-US', 'without a voice template: the settings');
like($speak->{text}, qr/^Your verification code is \d, \d, \d, \d, \d, \d\.$/, '... and the settings\' sentence');

# ---- pg_dump keeps the templates ----
my $dump = $node->basedir . '/templates.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ], 'pg_dump');
sql('CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('restored'), $dump ], 'pg_restore');
is($node->safe_psql('restored',
	"SELECT string_agg(purpose || '/' || locale || '/' || channel || '/' || body, ' | ' ORDER BY purpose)"
	  . " FROM plivo_otp.templates"),
	'default/default/sms/Default {code} | login/fr-FR/sms/Votre code {app} : {code}. Il expire dans {minutes} minutes.',
	'the restored database has the templates');

done_testing();
