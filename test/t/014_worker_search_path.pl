# 014_worker_search_path.pl: the workers run as superuser, so objects that a
# database owner plants in a schema on the database's search_path must never
# run inside them (a planted operator would otherwise run as superuser).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $plivo = start_standin();
my $node = new_node('worker_search_path', conf => dispatcher_conf($plivo));

# An "evil" schema first on the database's search_path, with an operator
# that matches the workers' text and uuid comparisons exactly and records
# every call.
$node->safe_psql('postgres', q{
	CREATE TABLE public.hijacked (who text, at timestamptz DEFAULT now());
	GRANT INSERT ON public.hijacked TO PUBLIC;
	CREATE SCHEMA evil;
	CREATE FUNCTION evil.text_eq(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN INSERT INTO public.hijacked (who) VALUES (current_user); RETURN a OPERATOR(pg_catalog.=) b; END $$;
	CREATE OPERATOR evil.= (FUNCTION = evil.text_eq, LEFTARG = text, RIGHTARG = text);
	CREATE FUNCTION evil.uuid_eq(a uuid, b uuid) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN INSERT INTO public.hijacked (who) VALUES (current_user); RETURN a OPERATOR(pg_catalog.=) b; END $$;
	CREATE OPERATOR evil.= (FUNCTION = evil.uuid_eq, LEFTARG = uuid, RIGHTARG = uuid);
	ALTER DATABASE postgres SET search_path = evil, pg_catalog, public;
});
# The workers pick the database setting up when they (re)connect.
$node->restart;

my $vid = $node->safe_psql('postgres', "SELECT plivo_otp.otp_send('+14155550141')");
ok(wait_until(10, sub {
	$node->safe_psql('postgres', "SELECT dispatch_state FROM plivo_otp.otp_status('$vid')") eq 'accepted' }),
	'the dispatcher sends as usual');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.hijacked'), '0',
	'no planted operator ran inside the workers or the API functions');

# The planted operator does work where the search_path is not pinned.
$node->safe_psql('postgres', "SELECT 'a'::text = 'a'::text");
is($node->safe_psql('postgres', 'SELECT count(*) > 0 FROM public.hijacked'), 't',
	'(the planted operator is live for ordinary sessions, so the check above means something)');

$node->stop;
done_testing();
