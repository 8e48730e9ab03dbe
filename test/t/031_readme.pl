# 031_readme.pl: the README documents what the extension installs.  Every
# function the extension creates (trigger functions aside) has an API
# reference heading, every view has one, and every plivo_otp.* setting has a
# row in the settings table whose default, range and context are the ones
# pg_settings reports; every state the columns' domains allow is
# drawn in docs/states.dot.  It fails when someone adds a function, view or
# setting without documenting it, or changes a default without the README.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use PlivoOtpTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = "$FindBin::Bin/../..";
my $readme = slurp_file("$root/README.md");
my $dot = slurp_file("$root/docs/states.dot");

my $node = new_node('readme');

# The API reference: one "### " heading per function, naming it as name(.
my @headings = grep { /^#{3,4} / } split /\n/, $readme;
my $functions = $node->safe_psql('postgres', q{
	SELECT DISTINCT p.proname FROM pg_proc p
	JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
	JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'plivo_otp'
	WHERE p.prorettype <> 'trigger'::regtype ORDER BY 1});
my @functions = split /\n/, $functions;
cmp_ok(scalar @functions, '>=', 10, 'the extension has its functions (' . scalar(@functions) . ')');
for my $f (@functions)
{
	ok((grep { /\Q$f\E\(/ } @headings), "README has an API heading for function $f()");
}

my $views = $node->safe_psql('postgres', q{
	SELECT c.relnamespace::regnamespace || '.' || c.relname FROM pg_class c
	JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
	JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'plivo_otp'
	WHERE c.relkind IN ('v', 'm') ORDER BY 1});
for my $v (split /\n/, $views)
{
	(my $bare = $v) =~ s/^plivo_otp\.//;
	ok((grep { /\b\Q$bare\E\b/ && /view/ } @headings), "README has a heading for view $v");
}

# The settings table: | `plivo_otp.x` | default | range | context | meaning |
my %row;
for my $line (split /\n/, $readme)
{
	next unless $line =~ /^\| `(plivo_otp\.[a-z_]+)` \|/;
	my @cells = map { s/^\s+|\s+$//gr } split /\|/, $line;
	shift @cells;	# before the first |
	$row{$1} = { default => $cells[1], range => $cells[2], context => $cells[3] };
}
my $settings = $node->safe_psql('postgres', q{
	SELECT name, vartype, coalesce(unit, ''), coalesce(min_val, ''), coalesce(max_val, ''),
		   context, boot_val
	FROM pg_settings WHERE name LIKE 'plivo_otp.%' ORDER BY name});
my @settings = split /\n/, $settings;
cmp_ok(scalar @settings, '>=', 30, 'the extension has its settings (' . scalar(@settings) . ')');
for my $s (@settings)
{
	my ($name, $type, $unit, $min, $max, $context, $boot) = split /\|/, $s, 7;
	$boot //= '';
	my $r = $row{$name};
	ok($r, "README's settings table has $name") or next;
	is($r->{context}, $context, "$name: context");

	my $range = ($type eq 'integer' || $type eq 'real')
	  ? "$min–$max" . ($unit ne '' ? " $unit" : '') : '—';
	is($r->{range}, $range, "$name: range");

	# The default: "empty", or the value in the first backticks; an integer
	# with a unit may be written with PostgreSQL's units (10min, 7d, 5s).
	my $doc;
	if ($r->{default} =~ /^empty\b/)
	{
		$doc = '';
	}
	elsif ($r->{default} =~ /`([^`]*)`/)
	{
		$doc = $1;
	}
	else
	{
		fail("$name: the default is `value` or empty: $r->{default}");
		next;
	}
	if ($type eq 'integer' && $unit ne '' && $doc =~ /[a-z]/)
	{
		my $factor = $unit eq 'ms' ? 1000 : 1;
		$doc = $node->safe_psql('postgres',
			"SELECT (extract(epoch FROM interval '$doc') * $factor)::bigint");
	}
	is($doc, $boot, "$name: default");
}
for my $name (sort keys %row)
{
	ok((grep { (split /\|/)[0] eq $name } @settings), "README's setting $name exists");
}

# docs/states.dot draws every state the columns' domains allow.
for my $col ([ 'verifications', 'state' ], [ 'messages', 'dispatch_state' ])
{
	my ($table, $column) = @$col;
	my $def = $node->safe_psql('postgres', qq{
		SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
		JOIN pg_attribute a ON a.atttypid = c.contypid
		WHERE a.attrelid = 'plivo_otp.$table'::regclass AND c.contype = 'c' AND a.attname = '$column'});
	my @words = $def =~ /'([a-z_]+)'::text/g;
	cmp_ok(scalar @words, '>=', 5, "$table.$column allows its states");
	for my $w (@words)
	{
		like($dot, qr/label="\Q$w\E[\\"]/, "docs/states.dot draws $table.$column '$w'");
	}
}
# Every internal link of the README names a heading (GitHub's anchors: lower
# case, punctuation dropped, spaces as dashes, -1 for a repeated heading),
# and every relative file link a file.
my (%anchor, %seen);
my $in_code = 0;
for my $line (split /\n/, $readme)
{
	$in_code = !$in_code if $line =~ /^```/;
	next if $in_code || $line !~ /^#{1,6} (.*)$/;
	(my $slug = lc $1) =~ s/[^a-z0-9 _-]//g;
	$slug =~ s/ /-/g;
	my $n = $seen{$slug}++;
	$anchor{ $n ? "$slug-$n" : $slug } = 1;
}
my @links = $readme =~ /\]\(#([^)]+)\)/g;
cmp_ok(scalar @links, '>=', 20, 'README links its sections (' . scalar(@links) . ' links)');
ok($anchor{$_}, "README's link #$_ names a heading") for @links;
for my $file ($readme =~ /\]\(([^#)][^)]*)\)/g)
{
	next if $file =~ m{^[a-z]+://};
	ok(-e "$root/$file", "README's link $file names a file");
}

ok(-s "$root/docs/states.png", 'docs/states.png is committed');
like($readme, qr{\(docs/states\.png\)}, 'README shows docs/states.png');

$node->stop;
done_testing();
