# test/e2e/dataflow_check.pl -- the --exec command of 60_dataflow.sh (a
# helper, not a test: test/run.sh runs only executable test/e2e/*.sh).
#
#     parflow-agent --exec 'perl test/e2e/dataflow_check.pl EXPECT.json' ...
#
# Reads the task's input JSON on stdin and checks it against what EXPECT.json
# says this stage (PARFLOW_STAGE) of this case (the input's "case") must see:
#
#   {"CASE": {"input":  {the run's input object},
#             "stages": {"STAGE": {"upstream": [dependencies that ran],
#                                  "skipped":  [dependencies that were skipped]}}}}
#
#   - the input holds the run's input keys with their values, "upstream",
#     "skipped" only when a dependency was skipped, and nothing else;
#   - "upstream" holds exactly the listed dependencies, each with the output
#     that stage made in THIS run: {"from": "<its name>", "run": PARFLOW_RUN}
#     (so a stage it does not depend on, or an output of another run, is a
#     mismatch);
#   - "skipped" holds exactly the listed stages, each with a non-empty reason.
#
# Match: prints its own output {"from": STAGE, "run": RUN} and exits 0.
# Mismatch: one line per difference on stderr, exit 1 (the agent fails the
# task with that text; the test sees the run blocked and the difference in
# parflow_failures).  Every input is also saved to $E2E60_INPUTS/RUN.STAGE.json
# when that directory is set.  Core perl only (JSON::PP): no jq needed.
use strict;
use warnings;
use JSON::PP;

my $json = JSON::PP->new->canonical;
my $stage = $ENV{PARFLOW_STAGE} // '';
my $run = $ENV{PARFLOW_RUN} // '';
my @diff;

sub bad { push @diff, "$stage: " . join('', @_); }

sub read_all {
    my ($fh) = @_;
    local $/;
    return scalar <$fh>;
}

my $raw = read_all(\*STDIN);
if (defined $ENV{E2E60_INPUTS} && $ENV{E2E60_INPUTS} ne '' && $run =~ /^\d+$/) {
    if (open my $out, '>', "$ENV{E2E60_INPUTS}/$run.$stage.json") {
        print $out $raw;
        close $out;
    }
}
my $in = eval { decode_json($raw) };
if (!defined $in || ref $in ne 'HASH') {
    print STDERR "$stage: the input is not a JSON object: ", ($@ || $raw), "\n";
    exit 1;
}
open my $efh, '<', $ARGV[0] or do { print STDERR "$stage: cannot read $ARGV[0]: $!\n"; exit 1 };
my $expect = decode_json(read_all($efh));
close $efh;

my $case = $in->{case} // '(none)';
my $ec = $expect->{$case};
if (!$ec) {
    print STDERR "$stage: unknown case \"$case\" in the input: ", $json->encode($in), "\n";
    exit 1;
}
my $es = $ec->{stages}{$stage};
if (!$es) {
    print STDERR "$stage: no expectation for this stage in case \"$case\" (it should not run)\n";
    exit 1;
}
$run =~ /^\d+$/ or bad("PARFLOW_RUN is \"$run\", not a run id");

# The run's input, passed through unchanged; no other top-level key.
my %allowed = (upstream => 1);
$allowed{skipped} = 1 if @{ $es->{skipped} };
for my $k (sort keys %{ $ec->{input} }) {
    $allowed{$k} = 1;
    if (!exists $in->{$k}) {
        bad("the run's input key \"$k\" is missing");
    } elsif ($json->encode([ $in->{$k} ]) ne $json->encode([ $ec->{input}{$k} ])) {
        bad("the run's input key \"$k\" is ", $json->encode([ $in->{$k} ]),
            ", expected ", $json->encode([ $ec->{input}{$k} ]));
    }
}
for my $k (sort keys %$in) {
    bad("unexpected key \"$k\" in the input: ", $json->encode([ $in->{$k} ])) unless $allowed{$k};
}

# upstream: exactly the dependencies that ran, with this run's outputs.
my $up = $in->{upstream};
if (ref $up ne 'HASH') {
    bad("\"upstream\" is not an object: ", $json->encode([$up]));
    $up = {};
}
my %want = map { $_ => 1 } @{ $es->{upstream} };
for my $k (sort keys %$up) {
    bad("upstream has \"$k\", which $stage does not depend on: ", $json->encode($up->{$k}))
        unless $want{$k};
}
for my $k (sort keys %want) {
    if (!exists $up->{$k}) {
        bad("upstream lacks its dependency \"$k\"");
        next;
    }
    my $got = $json->encode($up->{$k});
    my $exp = $json->encode({ from => $k, run => $run + 0 });
    bad("upstream \"$k\" is $got, expected $exp") if $got ne $exp;
}

# skipped: exactly the skipped dependencies, each with a reason.
my %wsk = map { $_ => 1 } @{ $es->{skipped} };
if (!exists $in->{skipped} && %wsk) {
    bad("the input has no \"skipped\"; expected ", join(', ', map { "\"$_\"" } sort keys %wsk), " in it");
} elsif (exists $in->{skipped}) {
    my $sk = $in->{skipped};
    if (ref $sk ne 'HASH') {
        bad("\"skipped\" is not an object: ", $json->encode([$sk]));
        $sk = {};
    }
    for my $k (sort keys %$sk) {
        if (!$wsk{$k}) {
            bad("skipped has \"$k\", which is not a skipped dependency of $stage");
        } elsif (ref $sk->{$k} || !defined $sk->{$k} || $sk->{$k} !~ /\S/) {
            bad("skipped \"$k\" has no reason: ", $json->encode([ $sk->{$k} ]));
        }
    }
    for my $k (sort keys %wsk) {
        bad("skipped lacks its skipped dependency \"$k\"") unless exists $sk->{$k};
    }
}

if (@diff) {
    print STDERR "$_\n" for @diff;
    exit 1;
}
print $json->encode({ from => $stage, run => $run + 0 }), "\n";
exit 0;
