#!/usr/bin/env perl
# Counter in Perl: prints 1..COUNT, one number per line, pausing DELAY seconds.
#
#   websocketd-py --port=8080 examples/counter/count.pl        # 1..10, every 0.5 s
#   websocketd-py --port=8080 examples/counter/count.pl 3 0.1  # 1..3, every 0.1 s
use strict;
use warnings;
use Time::HiRes qw(sleep);   # a sleep() that accepts fractions of a second

my $count = $ARGV[0] // 10;
my $delay = $ARGV[1] // 0.5;

# stdout is a pipe, so Perl would buffer it. $| = 1 turns on "autoflush":
# every print is sent immediately.
$| = 1;

for my $i (1 .. $count) {
    print "$i\n";
    sleep($delay);
}
